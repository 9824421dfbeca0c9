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

import importlib

_EXPORTS = {
    "dataset": ("Case", "DatasetError", "Picture", "Turn", "load_cases"),
    "metrics": ("PSNR_CAP", "SUCCESS_DB", "TurnScore", "psnr", "score_turn"),
    "report": ("CaseResult", "Report", "Stats"),
    "runner": ("evaluate", "run_batch"),
    "suite": ("build_suite",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
