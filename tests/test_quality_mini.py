"""Quality gate: the shipped mini model on a fixed slice of the Shapes suite must not fall below
its recorded figures (tests/data/mini_quality.json, written by benchmarks/mini/mini_quality.py)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from openkontext.pipeline import Kontext
from openkontext.weights import EMBEDDED_DIR, is_mini_export

BASELINE = Path(__file__).parent / "data" / "mini_quality.json"
MARGIN_DB = 1.0
MARGIN_SUCCESS = 0.08


def _slice_module():
    path = Path(__file__).parents[1] / "benchmarks" / "mini" / "mini_quality.py"
    spec = importlib.util.spec_from_file_location("mini_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not is_mini_export(EMBEDDED_DIR), reason="no embedded mini weights shipped")
def test_shipped_model_keeps_its_recorded_quality():
    torch.manual_seed(0)
    baseline = json.loads(BASELINE.read_text())
    figures = _slice_module().slice_figures(Kontext.load())
    assert figures["edits"] == baseline["edits"]
    assert figures["identity_psnr_median"] == pytest.approx(baseline["identity_psnr_median"])
    assert figures["psnr_median"] >= baseline["psnr_median"] - MARGIN_DB, figures
    assert figures["success_rate"] >= baseline["success_rate"] - MARGIN_SUCCESS, figures
