"""Latents <-> token sequences, and the (index, row, col) position ids Kontext uses.

A latent (B, C, H, W) becomes (B, H/2 * W/2, 4C) tokens by 2x2 patches, row-major.
Position ids: text tokens (0, 0, 0); target tokens (0, row, col); reference image k
(k = 1..4) tokens (k, row, col). Reference tokens follow the target tokens in the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor


def pack(z: Tensor) -> Tensor:
    """(B, C, H, W) latent -> (B, H/2 * W/2, 4C) tokens."""
    if z.shape[-2] % 2 or z.shape[-1] % 2:
        raise ValueError(f"latent height and width must be even, got {tuple(z.shape[-2:])}")
    return rearrange(z, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def unpack(x: Tensor, height: int, width: int) -> Tensor:
    """(B, h*w, 4C) tokens -> (B, C, 2h, 2w) latent, for a latent of the given size."""
    return rearrange(
        x, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=height // 2, w=width // 2, ph=2, pw=2
    )


def image_ids(batch: int, height: int, width: int, index: int = 0, device=None,
              span: int | None = None) -> Tensor:
    """Position ids (B, h*w, 3) for a packed latent of latent size (height, width).

    Rows and columns count tokens (Kontext's own ids, any size). With `span` (a model's
    `ModelPreset.position_span`), each side is scaled to span that many tokens instead, so a
    picture of any aspect ratio covers the positions of the square the model was trained on."""
    h, w = height // 2, width // 2
    ids = torch.zeros(h, w, 3, device=device)
    ids[..., 0] = index
    rows, cols = torch.arange(h, device=device).float(), torch.arange(w, device=device).float()
    if span is not None:
        rows, cols = rows * (span / h), cols * (span / w)
    ids[..., 1] = rows[:, None]
    ids[..., 2] = cols[None, :]
    return ids.reshape(1, h * w, 3).expand(batch, -1, -1).contiguous()


def text_ids(batch: int, length: int, device=None) -> Tensor:
    return torch.zeros(batch, length, 3, device=device)


@dataclass
class References:
    """Packed reference images (never noised), appended after the target tokens."""

    tokens: Tensor  # (B, Lr, 4C), all references one after another
    ids: Tensor  # (B, Lr, 3), index k for reference k

    @classmethod
    def from_latents(cls, latents: list[Tensor], span: int | None = None) -> References:
        """latents: one (B, C, h_k, w_k) normalised latent per reference, in order 1..n; span:
        as for `image_ids`."""
        if not 1 <= len(latents) <= 4:
            raise ValueError(f"Kontext takes 1 to 4 reference images, got {len(latents)}")
        tokens, ids = [], []
        for k, z in enumerate(latents, start=1):
            tokens.append(pack(z))
            ids.append(image_ids(z.shape[0], z.shape[-2], z.shape[-1], index=k, device=z.device,
                                 span=span))
        return cls(torch.cat(tokens, dim=1), torch.cat(ids, dim=1).to(z.dtype))

    def expand(self, batch: int) -> References:
        """Repeat a batch-1 reference set for a batch of targets."""
        if self.tokens.shape[0] == batch:
            return self
        return References(
            self.tokens.expand(batch, -1, -1).contiguous(),
            self.ids.expand(batch, -1, -1).contiguous(),
        )
