"""`openkontext train average`: the mean of mini exports' weights, and the exports it refuses."""

import json

import pytest
import torch
from typer.testing import CliRunner

from openkontext.cli import app
from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
from openkontext.weights import load_model, save_mini

from .test_train_mini import unboxed


def _export(
    folder, seed: int, ae_from: LoadedModel | None = None, preset: str = "mini", steps: int = 10
) -> LoadedModel:
    model = LoadedModel.random(preset, seed=seed)
    if ae_from is not None:
        model.ae.load_state_dict(ae_from.ae.state_dict())
    history = [{"folder": "start", "ae_steps": 5, "transformer_steps": 7}]
    save_mini(
        folder,
        model.preset,
        model.flux,
        model.ae,
        model.text,
        info={"ae_steps": 5, "transformer_steps": steps, "init_from": history},
    )
    return load_model(folder)  # as stored: fp16 values


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    a = _export(root / "a", seed=1)
    b = _export(root / "b", seed=2, ae_from=a, steps=12)
    return root, a, b


def test_the_average_is_the_mean_of_each_weight_and_edits(two, tmp_path):
    root, a, b = two
    result = CliRunner().invoke(
        app, ["train", "average", str(root / "a"), str(root / "b"), "--out", str(tmp_path / "mean")]
    )
    assert result.exit_code == 0, result.output
    mean = load_model(tmp_path / "mean")
    assert mean.preset == a.preset
    for name in ("flux", "text"):
        ours, sa, sb = (getattr(m, name).state_dict() for m in (mean, a, b))
        for key, value in ours.items():
            expected = ((sa[key] + sb[key]) / 2).half().float()  # stored in fp16 like any export
            assert torch.equal(value, expected), key
        if name == "flux":  # (mini's frozen sentence encoder is the same in both)
            assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # so the mean is a third
    for key, value in mean.ae.state_dict().items():
        assert torch.equal(value, a.ae.state_dict()[key])
    info = json.loads((tmp_path / "mean" / "mini.json").read_text())["info"]
    assert info["transformer_steps"] == 12 and info["ae_steps"] == 5
    assert [e["folder"] for e in info["averaged"]] == [str(root / "a"), str(root / "b")]
    assert [e["transformer_steps"] for e in info["averaged"]] == [10, 12]
    assert info["init_from"] == [{"folder": "start", "ae_steps": 5, "transformer_steps": 7}]
    image = Kontext(mean).generate("on white: small red circle center", steps=1, seed=0).images[0]
    assert image.size == (64, 64)


def test_exports_that_cannot_be_averaged_are_refused_and_nothing_is_written(two, tmp_path):
    root, a, _ = two
    other_ae = tmp_path / "other_ae"
    _export(other_ae, seed=3)
    finer = tmp_path / "finer"
    _export(finer, seed=4, preset="mini-fine")
    out = tmp_path / "out"
    cases = [
        ([str(root / "a")], "give at least two exports to average"),
        ([str(root / "a"), str(other_ae)], "has another autoencoder than"),
        ([str(root / "a"), str(finer)], "differs from"),
        ([str(root / "a"), str(tmp_path / "missing")], "no such file"),
    ]
    for exports, message in cases:
        result = CliRunner().invoke(app, ["train", "average", *exports, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in unboxed(result.output), result.output
        assert not out.exists()
