"""The autoencoder's ceiling on the Shapes suite: each single edit's and generation's target,
encoded and decoded, scored against itself like a model output would be.

A model whose latent were exactly the target's could do no better than this, so per-category
success here caps what the transformer can reach on `openkontext eval --suite shapes`.

    .venv/bin/python benchmarks/mini/ae_ceiling.py [--weights W | --run RUN] [--suite-size 10]
                                                   [--save PNG]

--run measures the autoencoder in a training run folder (RUN/ae.pt) before any export.

--save writes the first eight targets (top row) over their round trips (bottom row).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from openkontext import imaging
from openkontext.eval.dataset import load_cases
from openkontext.eval.metrics import psnr
from openkontext.eval.suite import build_suite
from openkontext.train.autoencoder import load_finished_autoencoder
from openkontext.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--run", default=None, help="a training run folder: its ae.pt")
    parser.add_argument("--suite-size", type=int, default=10)
    parser.add_argument("--save", default=None, help="write targets over round trips here")
    args = parser.parse_args()
    if args.run:
        ae = load_finished_autoencoder(Path(args.run) / "ae.pt")[0]
    else:
        ae = load_model(args.weights).ae.float()
    scores: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        size = ae.params.resolution
        cases = load_cases(build_suite(tmp, args.suite_size, size), native_size=size)
        singles = [c for c in cases if not c.is_chain]
        targets = np.stack([c.turns[0].target.load() for c in singles])
    with torch.no_grad():
        back = imaging.tensor_to_uint8(ae.decode(ae.encode(imaging.image_to_tensor(list(targets)))))
    for case, target, out in zip(singles, targets, back, strict=True):
        scores[case.category].append(psnr(out, target))
        scores["all"].append(scores[case.category][-1])
    if args.save:
        grid = np.concatenate([np.concatenate(list(row[:8]), 1) for row in (targets, back)], 0)
        Image.fromarray(grid).save(args.save)
    print(f"autoencoder round trip of the suite's targets at {size} px (PSNR in dB)")
    print(f"{'category':>12}  {'n':>3}  {'median':>6}  {'>= 25 dB':>8}")
    for name in sorted(scores, key=lambda k: (k == "all", k)):
        s = np.array(scores[name])
        print(f"{name:>12}  {len(s):3d}  {np.median(s):6.2f}  {(s >= 25).mean():8.0%}")


if __name__ == "__main__":
    main()
