"""Pieces shared by the training stages: EMA, atomic checkpoints, JSONL logs, progress."""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from openkontext.files import atomic_write


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX-512 BF16). Where it does, bf16
    autocast made training steps 2-3x faster; where it does not (AVX2 only, e.g. the AMD EPYC
    machines), torch emulates it and a bf16 matmul ran ~150x slower than fp32
    (`python benchmarks/mini/bf16_speed.py` measures both)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


class EMA:
    """Exponential moving average of a module's parameters (kept in float32)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float | None = None) -> None:
        d = self.decay if decay is None else decay
        for s, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            s.lerp_(p.detach().float(), 1 - d)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save through `files.atomic_write`: never a half-written checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


class JsonlLog:
    """Appends one JSON object per line; used for losses and periodic evaluations."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        record.setdefault("time", round(time.time(), 1))
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def progress_bar(description: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        refresh_per_second=1,
    )
