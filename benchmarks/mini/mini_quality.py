"""The CI quality slice: a small fixed part of the Shapes suite scored with the shipped weights.

`tests/test_quality_mini.py` runs the same slice in CI and fails when a figure falls below the
baseline recorded here minus a margin, so a pipeline change that breaks editing cannot land.
After exporting new weights, re-record the baseline:

    .venv/bin/python benchmarks/mini/mini_quality.py --write tests/data/mini_quality.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from openkontext.eval import build_suite, evaluate
from openkontext.eval.report import ALL_EDITS
from openkontext.pipeline import Kontext

PER_KIND = 2  # 2 train + 2 held-out edits of each of the 11 kinds, 2 generations, 1 chain
STEPS = 16
SEED = 0


def slice_figures(kontext: Kontext) -> dict:
    """Median PSNR, success rate and identity baseline over the slice's edits."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_suite(tmp, per_kind=PER_KIND, size=kontext.model.preset.native_size)
        report = evaluate(kontext, cases, steps=STEPS, seed=SEED)
    edits = report.by_category()[ALL_EDITS]
    return {
        "edits": edits.count,
        "psnr_median": round(edits.psnr_median, 2),
        "success_rate": round(edits.success_rate, 3),
        "identity_psnr_median": round(edits.identity_psnr_median, 2),
        "seconds": round(report.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--write", type=Path, help="record the figures as the CI baseline")
    args = parser.parse_args()
    figures = slice_figures(Kontext.load(args.weights))
    print(json.dumps(figures))
    if args.write:
        args.write.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
