"""Evaluation on paired data: any JSONL of (input, instruction, target) cases, or the built-in
Shapes World suite. `metrics` defines each figure a report gives.

- `dataset`: the JSONL format, checked line by line (`load_cases`, `Case`, `DatasetError`).
- `metrics`: PSNR (capped at 99 dB), success, preservation, the identity baseline.
- `runner`: `evaluate(kontext, cases, ...) -> Report`, batching cases through the pipeline.
- `report`: grouped summaries, JSON, Rich tables.
- `suite`: the fixed-seed Shapes World suite; `cli`: `openkontext eval`.
"""

from openkontext.eval.dataset import Case, DatasetError, Picture, Turn, load_cases
from openkontext.eval.metrics import PSNR_CAP, SUCCESS_DB, TurnScore, psnr, score_turn
from openkontext.eval.report import CaseResult, Report, Stats
from openkontext.eval.runner import evaluate, run_batch
from openkontext.eval.suite import build_suite

__all__ = [
    "PSNR_CAP", "SUCCESS_DB", "Case", "CaseResult", "DatasetError", "Picture", "Report", "Stats",
    "Turn", "TurnScore", "build_suite", "evaluate", "load_cases", "psnr", "run_batch",
    "score_turn",
]
