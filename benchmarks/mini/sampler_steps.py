"""Where along the trajectory is an edit decided? Per edit kind (and for generation), the same
fresh cases sampled with 1, 2, 4, 8, 16 and 32 Euler steps (no paste-back), scored against the
ground truth.

One step is the model's single estimate of the clean picture from pure noise (x0 = x1 - v):
everything it gets right there comes from the text and the reference alone. If more steps add
little, the errors are made at high t, and training should spend its samples there (t_mean).

    .venv/bin/python benchmarks/mini/sampler_steps.py [--weights DIR] [--cases 16] [--seed 5]
"""

from __future__ import annotations

import argparse
import random
import statistics

from openkontext.sampling import run_tensors
from openkontext.train.autoencoder import psnr
from openkontext.weights import load_model
from openkontext.world.edits import KINDS
from openkontext.world.sampling import edit_batch, generation_batch

STEPS = (1, 2, 4, 8, 16, 32)
SUCCESS_DB = 25.0


def sweep(
    model, cases: int, seed: int, runs: dict[str, tuple[int, float | None]]
) -> dict[str, dict[str, tuple[float, float]]]:
    """{kind: {run label: (median PSNR, success rate)}} over `cases` fresh edits of each kind
    and `cases` generations; `runs` maps a label to its (Euler steps, guidance)."""
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
        for label, (steps, guidance) in runs.items():
            out = run_tensors(model, prompts, list(range(cases)), size, size, steps, guidance, refs)
            scores = psnr(out, target).tolist()
            row[label] = (statistics.median(scores),
                          sum(s >= SUCCESS_DB for s in scores) / cases)
        table[kind] = row
    return table


def print_table(table: dict[str, dict[str, tuple[float, float]]], title: str) -> None:
    """The sweep as a markdown table, one column a run, with the median over edit kinds."""
    labels = list(next(iter(table.values())))
    print(title)
    print("| kind | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for kind, row in table.items():
        cells = " | ".join(f"{p:.1f} ({r:.0%})" for p, r in row.values())
        print(f"| {kind} | {cells} |")
    edits = [row for kind, row in table.items() if kind != "generation"]
    medians = [statistics.median(row[label][0] for row in edits) for label in labels]
    print("| median of edit kinds | " + " | ".join(f"{m:.1f}" for m in medians) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped)")
    parser.add_argument("--cases", type=int, default=16, help="edits per kind")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    runs = {str(steps): (steps, None) for steps in STEPS}
    table = sweep(load_model(args.weights), args.cases, args.seed, runs)
    print_table(table, f"median PSNR dB (success) over {args.cases} edits a kind, by Euler steps")


if __name__ == "__main__":
    main()
