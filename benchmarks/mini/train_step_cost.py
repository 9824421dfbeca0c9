"""What a transformer training step costs per mini preset, timed side by side in one run: the
default batch (24 edits + 8 generations) of `train mini`, random weights (the cost does not
depend on them), the same batches for every preset.

    .venv/bin/python benchmarks/mini/train_step_cost.py [--presets mini mini-fine] [--steps 5]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from openkontext.model import AutoEncoder, get_preset
from openkontext.train.transformer import FlowTrainConfig, Stepper, step_streams


def seconds_per_step(name: str, steps: int) -> float:
    preset = get_preset(name)
    stepper = Stepper(preset, AutoEncoder(preset.ae), FlowTrainConfig())
    stepper.train_step(*step_streams(0, 0))  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        stepper.train_step(*step_streams(0, step))
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["mini", "mini-fine"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = {name: seconds_per_step(name, args.steps) for name in args.presets}
    first = args.presets[0]
    print(f"training step, {args.threads} thread(s), bf16 autocast "
          f"{'on' if FlowTrainConfig().autocast_bf16 else 'off'}, mean of {args.steps} steps")
    print("| preset | tokens per image | s / step | vs " + first + " |")
    print("|---|---|---|---|")
    for name, t in times.items():
        side = get_preset(name).native_size // get_preset(name).latent_multiple
        print(f"| {name} | {side} x {side} | {t:.2f} | {t / times[first]:.2f}x |")


if __name__ == "__main__":
    main()
