"""`openkontext convert` end to end: scaled fp8 and bf16 files with the params in their
metadata, loading back close to the model they came from; a diffusers folder converts to the
same bytes as the BFL file; bad requests are exit 2 and write nothing. Also `edit --offload`
from the command line: each mode writes the same picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_FLUX
from openkontext.cli import app
from openkontext.model.fp8 import FP8, FP8_MAX, FP8Linear
from openkontext.weights import load_transformer, save_model
from openkontext.weights.safetensors_io import SafetensorsFile

runner = CliRunner()
BLOCKS = ("double_blocks.", "single_blocks.")
PARAMS_KEY = "openkontext.flux_params"


@pytest.fixture
def bfl(tmp_path, flux_model) -> Path:
    return save_model(flux_model, tmp_path / "src" / "flux.safetensors")


def convert(*args: str):
    return runner.invoke(app, ["convert", *map(str, args)])


def flux_output(model) -> torch.Tensor:
    """One forward of a TINY_FLUX model on seeded inputs (as in test_weights_layouts.py)."""
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(1, 16, 16, generator=gen), torch.randn(1, 8, 32, generator=gen)
    img_ids, txt_ids = torch.zeros(1, 16, 3), torch.zeros(1, 8, 3)
    img_ids[0, :, 1], img_ids[0, :, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    with torch.no_grad():
        return model(img, img_ids, txt, txt_ids, torch.tensor([0.5]),
                     torch.randn(1, 24, generator=gen), torch.tensor([2.5])).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def is_block_linear(key: str, t: torch.Tensor) -> bool:
    return key.startswith(BLOCKS) and key.endswith(".weight") and t.ndim == 2


def test_convert_to_fp8_writes_scaled_fp8_that_loads_close_to_the_model(tmp_path, bfl,
                                                                         flux_model):
    out = tmp_path / "fp8.safetensors"
    r = convert(bfl, out, "--to", "fp8")
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and "fp8" in r.output
    state = flux_model.state_dict()
    linears = [k for k, t in state.items() if is_block_linear(k, t)]
    assert len(linears) == 2 * 10 + 2 * 3  # a double block has 10 linears, a single block 3
    with SafetensorsFile(out) as f:
        scales = {k.removesuffix("weight") + "scale_weight" for k in linears}
        assert set(f.keys()) == set(state) | scales | {"scaled_fp8"}
        assert (f.dtype("scaled_fp8"), f.shape("scaled_fp8")) == (FP8, (0,))
        for key, t in state.items():
            if key in linears:
                weight, scale = f.read(key), f.read(key.removesuffix("weight") + "scale_weight")
                assert (weight.dtype, weight.shape) == (FP8, t.shape), key
                assert (scale.dtype, scale.shape) == (torch.float32, ()), key
                assert float(scale) == float(t.abs().max() / FP8_MAX), key
                assert float(weight.float().abs().max()) == 448.0, key
                error = (weight.float() * scale - t).abs().max()
                assert error <= scale * 16 * (1 + 1e-6), key  # half e4m3's top step
            else:
                assert torch.equal(f.read(key), t.bfloat16()), key
        assert f.metadata["format"] == "pt"
        assert json.loads(f.metadata[PARAMS_KEY]) == json.loads(
            json.dumps(TINY_FLUX.to_dict()))
    reference = flux_output(flux_model)
    stored = load_transformer(out, fp8=True)  # params from the file's metadata
    wide = load_transformer(out, fp8=False)
    assert stored.params == TINY_FLUX and wide.params == TINY_FLUX
    assert any(isinstance(m, FP8Linear) for m in stored.double_blocks.modules())
    assert not any(isinstance(m, FP8Linear) for m in wide.modules())
    error = rel(flux_output(stored), reference)
    assert error < 0.1, error  # measured 0.070 here, 0.024-0.070 over six random models
    assert torch.equal(flux_output(wide), flux_output(stored))  # multiplied out: same numbers


def test_convert_to_bf16_is_the_model_cast_to_bf16(tmp_path, bfl, flux_model):
    out = tmp_path / "bf16.safetensors"
    r = convert(bfl, out, "--to", "bf16")
    assert r.exit_code == 0, r.output
    state = flux_model.state_dict()
    with SafetensorsFile(out) as f:
        assert f.keys() == list(state)
        for key, t in state.items():
            assert torch.equal(f.read(key), t.bfloat16()), key
        assert json.loads(f.metadata[PARAMS_KEY])["depth_single_blocks"] == 2
    error = rel(flux_output(load_transformer(out)), flux_output(flux_model))
    assert error < 0.01, error  # measured 0.0053 here, 0.0034-0.0057 over six random models


@pytest.mark.parametrize("to", ["fp8", "bf16"])
def test_a_diffusers_folder_converts_to_the_same_bytes_as_the_bfl_file(tmp_path, bfl,
                                                                      flux_model, to):
    root = tmp_path / "diffusers"
    save_model(flux_model, root / "transformer", layout="diffusers")
    outs = {}
    for name, source in [("bfl", bfl), ("transformer", root / "transformer"), ("root", root)]:
        outs[name] = tmp_path / f"{name}.safetensors"
        r = convert(source, outs[name], "--to", to)
        assert r.exit_code == 0, (name, r.output)
    expected = outs["bfl"].read_bytes()
    assert outs["transformer"].read_bytes() == expected
    assert outs["root"].read_bytes() == expected


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("int4", "--to must be fp8 or bf16, got 'int4'"),
        ("suffix", "the output must be a .safetensors file"),
        ("missing source", "not found"),
        ("output a directory", "is a directory"),
    ],
)
def test_a_bad_request_is_exit_2_and_writes_nothing(tmp_path, bfl, case, message):
    work = tmp_path / "work"
    work.mkdir()
    source, out, options = bfl, work / "out.safetensors", ["--to", "fp8"]
    if case == "int4":
        options = ["--to", "int4"]
    elif case == "suffix":
        out = work / "out.bin"
    elif case == "missing source":
        source = tmp_path / "nowhere.safetensors"
    else:
        out.mkdir()
    before = sorted(tmp_path.rglob("*"))
    r = convert(source, out, *options)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert sorted(tmp_path.rglob("*")) == before
    if case == "missing source":
        assert str(source) in r.output.replace("\n", "")


def test_an_output_in_a_new_folder_is_written(tmp_path, bfl):
    out = tmp_path / "new" / "sub" / "out.safetensors"
    r = convert(bfl, out, "--to", "bf16")
    assert r.exit_code == 0, r.output
    with SafetensorsFile(out) as f:
        assert f.dtype("img_in.weight") == torch.bfloat16


# edit --offload


def edit(scene: Path, out: Path, offload: str):
    return runner.invoke(app, ["edit", str(scene), "make the circle blue", "--weights", "random",
                               "--offload", offload, "--device", "cpu", "--steps", "2",
                               "--seed", "3", "-o", str(out)])


def test_each_offload_mode_writes_the_same_picture(tmp_path, scene):
    pictures = {}
    for mode in ("none", "blocks", "model"):
        out = tmp_path / f"{mode}.png"
        r = edit(scene, out, mode)
        assert r.exit_code == 0, (mode, r.output)
        pictures[mode] = out.read_bytes()
    assert pictures["blocks"] == pictures["none"]
    assert pictures["model"] == pictures["none"]
    image = np.asarray(Image.open(tmp_path / "none.png"))
    assert image.shape == (64, 64, 3) and image.std() > 1  # a picture, not a flat fill


def test_an_unknown_offload_mode_is_exit_2(tmp_path, scene):
    out = tmp_path / "out.png"
    r = edit(scene, out, "sideways")
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert "'sideways' is not one of" in message and "'blocks'" in message
    assert not out.exists()
