"""Fixtures for the evaluation tests: one random mini model, and a hand-written paired dataset.

The paired dataset (64x64 pictures whose values stay in 20..200, so offsets never clip):

    same      target = input                    -> identity PSNR is the 99 dB cap
    offset    target = input + 10 everywhere    -> identity PSNR = 20 log10(255 / 10)
    masked    target = input + 30 in the left half, with a mask of that half
    wide      a 64x48 input (the model answers 80x48: scored after a resize to 64x48)
    gen       a generation (no input)
    story     a chain of two turns over `same` and `offset`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer

from openkontext.eval.cli import register
from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext

from .eval_helpers import picture, save, write_jsonl


@pytest.fixture(scope="session")
def kontext() -> Kontext:
    return Kontext(LoadedModel.random("mini", seed=0))


@pytest.fixture
def app(kontext) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    register(app, load=lambda weights, device, dtype, threads=None: kontext)

    @app.callback()
    def main() -> None:  # a callback keeps `eval` a named sub-command
        pass

    return app


@pytest.fixture(scope="session")
def paired(tmp_path_factory) -> Path:
    """The hand-written dataset above; returns its JSONL path."""
    folder = tmp_path_factory.mktemp("paired")
    a, wide = picture(1), picture(2, (64, 48))
    left = np.zeros((64, 64), dtype=bool)
    left[:, :32] = True
    shifted = a.copy()
    shifted[left] += 30
    inp = save(folder, "a.png", a)
    cases = [
        {"id": "same", "category": "noop", "instruction": "leave it be", "input": inp,
         "target": inp, "phrasing_split": "train"},
        {"id": "offset", "category": "brighten", "instruction": "brighten it", "input": inp,
         "target": save(folder, "a_plus10.png", a + 10), "phrasing_split": "heldout"},
        {"id": "masked", "category": "brighten", "instruction": "brighten the left half",
         "input": inp, "target": save(folder, "a_left.png", shifted),
         "mask": save(folder, "left.png", left.astype(np.uint8) * 255)},
        {"id": "wide", "instruction": "brighten it", "input": save(folder, "wide.png", wide),
         "target": save(folder, "wide_plus10.png", wide + 10)},
        {"id": "gen", "instruction": "a red circle on yellow", "input": None,
         "target": {"background": "yellow", "objects": [
             {"shape": "circle", "color": "red", "cell": "center", "size": "large"}]}},
        {"id": "story", "input": inp, "chain": [
            {"instruction": "leave it be", "target": inp},
            {"instruction": "brighten it", "target": "images/a_plus10.png"}]},
    ]
    return write_jsonl(folder / "cases.jsonl", cases)
