"""Where along the trajectory is an edit decided? Per edit kind (and for generation), the same
fresh cases sampled with 1, 2, 4, 8, 16 and 32 Euler steps (no paste-back), scored against the
ground truth.

One step is the model's single estimate of the clean picture from pure noise (x0 = x1 - v):
everything it gets right there comes from the text and the reference alone. If more steps add
little, the errors are made at high t, and training should spend its samples there (t_mean).

    .venv/bin/python benchmarks/sampler_steps.py [--weights DIR] [--cases 16] [--seed 5]
"""

from __future__ import annotations

import argparse
import random
import statistics

from openkontext.pipeline import run_tensors
from openkontext.train.autoencoder import psnr
from openkontext.weights import load_model
from openkontext.world.edits import KINDS
from openkontext.world.sampling import edit_batch, generation_batch

STEPS = (1, 2, 4, 8, 16, 32)
SUCCESS_DB = 25.0


def sweep(model, cases: int, seed: int) -> dict[str, dict[int, tuple[float, float]]]:
    """{kind: {steps: (median PSNR, success rate)}} over `cases` fresh edits of each kind and
    `cases` generations."""
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
        for steps in STEPS:
            out = run_tensors(model, prompts, list(range(cases)), size, size, steps, None, refs)
            scores = psnr(out, target).tolist()
            row[steps] = (statistics.median(scores),
                          sum(s >= SUCCESS_DB for s in scores) / cases)
        table[kind] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped)")
    parser.add_argument("--cases", type=int, default=16, help="edits per kind")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    table = sweep(load_model(args.weights), args.cases, args.seed)
    print(f"median PSNR dB (success) over {args.cases} edits a kind, by Euler steps")
    print("| kind | " + " | ".join(str(s) for s in STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for kind, row in table.items():
        cells = " | ".join(f"{p:.1f} ({r:.0%})" for p, r in row.values())
        print(f"| {kind} | {cells} |")
    edits = [row for kind, row in table.items() if kind != "generation"]
    medians = {s: statistics.median(row[s][0] for row in edits) for s in STEPS}
    print("| median of edit kinds | " + " | ".join(f"{m:.1f}" for m in medians.values()) + " |")


if __name__ == "__main__":
    main()
