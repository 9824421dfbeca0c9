"""Two transformer runs side by side, from their `flux_log.jsonl`: training loss on the same
steps, and the in-training sampled evals.

Runs started from the same checkpoint with the same seed and data mix draw identical batches,
noise and t at every step (the data stream is seeded by the seed and the step number), so the
difference of their logged losses at a step is a paired comparison: much less noisy than either
loss alone. The script reads both runs' configs and says whether that holds. With --kind it
compares the loss of one edit kind's samples (logged per step where the batch had that kind)
instead of the whole batch's, with a last row over all shared steps.

    .venv/bin/python benchmarks/mini/compare_runs.py RUN_A RUN_B [--window 500] [--kind recolor]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from openkontext.train.transformer import held_settings
from openkontext.world.edits import KINDS

# FlowTrainConfig fields that decide what a step draws (its edits, noise, t, dropped
# instructions); the loss weights change what a step learns from them, not what it sees
DRAW_FIELDS = ("seed", "kind_weights", "contrast", "colour_contrast", "alike_twins", "t_mean",
               "t_std", "text_drop", "edit_batch", "generation_batch")


def read_log(run: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """(loss records by step, eval records by step)."""
    losses, evals = {}, {}
    for line in (run / "flux_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval" in record:
            evals[record["step"]] = record["eval"]
        elif "loss" in record:
            losses[record["step"]] = record
    return losses, evals


def losses_of(records: dict[int, dict], kind: str | None) -> dict[int, float]:
    """{step: the batch's loss, or with `kind` that kind's loss where the step logged it}."""
    if kind is None:
        return {step: r["loss"] for step, r in records.items()}
    return {step: r["kinds"][kind] for step, r in records.items() if kind in r.get("kinds", {})}


def draws_differ(run_a: Path, run_b: Path) -> list[str]:
    """The config fields in DRAW_FIELDS on which the two runs' checkpoints disagree."""
    a, b = (held_settings(torch.load(run / "flux.pt", map_location="cpu", weights_only=False,
                                     mmap=True)["config"])
            for run in (run_a, run_b))
    return [name for name in DRAW_FIELDS if a[name] != b[name]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--window", type=int, default=500, help="steps per row")
    ap.add_argument("--kind", choices=KINDS, help="compare this edit kind's loss only")
    args = ap.parse_args()
    a_records, a_eval = read_log(args.run_a)
    b_records, b_eval = read_log(args.run_b)
    a_loss, b_loss = losses_of(a_records, args.kind), losses_of(b_records, args.kind)
    shared = sorted(set(a_loss) & set(b_loss))
    if not shared:
        raise SystemExit("the two logs share no logged step"
                         + (f" with a {args.kind} loss" if args.kind else ""))
    differ = draws_differ(args.run_a, args.run_b)
    paired = ("the same batches at the same step, so B - A is paired" if not differ else
              f"their {', '.join(differ)} differ, so their batches do and B - A is not paired")
    what = f"{args.kind} loss where both logged one" if args.kind else "loss every 20 steps"
    print(f"A = {args.run_a}, B = {args.run_b}; {what}; {paired}")
    print("| steps | A loss | B loss | B - A (mean) | B < A | A s/step | B s/step |")
    print("|---|---|---|---|---|---|---|")

    def row(label: str, rows: list[int]) -> None:
        a = [a_loss[s] for s in rows]
        b = [b_loss[s] for s in rows]
        diff = [y - x for x, y in zip(a, b, strict=True)]
        wins = sum(d < 0 for d in diff) / len(diff)
        print(f"| {label} | {statistics.mean(a):.5f} | {statistics.mean(b):.5f} "
              f"| {statistics.mean(diff):+.5f} | {wins:.0%} "
              f"| {statistics.mean(a_records[s]['sec_per_step'] for s in rows):.2f} "
              f"| {statistics.mean(b_records[s]['sec_per_step'] for s in rows):.2f} |")

    start = shared[0] - shared[0] % args.window
    while start <= shared[-1]:
        if rows := [s for s in shared if start < s <= start + args.window]:
            row(f"{start + 1}-{start + args.window}", rows)
        start += args.window
    if args.kind:
        row(f"all {len(shared)} steps", shared)
    print("\nsampled evals (median PSNR dB, success):")
    for step in sorted(set(a_eval) | set(b_eval)):
        cells = [f"{e['psnr_median']} / {e['success']:.0%}" if (e := ev.get(step)) else "-"
                 for ev in (a_eval, b_eval)]
        print(f"  step {step}: A {cells[0]}   B {cells[1]}")


if __name__ == "__main__":
    main()
