"""Key names and params of the two published FLUX layouts, and conversion between them.

- **bfl**: the key names of the original FLUX code, which are exactly the state_dict keys of
  `Flux` and `AutoEncoder` (`flux1-kontext-dev.safetensors`, `ae.safetensors`).
- **diffusers**: q, k and v stored split, the single blocks' linear1 split into q/k/v/mlp, the
  decoder's levels numbered in the opposite order, and the final adaLN stored as (scale, shift).

One table per model (`_FLUX_RULES`, `_AE_RULES`) names every tensor in both layouts; loading,
conversion in both directions and shape checks all read the same table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from openkontext.model.autoencoder import AutoEncoder, AutoEncoderParams
from openkontext.model.flux import Flux, FluxParams

Layout = Literal["bfl", "diffusers"]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BFL_TRANSFORMER_NAME = "flux1-kontext-dev.safetensors"
BFL_AE_NAME = "ae.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
_META_KEY = {Flux: "openkontext.flux_params", AutoEncoder: "openkontext.ae_params"}


class WeightsError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model it should fill."""


# ---------------------------------------------------------------------------------------------
# Key tables. Templates use {i} block, {m} resnet, {u} decoder level (numbered from the other
# end in diffusers), {s} encoder|decoder, {w} weight|bias.

COPY, CAT, SWAP, CONV1X1 = "copy", "cat", "swap", "conv1x1"


class Rule(NamedTuple):
    bfl: str
    diffusers: tuple[str, ...]  # one name, or the parts concatenated along dim 0 (CAT)
    op: str


def _r(bfl: str, *diffusers: str, op: str = COPY) -> Rule:
    """A rule for a weight and bias pair."""
    return Rule(bfl + ".{w}", tuple(d + ".{w}" for d in diffusers), op)


def _qk_norms(bfl: str, diffusers: str, added: str = "") -> tuple[Rule, ...]:
    return tuple(
        Rule(f"{bfl}.norm.{n}_norm.scale", (f"{diffusers}.attn.norm_{added}{n[0]}.weight",), COPY)
        for n in ("query", "key")
    )


_D, _S = "transformer_blocks.{i}", "single_transformer_blocks.{i}"
_FLUX_RULES: tuple[Rule, ...] = (
    _r("img_in", "x_embedder"),
    _r("txt_in", "context_embedder"),
    *(
        _r(f"{bfl}.{layer}", f"time_text_embed.{diffusers}.linear_{n}")
        for bfl, diffusers in (
            ("time_in", "timestep_embedder"),
            ("guidance_in", "guidance_embedder"),
            ("vector_in", "text_embedder"),
        )
        for n, layer in ((1, "in_layer"), (2, "out_layer"))
    ),
    _r("double_blocks.{i}.img_mod.lin", _D + ".norm1.linear"),
    _r("double_blocks.{i}.txt_mod.lin", _D + ".norm1_context.linear"),
    _r("double_blocks.{i}.img_attn.qkv", *(f"{_D}.attn.to_{c}" for c in "qkv"), op=CAT),
    _r("double_blocks.{i}.txt_attn.qkv", *(f"{_D}.attn.add_{c}_proj" for c in "qkv"), op=CAT),
    *_qk_norms("double_blocks.{i}.img_attn", _D),
    *_qk_norms("double_blocks.{i}.txt_attn", _D, added="added_"),
    _r("double_blocks.{i}.img_attn.proj", _D + ".attn.to_out.0"),
    _r("double_blocks.{i}.txt_attn.proj", _D + ".attn.to_add_out"),
    _r("double_blocks.{i}.img_mlp.0", _D + ".ff.net.0.proj"),
    _r("double_blocks.{i}.img_mlp.2", _D + ".ff.net.2"),
    _r("double_blocks.{i}.txt_mlp.0", _D + ".ff_context.net.0.proj"),
    _r("double_blocks.{i}.txt_mlp.2", _D + ".ff_context.net.2"),
    _r("single_blocks.{i}.modulation.lin", _S + ".norm.linear"),
    _r(
        "single_blocks.{i}.linear1", *(f"{_S}.attn.to_{c}" for c in "qkv"), _S + ".proj_mlp", op=CAT
    ),
    _r("single_blocks.{i}.linear2", _S + ".proj_out"),
    *_qk_norms("single_blocks.{i}", _S),
    _r("final_layer.linear", "proj_out"),
    _r("final_layer.adaLN_modulation.1", "norm_out.linear", op=SWAP),  # (shift, scale) order
)

_AE_RULES: tuple[Rule, ...] = (
    *(
        _r(f"{bfl}.{field}", f"{diffusers}.{field.replace('nin_shortcut', 'conv_shortcut')}")
        for bfl, diffusers in (
            ("encoder.down.{i}.block.{m}", "encoder.down_blocks.{i}.resnets.{m}"),
            ("decoder.up.{u}.block.{m}", "decoder.up_blocks.{u}.resnets.{m}"),
            ("{s}.mid.block_1", "{s}.mid_block.resnets.0"),
            ("{s}.mid.block_2", "{s}.mid_block.resnets.1"),
        )
        for field in ("norm1", "conv1", "norm2", "conv2", "nin_shortcut")
    ),
    _r("encoder.down.{i}.downsample.conv", "encoder.down_blocks.{i}.downsamplers.0.conv"),
    _r("decoder.up.{u}.upsample.conv", "decoder.up_blocks.{u}.upsamplers.0.conv"),
    _r("{s}.mid.attn_1.norm", "{s}.mid_block.attentions.0.group_norm"),
    *(
        _r(f"{{s}}.mid.attn_1.{bfl}", f"{{s}}.mid_block.attentions.0.{diffusers}", op=CONV1X1)
        for bfl, diffusers in (
            ("q", "to_q"),
            ("k", "to_k"),
            ("v", "to_v"),
            ("proj_out", "to_out.0"),
        )
    ),
    _r("{s}.norm_out", "{s}.conv_norm_out"),
    _r("{s}.conv_in", "{s}.conv_in"),
    _r("{s}.conv_out", "{s}.conv_out"),
)

_FIELDS = {"i": r"\d+", "m": r"\d+", "u": r"\d+", "s": "encoder|decoder", "w": "weight|bias"}


@cache
def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # literal, field, literal, field, ...
    return re.compile(
        "".join(f"(?P<{p}>{_FIELDS[p]})" if j % 2 else re.escape(p) for j, p in enumerate(parts))
    )


def _fill(template: str, fields: dict[str, str], levels: int) -> str:
    """Fill a template with fields matched on the other layout's side."""
    if "u" in fields:
        fields = {**fields, "u": str(levels - 1 - int(fields["u"]))}
    return template.format(**fields)


def _to_diffusers_names(key: str, rules: Sequence[Rule], levels: int) -> tuple[tuple, str]:
    for rule in rules:
        if m := _pattern(rule.bfl).fullmatch(key):
            return tuple(_fill(t, m.groupdict(), levels) for t in rule.diffusers), rule.op
    raise WeightsError(f"no diffusers name is known for tensor {key!r}")


def _to_bfl_name(key: str, rules: Sequence[Rule], levels: int) -> str | None:
    for rule in rules:
        for template in rule.diffusers:
            if m := _pattern(template).fullmatch(key):
                return _fill(rule.bfl, m.groupdict(), levels)
    return None


def _split(t: Tensor, op: str, n: int, hidden: int) -> list[Tensor]:
    """One BFL tensor -> its n diffusers tensors."""
    if op == CAT:
        sizes = [t.shape[0] // 3] * 3 if n == 3 else [hidden] * 3 + [t.shape[0] - 3 * hidden]
        return [part.clone() for part in t.split(sizes)]
    if op == CONV1X1 and t.ndim == 4:
        return [t[:, :, 0, 0]]
    return [_join([t], op)]  # SWAP is its own inverse; COPY


def _join(parts: list[Tensor], op: str) -> Tensor:
    """The diffusers tensors of one BFL tensor -> that tensor."""
    if op == CAT:
        return torch.cat(parts)
    t = parts[0]
    if op == SWAP:
        first, second = t.chunk(2)
        return torch.cat((second, first))
    return t[:, :, None, None] if op == CONV1X1 and t.ndim == 2 else t


def _levels(keys) -> int:
    """Number of autoencoder resolution levels (0 for a transformer)."""
    return max(_count(keys, "encoder.down."), _count(keys, "encoder.down_blocks."))


def _to_diffusers(sd: Mapping[str, Tensor], rules: Sequence[Rule], hidden: int) -> dict:
    levels, out = _levels(sd), {}
    for key, tensor in sd.items():
        names, op = _to_diffusers_names(key, rules, levels)
        out.update(zip(names, _split(tensor, op, len(names), hidden), strict=True))
    return out


def _to_bfl(sd: Mapping[str, Tensor], rules: Sequence[Rule]) -> dict[str, Tensor]:
    levels, out = _levels(sd), {}
    for key in sd:
        bfl = _to_bfl_name(key, rules, levels)
        if bfl is None:
            raise WeightsError(f"tensor {key!r} has no BFL name")
        if bfl not in out:
            names, op = _to_diffusers_names(bfl, rules, levels)
            if missing := [n for n in names if n not in sd]:
                raise WeightsError(f"tensor {missing[0]!r} is missing (needed for {bfl!r})")
            out[bfl] = _join([sd[n] for n in names], op)
    return out


def flux_bfl_to_diffusers(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Transformer state dict, BFL names -> diffusers `FluxTransformer2DModel` names."""
    if "img_in.weight" not in sd:
        raise WeightsError("tensor 'img_in.weight' is missing: not a BFL transformer state dict")
    return _to_diffusers(sd, _FLUX_RULES, hidden=sd["img_in.weight"].shape[0])


def flux_diffusers_to_bfl(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Transformer state dict, diffusers names -> BFL names (= `Flux` state_dict keys)."""
    return _to_bfl(sd, _FLUX_RULES)


def ae_bfl_to_diffusers(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Autoencoder state dict, BFL names -> diffusers `AutoencoderKL` names."""
    return _to_diffusers(sd, _AE_RULES, hidden=0)


def ae_diffusers_to_bfl(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Autoencoder state dict, diffusers names -> BFL names (= `AutoEncoder` state_dict keys)."""
    return _to_bfl(sd, _AE_RULES)


# ---------------------------------------------------------------------------------------------
# Params: from diffusers config.json, to it, and inferred from BFL tensor shapes.


def flux_params_from_diffusers_config(cfg: Mapping) -> FluxParams:
    """`FluxTransformer2DModel` config (missing fields take diffusers' defaults) -> FluxParams."""
    if cfg.get("patch_size", 1) != 1:
        raise WeightsError(f"patch_size {cfg['patch_size']} is not supported (FLUX uses 1)")
    heads, in_channels = cfg.get("num_attention_heads", 24), cfg.get("in_channels", 64)
    return FluxParams(
        in_channels=in_channels,
        out_channels=cfg.get("out_channels") or in_channels,
        vec_in_dim=cfg.get("pooled_projection_dim", 768),
        context_in_dim=cfg.get("joint_attention_dim", 4096),
        hidden_size=heads * cfg.get("attention_head_dim", 128),
        num_heads=heads,
        depth=cfg.get("num_layers", 19),
        depth_single_blocks=cfg.get("num_single_layers", 38),
        axes_dim=tuple(cfg.get("axes_dims_rope", (16, 56, 56))),
        guidance_embed=bool(cfg.get("guidance_embeds", False)),
    )


def flux_params_to_diffusers_config(p: FluxParams) -> dict:
    if p.mlp_ratio != 4.0 or p.theta != 10_000 or not p.qkv_bias:
        raise WeightsError(
            "diffusers' FluxTransformer2DModel fixes mlp_ratio 4, theta 10000 and "
            f"qkv biases; these params cannot be written in that layout: {p}"
        )
    return {
        "_class_name": "FluxTransformer2DModel",
        "patch_size": 1,
        "in_channels": p.in_channels,
        "out_channels": p.out_channels,
        "num_layers": p.depth,
        "num_single_layers": p.depth_single_blocks,
        "attention_head_dim": p.hidden_size // p.num_heads,
        "num_attention_heads": p.num_heads,
        "joint_attention_dim": p.context_in_dim,
        "pooled_projection_dim": p.vec_in_dim,
        "guidance_embeds": p.guidance_embed,
        "axes_dims_rope": list(p.axes_dim),
    }


def ae_params_from_diffusers_config(cfg: Mapping) -> AutoEncoderParams:
    """`AutoencoderKL` config -> AutoEncoderParams; refuses VAEs that are not FLUX-shaped."""
    blocks = cfg.get("block_out_channels", (64,))
    if cfg.get("use_quant_conv", True) or cfg.get("use_post_quant_conv", True):
        raise WeightsError("this VAE has quant_conv layers: not a FLUX autoencoder")
    if (
        not cfg.get("mid_block_add_attention", True)
        or any(b % blocks[0] for b in blocks)
        or cfg.get("act_fn", "silu") != "silu"
    ):
        raise WeightsError("this VAE's blocks differ from the FLUX autoencoder's")
    return AutoEncoderParams(
        resolution=cfg.get("sample_size", 256),
        in_channels=cfg.get("in_channels", 3),
        ch=blocks[0],
        out_ch=cfg.get("out_channels", 3),
        ch_mult=tuple(b // blocks[0] for b in blocks),
        num_res_blocks=cfg.get("layers_per_block", 1),
        z_channels=cfg.get("latent_channels", 4),
        scale_factor=cfg.get("scaling_factor", 0.18215),
        shift_factor=cfg.get("shift_factor") or 0.0,
        norm_groups=cfg.get("norm_num_groups", 32),
    )


def ae_params_to_diffusers_config(p: AutoEncoderParams) -> dict:
    n = len(p.ch_mult)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": p.in_channels,
        "out_channels": p.out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [p.ch * m for m in p.ch_mult],
        "layers_per_block": p.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": p.z_channels,
        "norm_num_groups": p.norm_groups,
        "sample_size": p.resolution,
        "scaling_factor": p.scale_factor,
        "shift_factor": p.shift_factor,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": True,
        "force_upcast": True,
    }


def _need(shapes: Mapping[str, Sequence[int]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise WeightsError(f"tensor {key!r} is missing, so the model size cannot be inferred")
    return tuple(shapes[key])


def _count(keys, prefix: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def default_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """RoPE channels per (index, row, col) axis when a checkpoint does not say: an eighth for the
    index axis, the rest shared by rows and columns, all even. 128 -> (16, 56, 56) as in FLUX."""
    index = max(2, 2 * round(head_dim / 16))
    row = 2 * -(-(head_dim - index) // 4)
    return index, row, head_dim - index - row


def infer_flux_params(shapes: Mapping[str, Sequence[int]]) -> FluxParams:
    """FluxParams from BFL tensor names and shapes. Not stored in weights, so taken as FLUX's:
    theta 10000 and `default_axes_dim`."""
    hidden, in_channels = _need(shapes, "img_in.weight")
    depth, single = _count(shapes, "double_blocks."), _count(shapes, "single_blocks.")
    if depth:
        head_dim = _need(shapes, "double_blocks.0.img_attn.norm.query_norm.scale")[0]
        mlp_hidden = _need(shapes, "double_blocks.0.img_mlp.0.weight")[0]
    else:
        head_dim = _need(shapes, "single_blocks.0.norm.query_norm.scale")[0]
        mlp_hidden = _need(shapes, "single_blocks.0.linear1.weight")[0] - 3 * hidden
    try:
        return FluxParams(
            in_channels=in_channels,
            out_channels=_need(shapes, "final_layer.linear.weight")[0],
            vec_in_dim=_need(shapes, "vector_in.in_layer.weight")[1],
            context_in_dim=_need(shapes, "txt_in.weight")[1],
            hidden_size=hidden,
            mlp_ratio=mlp_hidden / hidden,
            num_heads=hidden // head_dim,
            depth=depth,
            depth_single_blocks=single,
            axes_dim=default_axes_dim(head_dim),
            qkv_bias=depth == 0 or "double_blocks.0.img_attn.qkv.bias" in shapes,
            guidance_embed="guidance_in.in_layer.weight" in shapes,
        )
    except ValueError as e:
        raise WeightsError(f"inconsistent transformer shapes: {e}") from None


def infer_ae_params(shapes: Mapping[str, Sequence[int]]) -> AutoEncoderParams:
    """AutoEncoderParams from BFL tensor names and shapes. Not stored in weights, so taken as
    FLUX's: scale 0.3611, shift 0.1159, and 32 GroupNorm groups (fewer if 32 do not fit)."""
    ch, in_channels = _need(shapes, "encoder.conv_in.weight")[:2]
    levels = _count(shapes, "encoder.down.")
    mults = tuple(
        _need(shapes, f"encoder.down.{n}.block.0.conv1.weight")[0] // ch for n in range(levels)
    )
    return AutoEncoderParams(
        in_channels=in_channels,
        ch=ch,
        out_ch=_need(shapes, "decoder.conv_out.weight")[0],
        ch_mult=mults,
        num_res_blocks=_count(shapes, "encoder.down.0.block."),
        z_channels=_need(shapes, "decoder.conv_in.weight")[1],
        norm_groups=next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0),
    )
