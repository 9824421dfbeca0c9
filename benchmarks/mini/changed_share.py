"""What share of an edit's tokens does it change? Per edit kind, the mean share of the packed
tokens that hold a pixel of the change mask (`train.transformer.token_mask`): the tokens
`train mini --change-weight W` weighs 1 + W, and what a plain mean loss gives the edit itself.

    .venv/bin/python benchmarks/mini/changed_share.py [--preset mini-fine] [--cases 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics

from openkontext.model import get_preset
from openkontext.train.transformer import token_mask
from openkontext.world.sampling import edit_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini-fine")
    parser.add_argument("--cases", type=int, default=400, help="edits in all, kinds uniform")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    batch = edit_batch(random.Random(args.seed), args.cases, preset.native_size)
    shares = token_mask(batch.mask, preset.latent_multiple).mean(dim=1).tolist()
    by_kind: dict[str, list[float]] = {}
    for kind, share in zip(batch.kinds, shares, strict=True):
        by_kind.setdefault(kind, []).append(share)
    tokens = (preset.native_size // preset.latent_multiple) ** 2
    print(f"share of the {tokens} tokens an edit changes ({args.preset}, {args.cases} edits)")
    print("| kind | edits | changed tokens |\n|---|---|---|")
    for kind, values in sorted(by_kind.items()):
        print(f"| {kind} | {len(values)} | {statistics.mean(values):.0%} |")


if __name__ == "__main__":
    main()
