"""Every layout FLUX.1 Kontext [dev] users hold, made tiny and random here, edits end to end
from the CLI; a missing part is exit 2 naming the part and the flag that supplies it; fp8
storage and scaled-fp8 checkpoints load and stay close to the float model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import TINY_FLUX
from openkontext.cli import app
from openkontext.model.fp8 import FP8, FP8Linear
from openkontext.weights import WeightsError, load_transformer, save_model
from openkontext.weights.convert import convert_transformer
from openkontext.weights.parts import find_parts
from openkontext.weights.safetensors_io import SafetensorsFile
from tiny_text import (
    hub_snapshot,
    write_comfy_text_encoders,
    write_tiny_text_encoders,
    write_tokenizers,
)

runner = CliRunner()
CLIP, T5 = TINY_FLUX.vec_in_dim, TINY_FLUX.context_in_dim
EDIT = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "3"]


@pytest.fixture
def bfl(tmp_path, flux_model, ae_model) -> Path:
    """BFL single files alone, as Black Forest Labs ships them."""
    folder = tmp_path / "bfl"
    save_model(flux_model, folder / "flux1-kontext-dev.safetensors")
    save_model(ae_model, folder / "ae.safetensors")
    return folder


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def edit(picture: Path, out: Path, *options: str) -> np.ndarray:
    r = runner.invoke(app, ["edit", str(picture), "make it red", "-o", str(out), *EDIT, *options])
    assert r.exit_code == 0, r.output
    return np.asarray(Image.open(out)).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12)))


def test_the_snapshot_in_the_hub_cache_by_name(tmp_path, empty_hub_cache, flux_model, ae_model,
                                               picture):
    snapshot = hub_snapshot(empty_hub_cache, flux_model, ae_model)
    parts = find_parts("kontext-dev")
    assert (parts.transformer, parts.t5, parts.clip_tokenizer) == (
        snapshot / "transformer", snapshot / "text_encoder_2", snapshot / "tokenizer")
    by_name = edit(picture, tmp_path / "a.png", "--weights", "kontext-dev")
    by_folder = edit(picture, tmp_path / "b.png", "--weights", str(snapshot))
    assert np.array_equal(by_name, by_folder)
    # A partial download (no diffusers transformer weights) falls back to the BFL file.
    (snapshot / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    assert find_parts("kontext-dev").transformer == snapshot / "flux1-kontext-dev.safetensors"
    assert np.array_equal(edit(picture, tmp_path / "c.png", "--weights", "kontext-dev"), by_name)


def test_bfl_files_with_text_encoders_from_another_folder(tmp_path, bfl, picture):
    encoders = tmp_path / "encoders"
    write_tiny_text_encoders(encoders, CLIP, T5)
    out = edit(picture, tmp_path / "out.png", "--weights", str(bfl), "--text-encoders",
               str(encoders))
    assert out.shape == (64, 64, 3) and out.std() > 1  # a picture, not a flat fill


def test_comfyui_single_file_text_encoders_with_tokenizers_beside(tmp_path, bfl, picture):
    comfy, tokens = tmp_path / "comfy" / "text_encoders", tmp_path / "tokenizers"
    write_comfy_text_encoders(comfy, CLIP, T5, t5_form="fp8_scaled")
    write_tokenizers(tokens)
    parts = find_parts(bfl, comfy, tokens, fp8=True)
    assert (parts.t5.name, parts.clip.name) == ("t5xxl_fp8_e4m3fn_scaled.safetensors",
                                                "clip_l.safetensors")
    fp8 = edit(picture, tmp_path / "fp8.png", "--weights", str(bfl), "--text-encoders",
               str(comfy), "--tokenizers", str(tokens), "--weights-dtype", "fp8")
    wide = edit(picture, tmp_path / "wide.png", "--weights", str(bfl), "--text-encoders",
                str(comfy), "--tokenizers", str(tokens))
    assert psnr(fp8, wide) > 25  # measured 34-40 dB on these tiny random models
    # fp16 is preferred over fp8 for wide storage when both files are there.
    write_comfy_text_encoders(comfy, CLIP, T5, t5_form="fp16")
    assert find_parts(bfl, comfy, tokens).t5.name == "t5xxl_fp16.safetensors"
    assert find_parts(bfl, comfy, tokens, fp8=True).t5.name.startswith("t5xxl_fp8")


@pytest.mark.parametrize(
    ("setup", "part", "flag"),
    [
        ("none", "T5-XXL text encoder", "--text-encoders"),
        ("comfy", "T5 tokenizer", "--tokenizers"),
        ("no-ae", "autoencoder", "--weights"),
    ],
)
def test_a_missing_part_is_exit_2_naming_it_and_its_flag(tmp_path, bfl, picture, setup, part,
                                                         flag):
    options = ["--weights", str(bfl)]
    if setup == "comfy":
        write_comfy_text_encoders(tmp_path / "comfy", CLIP, T5)
        options += ["--text-encoders", str(tmp_path / "comfy")]
    if setup == "no-ae":
        (bfl / "ae.safetensors").unlink()
    r = runner.invoke(app, ["edit", str(picture), "x", "-o", str(tmp_path / "o.png"), *options])
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert f"no {part}" in message and flag in message, message
    assert str(bfl) in message  # where it looked
    assert not (tmp_path / "o.png").exists()


def test_unknown_hub_name_and_bad_flag_folders(tmp_path, bfl):
    with pytest.raises(WeightsError, match="is not in the Hugging Face cache"):
        find_parts("kontext-dev")
    with pytest.raises(WeightsError, match="--tokenizers .*: not a folder"):
        find_parts(bfl, None, tmp_path / "nowhere")


def test_info_lists_each_part_with_dtype_and_size(tmp_path, bfl):
    comfy, tokens = tmp_path / "comfy", tmp_path / "tokenizers"
    write_comfy_text_encoders(comfy, CLIP, T5, t5_form="fp8_scaled")
    write_tokenizers(tokens)
    r = runner.invoke(app, ["info", "--weights", str(bfl), "--text-encoders", str(comfy),
                            "--tokenizers", str(tokens), "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["part"]: row for row in json.loads(r.stdout)["parts"]}
    assert list(rows) == ["transformer", "ae", "t5", "clip", "t5_tokenizer", "clip_tokenizer"]
    assert rows["transformer"]["dtype"] == "float32"
    assert rows["transformer"]["bytes"] == 4 * rows["transformer"]["params"]
    assert rows["t5"]["dtype"] == "float8_e4m3fn (scaled)"
    assert rows["clip"]["dtype"] == "float16"
    assert rows["t5"]["path"].endswith("t5xxl_fp8_e4m3fn_scaled.safetensors")


# fp8 storage and fp8 checkpoints.


def flux_output(model, seed: int = 0) -> torch.Tensor:
    """One forward of a TINY_FLUX model on seeded inputs, in the model's dtype -> float32."""
    gen = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(1, 16, 16, generator=gen), torch.randn(1, 8, 32, generator=gen)
    img_ids, txt_ids = torch.zeros(1, 16, 3), torch.zeros(1, 8, 3)
    img_ids[0, :, 1], img_ids[0, :, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    args = (img, img_ids, txt, txt_ids, torch.tensor([0.5]), torch.randn(1, 24, generator=gen),
            torch.tensor([2.5]))
    dtype = model.img_in.weight.dtype
    return model(*(a.to(dtype) for a in args)).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_fp8_storage_is_close_to_fp32_and_halves_the_blocks(bfl, flux_model):
    file = bfl / "flux1-kontext-dev.safetensors"
    fp8 = load_transformer(file, fp8=True)
    linears = [m for m in fp8.double_blocks.modules() if isinstance(m, FP8Linear)]
    assert linears and all(m.weight.dtype == FP8 for m in linears)
    assert fp8.img_in.weight.dtype == torch.float32  # the small outer layers stay wide
    with torch.no_grad():
        error = rel(flux_output(fp8), flux_output(flux_model))
        assert error < 0.08, error  # measured 0.025-0.054 over four random models
    block = lambda m: sum(t.numel() * t.element_size()  # noqa: E731
                          for t in (*m.double_blocks.parameters(), *m.double_blocks.buffers()))
    assert block(fp8) < 0.3 * block(flux_model)  # 1 byte + scales against 4 bytes


def test_scaled_fp8_written_by_convert_loads_and_matches_unscaled(tmp_path, bfl, flux_model):
    scaled = convert_transformer(bfl, tmp_path / "scaled.safetensors", fp8=True)
    with SafetensorsFile(scaled) as f:
        assert f.dtype("double_blocks.0.img_attn.qkv.weight") == FP8
        assert f.shape("double_blocks.0.img_attn.qkv.scale_weight") == ()
        assert f.dtype("img_in.weight") == torch.bfloat16 and "scaled_fp8" in f
    # Unscaled: the same weights cast straight to e4m3 (fine for these small values).
    plain = {k: v.to(FP8) if k.startswith(("double_blocks", "single_blocks"))
             and k.endswith(".weight") and v.ndim == 2 else v.bfloat16()
             for k, v in flux_model.state_dict().items()}
    save_file(plain, str(tmp_path / "unscaled.safetensors"))
    with torch.no_grad():
        reference = flux_output(flux_model)
        outs = {}
        for name in ("scaled", "unscaled"):
            for fp8 in (True, False):
                model = load_transformer(tmp_path / f"{name}.safetensors", fp8=fp8,
                                         params=TINY_FLUX)
                outs[name, fp8] = flux_output(model)
                assert rel(outs[name, fp8], reference) < 0.08, (name, fp8)
        # As stored or multiplied out: the same numbers.
        assert torch.allclose(outs["scaled", True], outs["scaled", False], atol=1e-5)
        assert rel(outs["scaled", True], outs["unscaled", True]) < 0.08


def test_fp8_storage_on_the_embedded_model_edits_like_fp32():
    """On trained weights the cost is small: measured 44-73 dB against fp32 over four scenes
    (bf16 compute: 48-77 dB)."""
    import random

    from openkontext import Kontext
    from openkontext.world.render import render, to_pil
    from openkontext.world.scene import random_scene

    wide, fp8 = Kontext.load(), Kontext.load(weights_dtype="fp8")
    assert fp8.info()["weights_dtype"] == "fp8" and wide.info()["weights_dtype"] == "float32"
    for i in range(2):
        scene = to_pil(render(random_scene(random.Random(i), min_objects=2), 64))
        a, b = (np.asarray(k.edit(scene, "make the circle blue", seed=i).images[0]).astype(float)
                for k in (wide, fp8))
        assert psnr(a, b) > 35


def test_a_load_that_cannot_fit_is_refused_before_reading(tmp_path, bfl, picture, monkeypatch):
    import openkontext.weights.kontext_dev as kontext_dev

    encoders = tmp_path / "encoders"
    write_tiny_text_encoders(encoders, CLIP, T5)
    parts = find_parts(bfl, encoders)
    fp32 = kontext_dev.weights_bytes(parts, torch.float32, fp8=False)
    transformer = sum(t.numel() for t in load_transformer(bfl).state_dict().values())
    assert fp32 > 4 * transformer  # the transformer and the rest, four bytes each
    bf16 = kontext_dev.weights_bytes(parts, torch.bfloat16, fp8=False)
    assert bf16 == fp32 / 2  # fp8 saves one of two bytes on (nearly) every transformer weight
    assert bf16 - kontext_dev.weights_bytes(parts, torch.bfloat16, fp8=True) > 0.9 * transformer

    monkeypatch.setattr(kontext_dev, "available_bytes", lambda device: fp32 * 0.9)
    r = runner.invoke(app, ["edit", str(picture), "x", "-o", str(tmp_path / "o.png"),
                            "--weights", str(bfl), "--text-encoders", str(encoders)])
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert "the weights need" in message and "--dtype bf16" in message, message
    assert "--weights-dtype fp8" in message and not (tmp_path / "o.png").exists()
    # In bf16 they fit the same budget.
    edit(picture, tmp_path / "bf16.png", "--weights", str(bfl), "--text-encoders",
         str(encoders), "--dtype", "bf16")
