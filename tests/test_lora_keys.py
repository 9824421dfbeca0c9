"""LoRA files in every convention, read by `weights.lora.load_lora`, against diffusers.

A tiny random diffusers `FluxTransformer2DModel` and our `Flux` hold the same weights; a random
LoRA file in each convention goes into diffusers the way `FluxKontextPipeline.load_lora_weights`
takes it and into ours with `load_lora` + `applied`, and the velocities must agree (fp32, 1e-5).

Where diffusers cannot load a file on a tiny model (its kohya, fal and BFL converters hard-code
FLUX.1's 19/38 blocks and 3072 width, and its kohya path drops the embedders' and final layer's
keys), the reference is the dense update `alpha / rank * up @ down` added to our weights by
name, and full-size rank-1 files check our keys against diffusers' converters factor by factor.
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from diffusers.loaders.lora_conversion_utils import (
    _convert_fal_kontext_lora_to_diffusers,
    _convert_kohya_flux_lora_to_diffusers,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from conftest import TINY_FLUX, randomise_
from openkontext.model import Flux, FluxParams
from openkontext.model.fp8 import FP8_MAX, FP8Linear, dequantize, quantize_linears_
from openkontext.model.lora import Lora, LoraDelta, applied, check_fits, fuse_, linear_shapes
from openkontext.packing import image_ids
from openkontext.weights import flux_diffusers_to_bfl, flux_params_to_diffusers_config
from openkontext.weights.files import FP8_PARTS
from openkontext.weights.lora import load_lora, save_lora_peft

ATOL = 1e-5
CONFIG = {k: v for k, v in flux_params_to_diffusers_config(TINY_FLUX).items() if k[0] != "_"}

# diffusers names: fused parts (q/k/v, the single blocks' mlp), modulations, embedders, final.
PEFT_LAYERS = [
    "x_embedder", "context_embedder", "time_text_embed.timestep_embedder.linear_1",
    "time_text_embed.guidance_embedder.linear_2", "time_text_embed.text_embedder.linear_1",
    *(f"transformer_blocks.{i}.{m}" for i in (0, 1) for m in (
        "norm1.linear", "norm1_context.linear", "attn.to_q", "attn.to_k", "attn.to_v",
        "attn.add_q_proj", "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.2")),
    *(f"single_transformer_blocks.{i}.{m}" for i in (0, 1) for m in (
        "norm.linear", "attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out")),
    "norm_out.linear", "proj_out",
]
# BFL names diffusers can take from a kohya file on a tiny model, and those it cannot.
KOHYA_BLOCKS = [
    *(f"double_blocks.{i}.{m}" for i in (0, 1) for m in (
        "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2", "img_mod.lin",
        "txt_attn.qkv", "txt_mlp.0", "txt_mod.lin")),
    *(f"single_blocks.{i}.{m}" for i in (0, 1) for m in ("linear2", "modulation.lin")),
]
BFL_REST = ["single_blocks.0.linear1", "single_blocks.1.linear1", "img_in", "txt_in",
            "time_in.in_layer", "vector_in.out_layer", "guidance_in.in_layer",
            "final_layer.linear", "final_layer.adaLN_modulation.1"]


@pytest.fixture(scope="module")
def weights() -> dict:
    return randomise_(FluxTransformer2DModel(**CONFIG), seed=10).state_dict()


def theirs(weights) -> FluxTransformer2DModel:
    model = FluxTransformer2DModel(**CONFIG)
    model.load_state_dict(weights)
    return model.eval()


def ours(weights, params: FluxParams = TINY_FLUX) -> Flux:
    flux = Flux(params)
    flux.load_state_dict(flux_diffusers_to_bfl(weights))
    return flux.eval()


def loaded_in_diffusers(weights, path) -> FluxTransformer2DModel:
    model = theirs(weights)
    pipe = FluxKontextPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                               text_encoder=None, tokenizer=None, text_encoder_2=None,
                               tokenizer_2=None, transformer=model)
    pipe.load_lora_weights(str(path))
    return model


def _inputs():
    gen = torch.Generator().manual_seed(3)
    ids = torch.cat((image_ids(1, 8, 8)[0], image_ids(1, 6, 10, index=1)[0]))
    return {"img": torch.randn(2, ids.shape[0], 16, generator=gen), "img_ids": ids,
            "txt": torch.randn(2, 7, 32, generator=gen), "txt_ids": torch.zeros(7, 3),
            "t": torch.tensor([0.71, 0.23]), "y": torch.randn(2, 24, generator=gen),
            "guidance": torch.tensor([2.5, 4.0])}


X = _inputs()


@torch.no_grad()
def velocity(model) -> torch.Tensor:
    if isinstance(model, FluxTransformer2DModel):
        return model(hidden_states=X["img"], encoder_hidden_states=X["txt"],
                     pooled_projections=X["y"], timestep=X["t"], img_ids=X["img_ids"],
                     txt_ids=X["txt_ids"], guidance=X["guidance"], return_dict=False)[0]
    return model(img=X["img"], img_ids=X["img_ids"].expand(2, -1, -1), txt=X["txt"],
                 txt_ids=X["txt_ids"].expand(2, -1, -1), timesteps=X["t"], y=X["y"],
                 guidance=X["guidance"])


def with_lora(flux, path, strength=1.0) -> torch.Tensor:
    with applied(flux, [(load_lora(path), strength)]):
        return velocity(flux)


def factors(shape, rank, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) whose update is of the order of the layer's random weights."""
    out, inp = shape
    return (torch.randn(rank, inp, generator=gen) / inp**0.5,
            0.5 * torch.randn(out, rank, generator=gen) / rank**0.5)


def rank_of(name: str) -> int:
    return 2 if name.endswith(("to_k", "img_mlp.0")) else 3 if "proj_mlp" in name else 4


def alpha_of(name: str) -> float:
    return 16.0 if name.endswith(("to_v", "qkv")) else 1.5 if "mlp" in name else 8.0


def peft_file(weights, path, alphas: bool, prefix="transformer.") -> None:
    gen, sd = torch.Generator().manual_seed(20), {}
    for name in PEFT_LAYERS:
        down, up = factors(weights[name + ".weight"].shape, rank_of(name), gen)
        sd[f"{prefix}{name}.lora_A.weight"], sd[f"{prefix}{name}.lora_B.weight"] = down, up
        if alphas:
            sd[f"{prefix}{name}.alpha"] = torch.tensor(alpha_of(name))
    save_file(sd, str(path))


def bfl_file(flux, path, names, style: str, prefix="", alphas=True) -> dict:
    """A file on BFL names -> the dense updates. Styles: "kohya" (underscores, lora_down /
    lora_up), "comfy" (the same with dots), "peft" (dots, lora_A / lora_B)."""
    gen, sd, dense = torch.Generator().manual_seed(21), {}, {}
    shapes = {k.removesuffix(".weight"): v.shape for k, v in flux.state_dict().items()}
    for name in names:
        rank, alpha = rank_of(name), alpha_of(name) if alphas else None
        down, up = factors(shapes[name], rank, gen)
        key = prefix + (name.replace(".", "_") if style == "kohya" else name)
        a, b = ("lora_A", "lora_B") if style == "peft" else ("lora_down", "lora_up")
        sd[f"{key}.{a}.weight"], sd[f"{key}.{b}.weight"] = down, up
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(alpha)
        dense[name] = (alpha / rank if alpha else 1.0) * up @ down
    save_file(sd, str(path))
    return dense


def fused_by_hand(flux, dense) -> Flux:
    flux = copy.deepcopy(flux)
    with torch.no_grad():
        for name, update in dense.items():
            flux.get_submodule(name).weight += update
    return flux


# 1. Against diffusers' own loading.


@pytest.mark.parametrize("alphas", [False, True], ids=["no-alpha", "alpha-keys"])
def test_peft_file_matches_diffusers(weights, tmp_path, alphas):
    peft_file(weights, tmp_path / "a.safetensors", alphas)
    flux = ours(weights)
    expected = velocity(loaded_in_diffusers(weights, tmp_path / "a.safetensors"))
    got = with_lora(flux, tmp_path / "a.safetensors")
    assert (expected - velocity(flux)).abs().max() > 0.1  # the LoRA matters
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # The same file without the `transformer.` prefix (diffusers ignores it; we do not).
    peft_file(weights, tmp_path / "bare.safetensors", alphas, prefix="")
    assert torch.equal(with_lora(flux, tmp_path / "bare.safetensors"), got)


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha", "rslora"])
def test_diffusers_trainer_file_matches_diffusers(weights, tmp_path, rslora):
    """What train_dreambooth_lora_flux_kontext.py writes: PEFT's state dict and its LoraConfig
    in the `lora_adapter_metadata` header, here with an alpha and a rank pattern."""
    model = theirs(weights)
    model.add_adapter(LoraConfig(
        r=4, lora_alpha=6, use_rslora=rslora, rank_pattern={"proj_mlp": 2},
        alpha_pattern={"proj_mlp": 3}, target_modules=[
            "x_embedder", "linear_1", "to_q", "to_k", "to_v", "add_q_proj", "to_out.0",
            "to_add_out", "ff.net.0.proj", "ff_context.net.2", "norm1.linear", "norm.linear",
            "proj_mlp", "proj_out", "norm_out.linear"]))
    gen = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:  # lora_B starts at zero
                p.copy_(0.5 * torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    FluxKontextPipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=get_peft_model_state_dict(model),
        transformer_lora_adapter_metadata=model.peft_config["default"].to_dict())
    path = tmp_path / "pytorch_lora_weights.safetensors"
    expected = velocity(loaded_in_diffusers(weights, path))
    torch.testing.assert_close(velocity(model), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(with_lora(ours(weights), path), expected, atol=ATOL, rtol=0)


def test_kohya_file_matches_diffusers(weights, tmp_path):
    flux = ours(weights)
    bfl_file(flux, tmp_path / "k.safetensors", KOHYA_BLOCKS, "kohya", prefix="lora_unet_")
    expected = velocity(loaded_in_diffusers(weights, tmp_path / "k.safetensors"))
    assert (expected - velocity(flux)).abs().max() > 0.1
    torch.testing.assert_close(with_lora(flux, tmp_path / "k.safetensors"), expected,
                               atol=ATOL, rtol=0)


# 2. Against the dense update, for what diffusers cannot load on a tiny model.


@pytest.mark.parametrize("style, prefix, alphas", [
    ("kohya", "lora_unet_", True), ("comfy", "diffusion_model.", False),
    ("peft", "", False), ("peft", "base_model.model.", False), ("peft", "diffusion_model.", True),
])
def test_bfl_named_files_match_the_dense_update(weights, tmp_path, style, prefix, alphas):
    flux = ours(weights)
    dense = bfl_file(flux, tmp_path / "f.safetensors", KOHYA_BLOCKS + BFL_REST, style, prefix,
                     alphas)
    expected = velocity(fused_by_hand(flux, dense))
    # Factors against a dense sum: float32 rounding of two orders of summation on velocities
    # up to ~10 (measured 1.0e-5 absolute, 1.9e-6 relative), so 1e-5 relative as well.
    torch.testing.assert_close(with_lora(flux, tmp_path / "f.safetensors"), expected,
                               atol=ATOL, rtol=ATOL)


def test_kohya_alpha_zero_means_rank(tmp_path):
    save_file({"lora_unet_img_in.lora_down.weight": torch.ones(4, 16),
               "lora_unet_img_in.lora_up.weight": torch.ones(32, 4),
               "lora_unet_img_in.alpha": torch.tensor(0.0)}, str(tmp_path / "z.safetensors"))
    assert load_lora(tmp_path / "z.safetensors").deltas["img_in"][0].scale == 1.0


# 3. Full-size rank-1 files: our keys against diffusers' converters, factor by factor.


def full_size_file(style: str) -> dict:
    with torch.device("meta"):
        flux = Flux(FluxParams())  # FLUX.1's sizes, no memory
    shapes = {k.removesuffix(".weight"): v.shape for k, v in flux.state_dict().items()
              if k.endswith(".weight") and v.ndim == 2}
    gen, sd = torch.Generator().manual_seed(23), {}
    for name, (out, inp) in shapes.items():
        if style == "fal" and not name.startswith(("double_", "single_", "final_layer.linear")):
            continue  # fal's Kontext LoRAs: the blocks and the output layer
        down, up = torch.randn(1, inp, generator=gen), torch.randn(out, 1, generator=gen)
        if style == "fal":
            sd[f"base_model.model.{name}.lora_A.weight"] = down
            sd[f"base_model.model.{name}.lora_B.weight"] = up
        else:
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
            if not name.startswith("final_layer"):  # diffusers ignores the final layer's alpha
                sd[f"{key}.alpha"] = torch.tensor(0.5)
    return sd


@pytest.mark.parametrize("style", ["fal", "kohya"])
def test_full_size_keys_match_diffusers_converters(tmp_path, style):
    sd = full_size_file(style)
    save_file(sd, str(tmp_path / "full.safetensors"))
    convert = (_convert_fal_kontext_lora_to_diffusers if style == "fal"
               else _convert_kohya_flux_lora_to_diffusers)
    expected = {k if k.startswith("transformer.") else "transformer." + k: v
                for k, v in convert(dict(sd)).items()}
    save_lora_peft(load_lora(tmp_path / "full.safetensors"), tmp_path / "peft.safetensors")
    got = load_file(tmp_path / "peft.safetensors")
    assert sorted(got) == sorted(expected)
    gen = torch.Generator().manual_seed(24)
    for key in (k for k in expected if k.endswith("lora_A.weight")):
        probe = torch.randn(expected[key].shape[1], generator=gen)
        b = key.replace("lora_A", "lora_B")
        torch.testing.assert_close(got[b] @ (got[key] @ probe),
                                   expected[b] @ (expected[key] @ probe), atol=1e-4, rtol=1e-5)


# 4. Runtime adapters and fusing.


@pytest.fixture
def lora_path(weights, tmp_path):
    bfl_file(ours(weights), tmp_path / "l.safetensors", KOHYA_BLOCKS + BFL_REST, "kohya",
             "lora_unet_")
    return tmp_path / "l.safetensors"


def test_strength_zero_is_the_model(weights, lora_path):
    flux = ours(weights)
    assert torch.equal(with_lora(flux, lora_path, strength=0.0), velocity(flux))


def test_two_loras_at_once_equal_fusing_both(weights, tmp_path, lora_path):
    peft_file(weights, tmp_path / "p.safetensors", alphas=True)
    a, b = load_lora(lora_path), load_lora(tmp_path / "p.safetensors")
    flux = ours(weights)
    with applied(flux, [(a, 0.7), (b, -1.3)]):
        both = velocity(flux)
    fuse_(flux, a, 0.7)
    fuse_(flux, b, -1.3)
    # float32 rounding of factors against fused sums (measured 1.0e-5 where the value is 0.74)
    torch.testing.assert_close(both, velocity(flux), atol=ATOL, rtol=ATOL)


def test_fuse_then_unfuse_restores_the_weights(weights, lora_path):
    flux, lora = ours(weights), load_lora(lora_path)
    before = {k: v.clone() for k, v in flux.state_dict().items()}
    fuse_(flux, lora, 0.8)
    assert not torch.equal(flux.img_in.weight, before["img_in.weight"])
    fuse_(flux, lora, -0.8)
    for key, value in flux.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=1e-6, rtol=0)


def test_lora_on_fp8_storage(weights, lora_path):
    """Adapters on fp8 layers add what they add on float ones; fusing stores the sum again."""
    lora, fp8 = load_lora(lora_path), ours(weights)
    quantize_linears_(fp8, keep=lambda name: not name.startswith(FP8_PARTS))  # as --fp8 does
    dequantized = ours(weights)  # a float model holding the fp8 weights
    with torch.no_grad():
        for name, layer in fp8.named_modules():
            if isinstance(layer, FP8Linear):
                dequantized.get_submodule(name).weight.copy_(
                    dequantize(layer.weight, layer.weight_scale, torch.float32))
    got, same, float_ = (with_lora(m, lora_path) for m in (fp8, dequantized, ours(weights)))
    torch.testing.assert_close(got, same, atol=ATOL, rtol=ATOL)
    # Against the float model the base weights' e4m3 rounding dominates; this random tiny
    # model amplifies it (measured 0.43 with the LoRA, 0.82 without, on velocities up to 10.6).
    assert (got - float_).abs().max() < 0.6

    qkv = fp8.double_blocks[0].img_attn.qkv
    target = dequantize(qkv.weight, qkv.weight_scale, torch.float32) + sum(
        d.matrix() for d in lora.deltas["double_blocks.0.img_attn.qkv"])
    fuse_(fp8, lora)
    error = (dequantize(qkv.weight, qkv.weight_scale, torch.float32) - target).abs()
    # e4m3: half a step is 1/16 of a value, or 2^-10 of the row's scale among subnormals.
    bound = target.abs() / 16 + target.abs().amax(1, keepdim=True) / FP8_MAX * 2**-10
    assert error.max() > 0 and (error <= bound * 1.001).all()
    assert (velocity(fp8) - float_).abs().max() < 1.5  # measured 1.11


def test_lora_for_another_model_size_is_refused(weights, tmp_path):
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.ones(4, 32),
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.ones(96, 4)},
              str(tmp_path / "small.safetensors"))
    wider = FluxParams(in_channels=16, out_channels=16, vec_in_dim=24, context_in_dim=32,
                       hidden_size=48, num_heads=2, depth=2, depth_single_blocks=2,
                       axes_dim=(4, 10, 10), guidance_embed=True)
    lora = load_lora(tmp_path / "small.safetensors")
    shapes = r"qkv: down \[4, 32\], up \[96, 4\] for rows 0\.\.144 of a 144x48 layer"
    with pytest.raises(ValueError, match=r"double_blocks\.0\.img_attn\." + shapes), applied(
            Flux(wider), [(lora, 1.0)]):
        pass
    with pytest.raises(ValueError, match="does not fit double_blocks.0.img_attn.qkv"):
        fuse_(Flux(wider), lora)


def test_a_lora_is_checked_against_the_shapes_of_the_linear_layers(weights, lora_path):
    """What a server that holds no model checks a LoRA against: the same with adapters on."""
    flux = ours(weights)
    shapes = linear_shapes(flux)
    assert shapes["double_blocks.0.img_attn.qkv"] == (3 * TINY_FLUX.hidden_size,
                                                      TINY_FLUX.hidden_size)
    assert "double_blocks.0.img_attn.norm" not in shapes  # not linear
    with applied(flux, [(load_lora(lora_path), 1.0)]), applied(flux, [(load_lora(lora_path),
                                                                      0.5)]):
        assert linear_shapes(flux) == shapes  # under the adapters, not their `.base`
    check_fits(shapes, load_lora(lora_path))
    norm = Lora("norm", {"double_blocks.0.img_attn.norm": [LoraDelta(torch.ones(2, 8),
                                                                      torch.ones(8, 2))]})
    with pytest.raises(ValueError, match="img_attn.norm is no linear layer of this model"):
        check_fits(shapes, norm)


# 5. Keys that are not ours, and files that are not LoRAs.


def test_unknown_and_text_encoder_keys(weights, tmp_path):
    peft_file(weights, tmp_path / "p.safetensors", alphas=False)
    sd = load_file(tmp_path / "p.safetensors")
    extra = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 8),
             "text_encoder.text_model.encoder.layers.0.q_proj.lora_A.weight": torch.ones(2, 8),
             "transformer.transformer_blocks.0.attn.norm_q.weight": torch.ones(16),
             "transformer.x_embedder.lora_B.bias": torch.ones(32)}
    save_file({**sd, **extra}, str(tmp_path / "x.safetensors"))
    with pytest.warns(UserWarning) as caught:
        lora = load_lora(tmp_path / "x.safetensors")
    messages = [str(w.message) for w in caught]
    assert any("skipped 2 text-encoder keys" in m for m in messages)
    assert any("skipped 2 unknown keys: transformer.transformer_blocks.0.attn.norm_q.weight, "
               "transformer.x_embedder.lora_B.bias" in m for m in messages)
    assert sum(len(d) for d in lora.deltas.values()) == len(PEFT_LAYERS)
    with pytest.raises(ValueError, match="text-encoder key 'lora_te1_text_model"):
        load_lora(tmp_path / "x.safetensors", strict=True)
    save_file({k: v for k, v in {**sd, **extra}.items() if not k.startswith(("lora_te", "text"))},
              str(tmp_path / "y.safetensors"))
    with pytest.raises(ValueError, match="unknown key 'transformer.transformer_blocks.0.attn.nor"):
        load_lora(tmp_path / "y.safetensors", strict=True)


def test_files_without_a_usable_lora_are_refused(tmp_path):
    save_file({"lora_te1_x.lora_down.weight": torch.ones(2, 8)}, str(tmp_path / "te.safetensors"))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no LoRA key"):
        load_lora(tmp_path / "te.safetensors")
    save_file({"lora_unet_img_in.lokr_w1": torch.ones(2, 2),
               "lora_unet_img_in.lokr_w2": torch.ones(16, 8)}, str(tmp_path / "k.safetensors"))
    with pytest.raises(ValueError, match="LoKr is not supported"):
        load_lora(tmp_path / "k.safetensors")
    save_file({"transformer.x_embedder.lora_A.weight": torch.ones(2, 16)},
              str(tmp_path / "half.safetensors"))
    with pytest.raises(ValueError, match="no matching up"):
        load_lora(tmp_path / "half.safetensors")


# 6. Writing the diffusers convention.


def test_saved_peft_file_loads_back_and_in_diffusers(weights, tmp_path, lora_path):
    """A kohya LoRA with fused qkv / linear1 deltas and the final adaLN, written as PEFT."""
    flux = ours(weights)
    expected = with_lora(flux, lora_path)
    save_lora_peft(load_lora(lora_path), tmp_path / "out.safetensors")
    keys = load_file(tmp_path / "out.safetensors")
    a = "transformer.single_transformer_blocks.0.attn.{}.lora_A.weight"
    assert torch.equal(keys[a.format("to_q")], keys[a.format("to_v")])  # one down, shared
    assert not any("alpha" in k for k in keys)
    torch.testing.assert_close(with_lora(flux, tmp_path / "out.safetensors"), expected,
                               atol=ATOL, rtol=0)
    got = velocity(loaded_in_diffusers(weights, tmp_path / "out.safetensors"))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_deltas_across_diffusers_parts_cannot_be_saved(tmp_path):
    lora = Lora("odd", {"double_blocks.0.img_attn.qkv": [
        LoraDelta(torch.ones(2, 32), torch.ones(40, 2), rows=(16, 56))]})
    with pytest.raises(ValueError, match="does not cover whole parts"):
        save_lora_peft(lora, tmp_path / "odd.safetensors")
    assert not (tmp_path / "odd.safetensors").exists()
