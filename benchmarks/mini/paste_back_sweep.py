"""Choose paste-back's settings by measurement, on fresh edits that are not the suite's.

Runs the model once per edit (paste-back off), then applies paste-back offline with each
(threshold, grow) pair, the input's autoencoder round trip as baseline (what the pipeline does)
and the input itself (what it did up to `mini`'s 5,200-step export), and prints median PSNR to
ground truth and success (>= 25 dB) for each, beside the raw output.

    .venv/bin/python benchmarks/mini/paste_back_sweep.py [--weights DIR] [--cases 240] [--steps 16]
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from openkontext import imaging
from openkontext.eval.metrics import psnr
from openkontext.preserve import paste_back
from openkontext.sampling import round_trip, run_tensors
from openkontext.weights import load_model
from openkontext.world.sampling import edit_batch_from, sample_edit

THRESHOLDS = (24, 32, 48, 64, 96)
GROWS = (0, 1, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args()
    model = load_model(args.weights)
    size = model.preset.native_size
    rng = random.Random(args.seed)
    batch = edit_batch_from([sample_edit(rng) for _ in range(args.cases)], size)
    outputs, trips = [], []
    with torch.no_grad():
        for lo in range(0, args.cases, 48):
            part = slice(lo, lo + 48)
            src = batch.source[part]
            out = run_tensors(model, batch.instructions[part], list(range(lo, lo + len(src))),
                              size, size, args.steps, None, references=[src])
            outputs.extend(imaging.tensor_to_uint8(out))
            trips.extend(imaging.tensor_to_uint8(round_trip(model, src)))
    sources = imaging.tensor_to_uint8(batch.source)
    targets = imaging.tensor_to_uint8(batch.target)

    def score(results) -> str:
        s = np.array([psnr(r, t) for r, t in zip(results, targets, strict=True)])
        return f"{np.median(s):6.2f} dB  {(s >= 25).mean():4.0%}"

    print(f"{args.cases} edits at {size} px, {args.steps} steps; median PSNR, success")
    print(f"{'raw output':>28}  {score(outputs)}")
    for name, bases in (("round trip", trips), ("input", sources)):
        for threshold in THRESHOLDS:
            for grow in GROWS:
                results = [paste_back(s, o, b, threshold=threshold, grow=grow)[0]
                           for s, o, b in zip(sources, outputs, bases, strict=True)]
                label = f"{name} t={threshold} g={grow}"
                print(f"{label:>28}  {score(results)}")


if __name__ == "__main__":
    main()
