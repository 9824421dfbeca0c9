"""The project's own mini export: save, load, and clear errors for damaged exports."""

import json

import pytest
import torch

from openkontext.pipeline import Kontext, LoadedModel
from openkontext.weights import WeightsError, is_mini_export, load_mini, load_model, save_mini


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    model = LoadedModel.random("mini", seed=3)
    folder = tmp_path_factory.mktemp("export")
    save_mini(folder, model.preset, model.flux, model.ae, model.text, dtype=torch.float16,
              info={"steps": 0})
    return folder, model


def test_round_trip_rebuilds_the_model_from_the_files_alone(export):
    folder, model = export
    assert is_mini_export(folder)
    loaded = load_model(folder)
    assert loaded.preset == model.preset
    for a, b in ((loaded.flux, model.flux), (loaded.ae, model.ae), (loaded.text, model.text)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and va.dtype == torch.float32
            assert torch.equal(va, vb.half().float())  # stored in fp16, loaded as fp32
    result = Kontext(loaded).generate("on white: small red circle center", steps=1, seed=0)
    assert result.images[0].size == (64, 64)


def test_no_file_is_left_half_written(export):
    folder, _ = export
    assert sorted(p.name for p in folder.iterdir()) == ["mini.json", "mini.safetensors"]


def _copy(export, tmp_path):
    folder, _ = export
    for name in ("mini.json", "mini.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    return tmp_path


def test_truncated_weights_name_the_file(export, tmp_path):
    folder = _copy(export, tmp_path)
    data = (folder / "mini.safetensors").read_bytes()
    (folder / "mini.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="mini.safetensors"):
        load_mini(folder)


def test_mismatched_config_names_the_first_bad_key(export, tmp_path):
    folder = _copy(export, tmp_path)
    config = json.loads((folder / "mini.json").read_text())
    config["preset"]["flux"]["depth"] += 1
    (folder / "mini.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="missing key flux.double_blocks.2"):
        load_mini(folder)
    config["preset"]["flux"]["depth"] -= 1
    config["preset"]["flux"]["mlp_ratio"] = 2.0
    (folder / "mini.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"flux.double_blocks.0.img_mlp.0.weight has shape"):
        load_mini(folder)


def test_damaged_or_missing_config(export, tmp_path):
    folder = _copy(export, tmp_path)
    (folder / "mini.json").write_text("{nope")
    with pytest.raises(WeightsError, match="damaged config"):
        load_mini(folder)
    (folder / "mini.json").unlink()
    with pytest.raises(WeightsError, match="mini.json: no such file"):
        load_mini(folder)
