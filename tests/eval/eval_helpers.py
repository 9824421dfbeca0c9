"""Small helpers shared by the evaluation tests: seeded pictures and files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def picture(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    w, h = size
    return np.random.default_rng(seed).integers(20, 201, (h, w, 3), dtype=np.uint8)


def save(folder: Path, name: str, array: np.ndarray) -> str:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / "images" / name)
    return f"images/{name}"


def write_jsonl(path: Path, cases: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8")
    return path
