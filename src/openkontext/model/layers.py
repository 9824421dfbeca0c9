"""Building blocks of the FLUX.1 transformer.

Shapes use B = batch, L = tokens, D = hidden width, H = heads, Dh = head width.
Text tokens always come first in the joint sequence, image tokens after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def rope_frequencies(pos: Tensor, dim: int, theta: float) -> Tensor:
    """Rotation matrices for one position axis.

    pos: (B, L) positions -> (B, L, dim/2, 2, 2) rotation matrices, one per channel pair.
    Computed in float64 so that large positions keep their precision.
    """
    assert dim % 2 == 0, f"rope axis width must be even, got {dim}"
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    inv_freq = 1.0 / (theta**exponents)
    angles = pos.to(torch.float64)[..., None] * inv_freq  # (B, L, dim/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1)
    return rot.reshape(*rot.shape[:-1], 2, 2).float()


class RopeEmbedder(nn.Module):
    """3-axis rotary embedding: each axis of the (index, row, col) id gets its own channels."""

    def __init__(self, theta: float, axes_dim: tuple[int, ...]):
        super().__init__()
        self.theta = theta
        self.axes_dim = tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        """ids: (B, L, n_axes) -> (B, 1, L, Dh/2, 2, 2)."""
        parts = [
            rope_frequencies(ids[..., axis], width, self.theta)
            for axis, width in enumerate(self.axes_dim)
        ]
        return torch.cat(parts, dim=-3).unsqueeze(1)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate adjacent channel pairs of x: (B, H, L, Dh) by freqs: (B, 1, L, Dh/2, 2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * pairs[..., 0] + freqs[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """Joint attention with RoPE. q, k, v: (B, H, L, Dh) -> (B, L, H*Dh)."""
    q, k = apply_rope(q, pe), apply_rope(k, pe)
    x = F.scaled_dot_product_attention(q, k, v)
    return rearrange(x, "B H L D -> B L (H D)")


def timestep_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, time_factor: float = 1000.0
) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by time_factor), cos half before sin half.

    t: (B,) -> (B, dim)
    """
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype) if torch.is_floating_point(t) else emb


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=True)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS normalisation computed in float32, with a learned per-channel scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.to(dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    """Fused qkv projection, QK RMSNorm and output projection (attention itself is joint)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, L, D) -> normalised q, k and v, each (B, H, L, Dh)."""
        q, k, v = rearrange(self.qkv(x), "B L (K H D) -> K B H L D", K=3, H=self.num_heads)
        q, k = self.norm(q, k, v)
        return q, k, v


@dataclass
class ModulationOut:
    shift: Tensor
    scale: Tensor
    gate: Tensor

    def modulate(self, x: Tensor) -> Tensor:
        return (1 + self.scale) * x + self.shift


class Modulation(nn.Module):
    """adaLN: vec -> (shift, scale, gate) once (single) or twice (double: attention, MLP)."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.is_double = double
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        first = ModulationOut(*out[:3])
        return first, (ModulationOut(*out[3:]) if self.is_double else None)


def _mlp(hidden: int, mlp_hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden, mlp_hidden, bias=True),
        nn.GELU(approximate="tanh"),
        nn.Linear(mlp_hidden, hidden, bias=True),
    )


def _layer_norm(hidden: int) -> nn.LayerNorm:
    return nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)


class DoubleStreamBlock(nn.Module):
    """Separate weights for image and text tokens, one joint attention over both."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        mlp_hidden = int(hidden * mlp_ratio)
        self.num_heads = num_heads
        self.img_mod = Modulation(hidden, double=True)
        self.img_norm1 = _layer_norm(hidden)
        self.img_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.img_norm2 = _layer_norm(hidden)
        self.img_mlp = _mlp(hidden, mlp_hidden)
        self.txt_mod = Modulation(hidden, double=True)
        self.txt_norm1 = _layer_norm(hidden)
        self.txt_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.txt_norm2 = _layer_norm(hidden)
        self.txt_mlp = _mlp(hidden, mlp_hidden)

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        """img: (B, Li, D), txt: (B, Lt, D), vec: (B, D), pe over Lt + Li tokens."""
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)

        # 1. Joint attention: text queries/keys first, then image.
        img_q, img_k, img_v = self.img_attn.split_heads(img_mod1.modulate(self.img_norm1(img)))
        txt_q, txt_k, txt_v = self.txt_attn.split_heads(txt_mod1.modulate(self.txt_norm1(txt)))
        attn = attention(
            torch.cat((txt_q, img_q), dim=2),
            torch.cat((txt_k, img_k), dim=2),
            torch.cat((txt_v, img_v), dim=2),
            pe,
        )
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1] :]

        # 2. Gated residuals: attention, then MLP, per stream.
        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp(img_mod2.modulate(self.img_norm2(img)))
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp(txt_mod2.modulate(self.txt_norm2(txt)))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One weight set over the joint sequence; attention and MLP run in parallel."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden = hidden
        self.num_heads = num_heads
        self.mlp_hidden = int(hidden * mlp_ratio)
        self.linear1 = nn.Linear(hidden, hidden * 3 + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden, hidden)
        self.norm = QKNorm(hidden // num_heads)
        self.pre_norm = _layer_norm(hidden)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        mod, _ = self.modulation(vec)
        qkv, mlp = torch.split(
            self.linear1(mod.modulate(self.pre_norm(x))), [3 * self.hidden, self.mlp_hidden], -1
        )
        q, k, v = rearrange(qkv, "B L (K H D) -> K B H L D", K=3, H=self.num_heads)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat((attention(q, k, v, pe), self.mlp_act(mlp)), dim=2))
        return x + mod.gate * out


class LastLayer(nn.Module):
    """Final adaLN (shift, scale — in that order) and projection to patch channels."""

    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.norm_final = _layer_norm(hidden)
        self.linear = nn.Linear(hidden, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        x = (1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :]
        return self.linear(x)
