"""Checkpoint finding, key conversion, loading and saving with tiny random models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_AE, TINY_FLUX
from openkontext.model import AutoEncoder, AutoEncoderParams, Flux, FluxParams
from openkontext.weights import (
    CheckpointFiles,
    WeightsError,
    ae_bfl_to_diffusers,
    ae_diffusers_to_bfl,
    ae_params_from_diffusers_config,
    ae_params_to_diffusers_config,
    default_axes_dim,
    find_checkpoint,
    flux_bfl_to_diffusers,
    flux_diffusers_to_bfl,
    flux_params_from_diffusers_config,
    flux_params_to_diffusers_config,
    infer_ae_params,
    infer_flux_params,
    load_autoencoder,
    load_model,
    load_transformer,
    save_model,
)
from tiny_text import write_tiny_text_encoders


def assert_same_tensors(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


# 1. Conversion between layouts.


def test_transformer_conversion_round_trips_exactly(flux_model):
    bfl = flux_model.state_dict()
    diffusers = flux_bfl_to_diffusers(bfl)
    assert len(diffusers) > len(bfl)  # qkv and linear1 are split
    assert_same_tensors(flux_diffusers_to_bfl(diffusers), bfl)
    assert_same_tensors(flux_bfl_to_diffusers(flux_diffusers_to_bfl(diffusers)), diffusers)


def test_transformer_conversion_facts(flux_model):
    bfl, h = flux_model.state_dict(), TINY_FLUX.hidden_size
    d = flux_bfl_to_diffusers(bfl)
    qkv = bfl["double_blocks.1.txt_attn.qkv.weight"]
    assert torch.equal(d["transformer_blocks.1.attn.add_k_proj.weight"], qkv[h : 2 * h])
    linear1 = bfl["single_blocks.0.linear1.bias"]
    assert torch.equal(d["single_transformer_blocks.0.attn.to_v.bias"], linear1[2 * h : 3 * h])
    assert torch.equal(d["single_transformer_blocks.0.proj_mlp.bias"], linear1[3 * h :])
    # BFL's final adaLN is (shift, scale); diffusers' is (scale, shift).
    shift, scale = bfl["final_layer.adaLN_modulation.1.weight"].chunk(2)
    assert torch.equal(d["norm_out.linear.weight"], torch.cat((scale, shift)))
    assert torch.equal(d["transformer_blocks.0.attn.norm_added_q.weight"],
                       bfl["double_blocks.0.txt_attn.norm.query_norm.scale"])


def test_autoencoder_conversion_round_trips_exactly(ae_model):
    bfl = ae_model.state_dict()
    d = ae_bfl_to_diffusers(bfl)
    assert_same_tensors(ae_diffusers_to_bfl(d), bfl)
    assert_same_tensors(ae_bfl_to_diffusers(ae_diffusers_to_bfl(d)), d)
    # Decoder levels are numbered from the other end; attention 1x1 convs become linears.
    assert torch.equal(d["decoder.up_blocks.0.upsamplers.0.conv.weight"],
                       bfl["decoder.up.3.upsample.conv.weight"])
    assert torch.equal(d["decoder.up_blocks.3.resnets.0.conv_shortcut.bias"],
                       bfl["decoder.up.0.block.0.nin_shortcut.bias"])
    assert "decoder.up_blocks.3.upsamplers.0.conv.weight" not in d
    assert d["encoder.mid_block.attentions.0.to_out.0.weight"].shape == (64, 64)


def test_params_survive_diffusers_config():
    flux_config = flux_params_to_diffusers_config(TINY_FLUX)
    assert flux_params_from_diffusers_config(flux_config) == TINY_FLUX
    assert ae_params_from_diffusers_config(ae_params_to_diffusers_config(TINY_AE)) == TINY_AE
    assert flux_params_from_diffusers_config({"guidance_embeds": True}) == FluxParams()


def test_real_kontext_shapes_infer_to_default_params():
    with torch.device("meta"):
        flux, ae = Flux(FluxParams()), AutoEncoder(AutoEncoderParams())
    assert infer_flux_params({k: v.shape for k, v in flux.state_dict().items()}) == FluxParams()
    assert infer_ae_params({k: v.shape for k, v in ae.state_dict().items()}) == AutoEncoderParams()
    assert default_axes_dim(128) == (16, 56, 56)
    assert default_axes_dim(64) == (8, 28, 28)


# 2. Saving and loading.


@pytest.mark.parametrize("layout", ["bfl", "diffusers"])
def test_save_then_load_gives_the_same_model(tmp_path, flux_model, ae_model, layout):
    name = "model.safetensors" if layout == "bfl" else "model"
    for model, load in ((flux_model, load_transformer), (ae_model, load_autoencoder)):
        path = save_model(model, tmp_path / type(model).__name__ / name, layout=layout)
        loaded = load(path)
        assert loaded.params == model.params and not loaded.training
        assert_same_tensors(loaded.state_dict(), model.state_dict())


def test_load_casts_to_the_requested_dtype(tmp_path, flux_model):
    path = save_model(flux_model, tmp_path / "flux.safetensors")
    for dtype in (torch.bfloat16, torch.float16):
        loaded = load_transformer(path, dtype=dtype)
        expected = {k: v.to(dtype) for k, v in flux_model.state_dict().items()}
        assert_same_tensors(loaded.state_dict(), expected)
        assert all(p.device.type == "cpu" for p in loaded.parameters())
    with pytest.raises(ValueError, match="dtype"):
        load_transformer(path, dtype=torch.int8)


def test_file_without_metadata_loads_with_inferred_params(tmp_path, flux_model):
    path = tmp_path / "flux1-kontext-dev.safetensors"
    save_file(flux_model.state_dict(), str(path))
    loaded = load_transformer(path)
    # RoPE axes are not stored in weights: inferred as FLUX's proportions, unless given.
    assert loaded.params == replace(TINY_FLUX, axes_dim=(2, 8, 6))
    assert_same_tensors(loaded.state_dict(), flux_model.state_dict())
    assert load_transformer(path, params=TINY_FLUX).params == TINY_FLUX


def test_sharded_diffusers_folder_loads(tmp_path, flux_model):
    folder = save_model(flux_model, tmp_path / "transformer", layout="diffusers")
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    keys, weight_map = sorted(state), {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        name = f"diffusion_pytorch_model-0000{n}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_tensors(load_transformer(folder).state_dict(), flux_model.state_dict())

    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="00002-of-00002.safetensors: file not found"):
        load_transformer(folder)


def test_diffusers_named_single_file_loads(tmp_path, flux_model):
    path = tmp_path / "kontext-diffusers-names.safetensors"
    save_file(flux_bfl_to_diffusers(flux_model.state_dict()), str(path))
    loaded = load_transformer(path, params=TINY_FLUX)
    assert_same_tensors(loaded.state_dict(), flux_model.state_dict())


# 3. Finding the pieces.


def test_find_checkpoint_in_every_layout(tmp_path, flux_model, ae_model):
    bfl = tmp_path / "bfl"
    save_model(flux_model, bfl / "flux1-kontext-dev.safetensors")
    save_model(ae_model, bfl / "ae.safetensors")
    expected = CheckpointFiles("bfl", bfl / "flux1-kontext-dev.safetensors", bfl / "ae.safetensors")
    assert find_checkpoint(bfl) == expected
    assert find_checkpoint(bfl / "flux1-kontext-dev.safetensors") == expected
    assert_same_tensors(load_autoencoder(bfl).state_dict(), ae_model.state_dict())

    other = tmp_path / "other"
    save_model(flux_model, other / "my-finetune.safetensors")
    save_model(ae_model, other / "ae.safetensors")
    assert find_checkpoint(other).transformer == other / "my-finetune.safetensors"
    save_model(flux_model, other / "second.safetensors")
    with pytest.raises(WeightsError, match="several transformer files"):
        find_checkpoint(other)

    root = tmp_path / "diffusers"
    save_model(flux_model, root / "transformer", layout="diffusers")
    save_model(ae_model, root / "vae", layout="diffusers")
    for name in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        (root / name).mkdir()
    files = find_checkpoint(root)
    assert (files.layout, files.transformer, files.ae) == ("diffusers", root / "transformer",
                                                           root / "vae")
    assert files.text_encoder_2 == root / "text_encoder_2" and files.tokenizer == root / "tokenizer"
    assert_same_tensors(load_transformer(root).state_dict(), flux_model.state_dict())

    with pytest.raises(WeightsError, match="no flux1-kontext-dev.safetensors"):
        find_checkpoint(tmp_path / "diffusers" / "tokenizer")


# 4. Clear errors that name the file and the first bad tensor.


@pytest.fixture
def bfl_file(tmp_path, flux_model):
    return save_model(flux_model, tmp_path / "flux.safetensors")


def rewrite(path, change) -> None:
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors: no such file"):
        load_transformer(tmp_path / "nope.safetensors")


def test_truncated_and_corrupt_files(bfl_file):
    data = bfl_file.read_bytes()
    bfl_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"flux\.safetensors: not a readable safetensors file"):
        load_transformer(bfl_file)
    bfl_file.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"flux\.safetensors: not a readable safetensors file"):
        load_transformer(bfl_file)


def test_missing_tensor(bfl_file):
    rewrite(bfl_file, lambda s: s.pop("double_blocks.1.txt_mlp.2.bias"))
    message = r"flux\.safetensors: missing tensor 'double_blocks\.1\.txt_mlp\.2\.bias'"
    with pytest.raises(WeightsError, match=message):
        load_transformer(bfl_file, params=TINY_FLUX)


def test_missing_tensor_in_diffusers_folder_names_the_split_part(tmp_path, flux_model):
    folder = save_model(flux_model, tmp_path / "transformer", layout="diffusers")
    rewrite(folder / "diffusion_pytorch_model.safetensors",
            lambda s: s.pop("transformer_blocks.1.attn.add_k_proj.weight"))
    with pytest.raises(WeightsError, match=r"transformer: missing tensor "
                       r"'transformer_blocks\.1\.attn\.add_k_proj\.weight' \(part of "
                       r"'double_blocks\.1\.txt_attn\.qkv\.weight'\)"):
        load_transformer(folder)


def test_unexpected_tensor(bfl_file):
    rewrite(bfl_file, lambda s: s.update({"lora_A.weight": torch.zeros(2)}))
    message = r"flux\.safetensors: unexpected tensor 'lora_A\.weight'"
    with pytest.raises(WeightsError, match=message):
        load_transformer(bfl_file, params=TINY_FLUX)


def test_shape_mismatch(bfl_file):
    rewrite(bfl_file, lambda s: s.update({"txt_in.weight": torch.zeros(32, 40)}))
    with pytest.raises(WeightsError, match=r"flux\.safetensors: tensor 'txt_in\.weight' has shape "
                       r"\[32, 40\], expected \[32, 32\]"):
        load_transformer(bfl_file, params=TINY_FLUX)


def test_wrong_kind_of_checkpoint(tmp_path, ae_model, bfl_file):
    ae = save_model(ae_model, tmp_path / "ae.safetensors")
    with pytest.raises(WeightsError, match=r"ae\.safetensors: tensor 'img_in\.weight' is missing"):
        load_transformer(ae)
    with pytest.raises(WeightsError, match=r"flux\.safetensors: missing tensor 'encoder\.conv_in"):
        load_autoencoder(bfl_file, params=TINY_AE)


# 5. The whole model for the pipeline.


def test_load_model_from_a_diffusers_folder_runs_an_edit(tmp_path, flux_model, ae_model):
    from openkontext.sampling import run_tensors

    root = tmp_path / "kontext"
    save_model(flux_model, root / "transformer", layout="diffusers")
    save_model(ae_model, root / "vae", layout="diffusers")
    with pytest.raises(WeightsError, match=r"no T5-XXL text encoder .* pass --text-encoders"):
        load_model(root)
    write_tiny_text_encoders(root, TINY_FLUX.vec_in_dim, TINY_FLUX.context_in_dim)
    model = load_model(root)
    assert (model.preset.name, model.preset.flux, model.preset.ae) == ("kontext-dev", TINY_FLUX,
                                                                       TINY_AE)
    assert_same_tensors(model.flux.state_dict(), flux_model.state_dict())
    model.text.max_length = 16  # T5 pads to 512 by default; the test needs no more
    reference = torch.rand(1, 3, 32, 48) * 2 - 1
    images = run_tensors(model, ["make it red"], [7], 32, 48, 2, 2.5, [reference])
    again = run_tensors(model, ["make it red"], [7], 32, 48, 2, 2.5, [reference])
    other_prompt = run_tensors(model, ["make it blue"], [7], 32, 48, 2, 2.5, [reference])
    assert images.shape == (1, 3, 32, 48) and torch.equal(images, again)
    assert not torch.equal(images, other_prompt)  # the text encoders are wired in


def test_load_model_random_embedded_and_missing(tmp_path, monkeypatch):
    import openkontext.weights as weights_module

    model = load_model("random", dtype=torch.bfloat16)
    assert model.preset.name == "mini" and model.dtype == torch.bfloat16
    assert {p.dtype for p in model.flux.parameters()} == {torch.bfloat16}
    assert load_model(None).preset.name == "mini-fine"  # the shipped export
    monkeypatch.setattr(weights_module, "EMBEDDED_DIR", tmp_path)
    with pytest.raises(WeightsError, match="no embedded mini weights"):
        load_model(None)
    with pytest.raises(WeightsError, match="nope: no such file"):
        load_model(tmp_path / "nope")
