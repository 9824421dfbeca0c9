"""Classifier-free guidance on a mini trained with dropped instructions (`train mini
--text-drop`): per edit kind (and for generation), the same fresh cases sampled at several
guidance scales (1 = none; no paste-back), scored against the ground truth.

Guidance pushes the velocity away from what the model predicts for an empty instruction: the
question is whether that makes it change what the words name (a recolour's object, an added
one) without losing what it copies.

    .venv/bin/python benchmarks/guidance_sweep.py --weights EXPORT [--cases 12] [--steps 16]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

from openkontext.pipeline import run_tensors
from openkontext.train.autoencoder import psnr
from openkontext.weights import load_model
from openkontext.world.edits import KINDS
from openkontext.world.sampling import edit_batch, generation_batch

SCALES = (1.0, 1.5, 2.0, 3.0, 5.0)
SUCCESS_DB = 25.0


def sweep(model, cases: int, steps: int, seed: int) -> dict[str, dict[float, tuple[float, float]]]:
    """{kind: {scale: (median PSNR, success rate)}} over `cases` fresh cases of each kind."""
    size = model.preset.native_size
    table = {}
    for kind in (*KINDS, "generation"):
        rng = random.Random(f"{seed}:{kind}")
        if kind == "generation":
            gens = generation_batch(rng, cases, size)
            prompts, target, refs = gens.descriptions, gens.target, None
        else:
            batch = edit_batch(rng, cases, size, kinds=[kind])
            prompts, target, refs = batch.instructions, batch.target, [batch.source]
        row = {}
        for scale in SCALES:
            out = run_tensors(model, prompts, list(range(cases)), size, size, steps, scale, refs)
            scores = psnr(out, target).tolist()
            row[scale] = (statistics.median(scores),
                          sum(s >= SUCCESS_DB for s in scores) / cases)
        table[kind] = row
        print(f"{kind} done", file=sys.stderr, flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a mini export trained with --text-drop")
    parser.add_argument("--cases", type=int, default=12, help="cases per kind")
    parser.add_argument("--steps", type=int, default=16, help="Euler steps")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.weights)
    if not model.preset.classifier_free:
        sys.exit(f"{args.weights}: not trained with --text-drop, so guidance does nothing there")
    table = sweep(model, args.cases, args.steps, args.seed)
    print(f"median PSNR dB (success) over {args.cases} cases a kind, {args.steps} Euler steps, "
          "by guidance scale")
    print("| kind | " + " | ".join(f"{s:g}" for s in SCALES) + " |")
    print("|---|" + "---|" * len(SCALES))
    for kind, row in table.items():
        cells = " | ".join(f"{p:.1f} ({r:.0%})" for p, r in row.values())
        print(f"| {kind} | {cells} |")
    edits = [row for kind, row in table.items() if kind != "generation"]
    medians = {s: statistics.median(row[s][0] for row in edits) for s in SCALES}
    print("| median of edit kinds | " + " | ".join(f"{m:.1f}" for m in medians.values()) + " |")


if __name__ == "__main__":
    main()
