"""Evaluation on paired data: any JSONL of (input, instruction, target) cases, or the built-in
Shapes World suite. `metrics` defines each figure a report gives.

- `dataset`: the JSONL format, checked line by line (`load_cases`, `Case`, `DatasetError`).
- `metrics`: PSNR (capped at 99 dB), success, preservation, the identity baseline.
- `runner`: `evaluate(kontext, cases, ...) -> Report`, batching cases through the pipeline.
- `report`: grouped summaries, JSON, Rich tables.
- `suite`: the fixed-seed Shapes World suite; `cli`: `openkontext eval`.

The names below are loaded on first use, so that the CLI can import `openkontext.eval.cli`
without torch and the pipeline.
"""

from openkontext.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "dataset": ("Case", "DatasetError", "Picture", "Turn", "load_cases"),
    "metrics": ("PSNR_CAP", "SUCCESS_DB", "TurnScore", "psnr", "score_turn"),
    "report": ("CaseResult", "Report", "Stats"),
    "runner": ("evaluate", "run_batch", "score_output"),
    "suite": ("build_suite",),
})
