"""How well the mini autoencoder reconstructs Shapes World: the ceiling for every edit.

Encodes and decodes fresh random scenes (plain, and through a global filter) and prints the
PSNR distribution and the share at or above the 25 dB success threshold.

    .venv/bin/python benchmarks/mini/ae_reconstruction.py [--weights W] [--count 128]
"""

from __future__ import annotations

import argparse
import random

import torch

from openkontext.train.autoencoder import ae_batch, psnr
from openkontext.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()
    ae = load_model(args.weights).ae
    size = ae.params.resolution
    rng = random.Random(args.seed)
    print(f"{args.count} scenes per row at {size} px; PSNR in dB")
    print(f"{'scenes':>14}  {'median':>6}  {'mean':>6}  {'p10':>6}  {'>= 25 dB':>8}")
    with torch.no_grad():
        for filter_prob, name in ((0.0, "plain"), (1.0, "filtered")):
            x = torch.cat([ae_batch(rng, 32, size, filter_prob) for _ in range(args.count // 32)])
            p = psnr(ae.decode(ae.encode(x)), x)
            print(f"{name:>14}  {p.median():6.2f}  {p.mean():6.2f}  {p.quantile(0.1):6.2f}  "
                  f"{(p >= 25).float().mean():8.0%}")


if __name__ == "__main__":
    main()
