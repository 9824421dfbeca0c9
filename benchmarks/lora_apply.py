"""What wearing a LoRA costs an edit: runtime adapters against the same LoRA fused into the
weights, next to no LoRA, on the embedded model, measured side by side in one run.

A random LoRA of --rank on every linear layer of the transformer's blocks (the widest target a
trainer offers) is applied three ways, the edits taking turns --repeats times so background load
hits them alike: none, runtime (`Kontext.edit(..., loras=...)`, as the CLI and the server do),
fused (`openkontext.model.lora.fuse_` into a copy of the weights once, then plain edits). The
table gives each way's median edit time and its ratio to none, the time fusing took, and how far
the runtime and fused pictures are apart (they differ by float rounding only).

Usage: OMP_NUM_THREADS=1 python benchmarks/lora_apply.py [--rank 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from openkontext import Kontext
from openkontext.loras import LoraLibrary
from openkontext.model.lora import Lora, LoraDelta, fuse_
from openkontext.weights.lora import save_lora_peft
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene


def random_lora(flux: nn.Module, rank: int, seed: int = 0) -> Lora:
    gen, lora = torch.Generator().manual_seed(seed), Lora("random")
    for name, layer in flux.named_modules():
        if isinstance(layer, nn.Linear) and name.startswith(("double_blocks", "single_blocks")):
            down = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features**0.5
            up = 0.5 * torch.randn(layer.out_features, rank, generator=gen) / rank**0.5
            lora.add(name, LoraDelta(down, up))
    return lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.rank <= 256 or args.repeats < 1:
        parser.error("--rank must be 1..256 and --repeats at least 1")

    plain = Kontext.load()
    lora = random_lora(plain.model.flux, args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_lora_peft(lora, Path(tmp) / "random.safetensors")
        runtime = Kontext(plain.model, loras=LoraLibrary())
        start = time.perf_counter()
        fused_flux = copy.deepcopy(plain.model.flux)
        fuse_(fused_flux, lora, 1.0)
        fuse_s = time.perf_counter() - start
        fused = Kontext(replace(plain.model, flux=fused_flux))
        scene = to_pil(render(random_scene(random.Random(1), min_objects=2), 64))
        ways = {
            "none": lambda: plain.edit(scene, "make the circle blue", seed=1, preserve=False),
            "runtime": lambda: runtime.edit(scene, "make the circle blue", seed=1, preserve=False,
                                            loras=[(str(path), 1.0)]),
            "fused": lambda: fused.edit(scene, "make the circle blue", seed=1, preserve=False),
        }
        times: dict[str, list[float]] = {k: [] for k in ways}
        pictures = {}
        for k, run in ways.items():  # warm-up, and the LoRA file read once
            pictures[k] = np.asarray(run().images[0]).astype(np.float64)
        for _ in range(args.repeats):
            for k, run in ways.items():
                t = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t)

    base = statistics.median(times["none"])
    print(f"rank {args.rank} on {len(lora.deltas)} layers, {torch.get_num_threads()} thread(s), "
          f"{args.repeats} repeats; fusing took {fuse_s * 1000:.0f} ms")
    print("| LoRA | edit (median) | vs none |")
    print("|---|---|---|")
    for k in ways:
        m = statistics.median(times[k])
        print(f"| {k} | {m * 1000:.0f} ms | {m / base:.2f}x |")
    gap = np.abs(pictures["runtime"] - pictures["fused"]).max()
    moved = np.abs(pictures["runtime"] - pictures["none"]).mean()
    print(f"runtime vs fused: max pixel difference {gap:.0f}/255; the LoRA moved pixels by "
          f"{moved:.1f}/255 on average")


if __name__ == "__main__":
    main()
