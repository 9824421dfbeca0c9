"""Rectified flow: the schedule, the Euler sampler and the training loss.

The one convention, used everywhere: t = 1 is pure noise, t = 0 is data,
x_t = (1 - t) * data + t * noise, and the model predicts the velocity v = noise - data,
so x_t moves to data along -v. Pure tensor functions: no I/O, no printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from openkontext.packing import References


class Cancelled(Exception):
    """Raised by `denoise` when its cancellation check returns True between steps."""


def time_shift(mu: float, t: Tensor) -> Tensor:
    """Resolution-dependent shift of the schedule: more steps spent near t = 1 for large images."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def shift_mu(
    seq_len: int,
    base_len: int = 256,
    max_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """mu linear in the target token count: 256 -> 0.5, 4096 -> 1.15."""
    slope = (max_shift - base_shift) / (max_len - base_len)
    return base_shift + slope * (seq_len - base_len)


def get_schedule(steps: int, seq_len: int, shift: bool = True, **mu_kwargs) -> list[float]:
    """steps + 1 times from 1 down to 0, time-shifted by the target token count."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    if shift:
        t = time_shift(shift_mu(seq_len, **mu_kwargs), t)
    return t.tolist()


StepCallback = Callable[[int, int], None]


def denoise(
    model: Callable[..., Tensor],
    img: Tensor,
    img_ids: Tensor,
    txt: Tensor,
    txt_ids: Tensor,
    vec: Tensor,
    timesteps: list[float],
    guidance: float | None = 2.5,
    refs: References | None = None,
    on_step: StepCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Tensor:
    """Euler integration of the velocity field from timesteps[0] to timesteps[-1].

    img: (B, L, C) noisy target tokens; refs: clean reference tokens appended after them
    (their prediction is discarded). Returns the final target tokens (B, L, C).
    on_step(i, n) is called after step i of n; cancelled() is checked before every step.
    """
    batch, n_target = img.shape[0], img.shape[1]
    guidance_vec = (
        None
        if guidance is None
        else torch.full((batch,), guidance, dtype=img.dtype, device=img.device)
    )
    if refs is not None:
        refs = refs.expand(batch)
        img_ids = torch.cat((img_ids, refs.ids.to(img_ids)), dim=1)
    n_steps = len(timesteps) - 1
    for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:], strict=True)):
        if cancelled is not None and cancelled():
            raise Cancelled(f"cancelled before step {i + 1} of {n_steps}")
        x = img if refs is None else torch.cat((img, refs.tokens.to(img)), dim=1)
        t_vec = torch.full((batch,), t_curr, dtype=img.dtype, device=img.device)
        pred = model(
            img=x,
            img_ids=img_ids,
            txt=txt,
            txt_ids=txt_ids,
            timesteps=t_vec,
            y=vec,
            guidance=guidance_vec,
        )
        img = img + (t_prev - t_curr) * pred[:, :n_target]
        if on_step is not None:
            on_step(i + 1, n_steps)
    return img


def classifier_free(
    model: Callable[..., Tensor], txt_empty: Tensor, vec_empty: Tensor, scale: float
) -> Callable[..., Tensor]:
    """`model` (the transformer's call signature) with classifier-free guidance: each call runs
    the batch twice in one pass, with its text and with the empty text's (`txt_empty` (1, L, D),
    `vec_empty` (1, D); a model trained with dropped instructions learnt what that means), and
    returns uncond + scale * (cond - uncond). Distilled guidance is not passed on."""

    def guided(*, img, img_ids, txt, txt_ids, timesteps, y, guidance=None) -> Tensor:
        b = img.shape[0]
        both = model(
            img=torch.cat((img, img)),
            img_ids=torch.cat((img_ids, img_ids)),
            txt=torch.cat((txt, txt_empty.to(txt).expand(b, -1, -1))),
            txt_ids=torch.cat((txt_ids, txt_ids)),
            timesteps=torch.cat((timesteps, timesteps)),
            y=torch.cat((y, vec_empty.to(y).expand(b, -1))),
        )
        cond, uncond = both[:b], both[b:]
        return uncond + scale * (cond - uncond)

    return guided


def sample_t_logit_normal(
    batch: int,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """t = sigmoid(N(mean, std)): training times concentrated in the middle of the path."""
    u = torch.randn(batch, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def interpolate(data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) * data + t * noise, t: (B,) broadcast over the other dims."""
    t = t.view(-1, *([1] * (data.dim() - 1)))
    return (1 - t) * data + t * noise


def flow_loss(
    pred_velocity: Tensor, data: Tensor, noise: Tensor, token_weight: Tensor | None = None
) -> Tensor:
    """Per-sample mean squared error to the true velocity (noise - data): (B,). With
    `token_weight` (B, N) for packed (B, N, C) latents, each sample's tokens are averaged with
    those weights instead of equally."""
    err = (pred_velocity.float() - (noise - data).float()) ** 2
    if token_weight is None:
        return err.flatten(1).mean(dim=1)
    per_token = err.mean(dim=2)
    return (per_token * token_weight).sum(dim=1) / token_weight.sum(dim=1)
