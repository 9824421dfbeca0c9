"""Classifier-free guidance on a mini trained with dropped instructions (`train mini
--text-drop`): per edit kind (and for generation), the same fresh cases sampled at several
guidance scales (1 = none; no paste-back), scored against the ground truth.

Guidance pushes the velocity away from what the model predicts for an empty instruction: the
question is whether that makes it change what the words name (a recolour's object, an added
one) without losing what it copies.

    .venv/bin/python benchmarks/mini/guidance_sweep.py --weights EXPORT [--cases 12] [--steps 16]

`--untrained` runs the same on an export trained without dropped instructions (the empty
instruction is then one the model never saw): the control for what the training adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from openkontext.weights import load_model
from sampler_steps import print_table, sweep  # beside this script

SCALES = (1.0, 1.5, 2.0, 3.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None,
                        help="a mini export trained with --text-drop (default: the shipped)")
    parser.add_argument("--cases", type=int, default=12, help="cases per kind")
    parser.add_argument("--steps", type=int, default=16, help="Euler steps")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--untrained", action="store_true",
                        help="guide an export that was not trained with --text-drop")
    args = parser.parse_args()
    model = load_model(args.weights)
    if args.untrained:
        model = dataclasses.replace(
            model, preset=dataclasses.replace(model.preset, classifier_free=True)
        )
    elif not model.preset.classifier_free:
        name = args.weights or "the shipped export"
        sys.exit(f"{name}: not trained with --text-drop, so guidance does nothing there "
                 "(--untrained to guide it anyway)")
    runs = {f"{scale:g}": (args.steps, scale) for scale in SCALES}
    table = sweep(model, args.cases, args.seed, runs)
    print_table(table, f"median PSNR dB (success) over {args.cases} cases a kind, "
                f"{args.steps} Euler steps, by guidance scale")


if __name__ == "__main__":
    main()
