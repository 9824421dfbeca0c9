"""The FLUX.1 convolutional autoencoder (KL-regularised, latent mean at encode time).

Images are (B, 3, H, W) in [-1, 1]; latents are (B, z_channels, H/f, W/f) with
f = 2 ** (len(ch_mult) - 1), already normalised by `z = scale * (mean - shift)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass(frozen=True)
class AutoEncoderParams:
    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    norm_groups: int = 32

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AutoEncoderParams:
        d = dict(d)
        d["ch_mult"] = tuple(d["ch_mult"])
        return cls(**d)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1 convolutions as projections."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (rearrange(m(hn), "b c h w -> b 1 (h w) c") for m in (self.q, self.k, self.v))
        # Contiguous inputs: strided ones send CPU SDPA to its math kernel, which materialises
        # the (hw x hw) attention matrix (1 GiB per copy for a 1024 px image).
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w)
        return x + self.proj_out(out)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Stride-2 convolution with asymmetric zero padding (right and bottom only)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: res blocks, then an optional resampler (named as in BFL files)."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        if resample is not None:
            self.add_module(name, resample)


class Encoder(nn.Module):
    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        g = p.norm_groups
        self.conv_in = nn.Conv2d(p.in_channels, p.ch, 3, stride=1, padding=1)
        in_mult = (1, *p.ch_mult)
        self.down = nn.ModuleList()
        block_in = p.ch
        for level, mult in enumerate(p.ch_mult):
            block_in, block_out = p.ch * in_mult[level], p.ch * mult
            blocks = []
            for _ in range(p.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            last = level == len(p.ch_mult) - 1
            self.down.append(_Level(blocks, None if last else Downsample(block_in), "downsample"))
        self.mid = _Mid(block_in, g)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, 2 * p.z_channels, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) -> (B, 2*z, H/f, W/f): mean and log-variance."""
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        g = p.norm_groups
        block_in = p.ch * p.ch_mult[-1]
        self.conv_in = nn.Conv2d(p.z_channels, block_in, 3, stride=1, padding=1)
        self.mid = _Mid(block_in, g)
        levels: list[_Level] = []
        for level in reversed(range(len(p.ch_mult))):
            block_out = p.ch * p.ch_mult[level]
            blocks = []
            for _ in range(p.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            levels.insert(0, _Level(blocks, Upsample(block_in) if level else None, "upsample"))
        self.up = nn.ModuleList(levels)  # index 0 is the finest level, run last
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, p.out_ch, 3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, z, h, w) un-normalised latent -> (B, 3, h*f, w*f)."""
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoEncoder(nn.Module):
    def __init__(self, params: AutoEncoderParams):
        super().__init__()
        self.params = params
        self.encoder = Encoder(params)
        self.decoder = Decoder(params)
        self.scale_factor = params.scale_factor
        self.shift_factor = params.shift_factor

    def encode_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw posterior (mean, logvar), each (B, z, h, w), before normalisation."""
        mean, logvar = torch.chunk(self.encoder(x), 2, dim=1)
        return mean, logvar

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) in [-1, 1] -> normalised latent mean (B, z, H/f, W/f)."""
        mean, _ = self.encode_moments(x)
        return self.scale_factor * (mean - self.shift_factor)

    def decode(self, z: Tensor) -> Tensor:
        """Normalised latent -> image in about [-1, 1]."""
        return self.decoder(z / self.scale_factor + self.shift_factor)
