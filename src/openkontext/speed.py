"""The speed knob: `quality`, `balanced` or `fast`, each a step-cache threshold
(`openkontext.model.step_cache`; `quality` runs every block of every step).

The thresholds were picked from the speed/PSNR curve `benchmarks/step_cache.py` measures on
Shapes World ground truth with the embedded model (docs/benchmarks.md, "Step caching and
speed"). Torch-free, so that the command line can name the choices without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Speed = Literal["quality", "balanced", "fast"]
# Relative L1 change of the first block's residual below which a step reuses the others'.
SPEEDS: dict[Speed, float | None] = {"quality": None, "balanced": 0.12, "fast": 0.3}
# balanced: 1.5x faster edits for 0.06 dB (all kinds; remove alone loses 1.0 dB); fast: 2.1x for
# 0.29 dB (remove 2.6 dB, night 0.8 dB). Measured 2026-12-07 on 88 edits, 8 of each kind.
DEFAULT_SPEED: Speed = "balanced"


def check_speed(speed: str | None, speeds: Mapping[str, float | None] = SPEEDS) -> str:
    """`speed`, or the default for None; ValueError naming the choices for anything else."""
    if speed is None:
        return DEFAULT_SPEED
    if speed not in speeds:
        raise ValueError(f"unknown speed {speed!r}; choose one of {', '.join(speeds)}")
    return speed
