"""Which CPU inference path is fastest for the embedded model, at what cost to its output?

Paths, each a whole edit through `Kontext.run` (text, reference, 16 steps, decoding,
paste-back) at one thread:

- fp32: the default.
- bf16 autocast: the same fp32 model run under `torch.autocast("cpu", torch.bfloat16)`, so
  matrix products run in bf16 (AVX-512 BF16 / AMX where the CPU has them).
- bf16 weights: the model loaded with `dtype="bf16"` (everything in bf16).
- compiled: fp32 with the transformer compiled (`torch.compile`, inductor, default mode); its
  compile time is the first edit's time less the steady edit time.

Cases: one Shapes World edit of every kind (training phrasings, fixed seed), the paths taking
turns within each case after one untimed round; every path at --speed (default quality). Per
path: the median edit time, its ratio to fp32, the PSNR of its outputs against fp32's (mean
over cases; 99 = identical), the mean PSNR against the ground-truth targets, and whether every
output is byte-identical to fp32's.

Usage: OMP_NUM_THREADS=1 python benchmarks/cpu_paths.py [--per-kind 1] [--rounds 3]
           [--no-compile] [--speed quality]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from openkontext.eval.dataset import load_cases
from openkontext.eval.metrics import psnr
from openkontext.pipeline import Kontext, Settings
from openkontext.world.dataset import write_dataset
from openkontext.world.edits import KINDS

SEED = 5101  # the built-in suite's training-phrasing part (openkontext.eval.suite)


def paths(compile_too: bool, speed: str) -> dict[str, Callable]:
    """name -> run(instruction, image) -> (H, W, 3) uint8, each over its own loaded model."""
    fp32 = Kontext.load(threads=1)
    bf16 = Kontext.load(threads=1, dtype="bf16")

    def runner(kontext: Kontext, context=contextlib.nullcontext):
        def run(instruction: str, image: Image.Image) -> np.ndarray:
            with context():
                result = kontext.run(instruction, [image], Settings(seed=0, speed=speed))
            return np.asarray(result.images[0])

        return run

    out = {
        "fp32": runner(fp32),
        "bf16 autocast": runner(fp32, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "bf16 weights": runner(bf16),
    }
    if compile_too:
        compiled = Kontext.load(threads=1)
        compiled.model.flux.compile()
        out["compiled"] = runner(compiled)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-kind", type=int, default=1, help="edit cases of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="timed edits of each case")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument(
        "--speed",
        default="quality",
        choices=("quality", "balanced", "fast"),
        help="the speed setting of every path (default: quality, every block of every step)",
    )
    args = parser.parse_args()
    if args.per_kind < 1 or args.rounds < 1:
        parser.error("--per-kind and --rounds must be at least 1")

    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    runs = paths(not args.no_compile, args.speed)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset(
            Path(tmp), count=args.per_kind * len(KINDS), seed=SEED, categories=KINDS
        )
        cases = [
            (c.turns[0].instruction, Image.fromarray(c.input.load()), c.turns[0].target.load())
            for c in load_cases(path)
        ]

    # 1. The first edit of each path (the compile, for the compiled one), then timed rounds.
    first = {}
    for name, run in runs.items():
        t = time.perf_counter()
        run(*cases[0][:2])
        first[name] = time.perf_counter() - t
    seconds = {name: [] for name in runs}
    outputs = {name: [] for name in runs}
    for instruction, image, _ in cases:
        for r in range(args.rounds):
            for name, run in runs.items():
                t = time.perf_counter()
                out = run(instruction, image)
                seconds[name].append(time.perf_counter() - t)
                if r == 0:
                    outputs[name].append(out)

    # 2. The report.
    print(
        f"torch {torch.__version__}, 1 thread, embedded model, speed {args.speed}, "
        f"{len(cases)} edits x "
        f"{args.rounds}; CPU bf16 support: {torch.backends.mkldnn.is_available()} (oneDNN), "
        f"load average at start {load_before:.1f}"
    )
    base = statistics.median(seconds["fp32"])
    print(
        f"{'path':14}{'edit (s)':>10}{'x fp32':>8}{'first (s)':>11}{'PSNR vs fp32':>14}"
        f"{'PSNR vs truth':>15}{'same bytes':>12}"
    )
    for name in runs:
        median = statistics.median(seconds[name])
        vs_fp32 = [psnr(a, b) for a, b in zip(outputs[name], outputs["fp32"], strict=True)]
        truth = [psnr(a, c[2]) for a, c in zip(outputs[name], cases, strict=True)]
        same = all(
            np.array_equal(a, b) for a, b in zip(outputs[name], outputs["fp32"], strict=True)
        )
        print(
            f"{name:14}{median:10.3f}{median / base:8.2f}{first[name]:11.2f}"
            f"{statistics.fmean(vs_fp32):14.2f}{statistics.fmean(truth):15.2f}"
            f"{'yes' if same else 'no':>12}"
        )
    if "compiled" in runs:
        print(
            f"compile time (first compiled edit less a steady one): "
            f"{first['compiled'] - statistics.median(seconds['compiled']):.1f} s"
        )
    print(
        f"load average at end {os.getloadavg()[0]:.1f}; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
