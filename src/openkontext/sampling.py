"""The tensor-level core of every edit and generation: seeded noise, references encoded,
denoise, decode.

Pure functions of a `LoadedModel` and tensors (no files, no PIL, no printing). The pipeline
(`openkontext.pipeline.Kontext`) calls `run_tensors` for every request; training-time sampling
and the benchmarks call it directly.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor

from openkontext import flow
from openkontext.model import Flux, LoadedModel
from openkontext.model.step_cache import StepCache
from openkontext.packing import References, image_ids, pack, text_ids, unpack


def initial_noise(
    seeds: list[int],
    z_channels: int,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    downsample: int = 8,
) -> Tensor:
    """Starting noise for images of (height, width) px: one CPU generator per image, seeded with
    its seed, drawing (1, z, 2*ceil(H/16), 2*ceil(W/16)) as the reference pipelines do for an
    8x autoencoder (2*ceil(H/(2*f)) for an f-times one). -> (B, z, h, w). A batch equals the
    same seeds drawn one by one."""
    cell = 2 * downsample  # one packed token
    h, w = 2 * math.ceil(height / cell), 2 * math.ceil(width / cell)
    draws = [
        torch.randn(1, z_channels, h, w, generator=torch.Generator("cpu").manual_seed(s))
        for s in seeds
    ]
    return torch.cat(draws).to(device=device, dtype=dtype)


@torch.no_grad()
def encode_references(model: LoadedModel, images: list[Tensor]) -> References:
    """images: one (B or 1, 3, H_k, W_k) tensor in [-1, 1] per reference, encoded one at a time
    (peak memory of one image) -> packed reference tokens with indices 1..n."""
    with model.using(model.ae) as ae:
        latents = [ae.encode(x.to(model.device, model.dtype)) for x in images]
    return References.from_latents(latents, model.preset.position_span)


@torch.no_grad()
def round_trip(model: LoadedModel, image: Tensor) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> the same picture encoded and decoded by the autoencoder: the
    closest any output can come to it, and so the baseline paste-back compares outputs with."""
    with model.using(model.ae) as ae:
        return ae.decode(ae.encode(image.to(model.device, model.dtype))).float().clamp(-1, 1)


def uses_classifier_free(model: LoadedModel, guidance: float | None) -> bool:
    """Whether `guidance` is a classifier-free scale on `model`: a model without a guidance
    embedding whose preset was trained for it (`classifier_free`), and guidance above 1 (1 is
    none). Elsewhere guidance is distilled (kontext-dev) or ignored (other mini exports)."""
    cfg_model = model.preset.classifier_free and not model.flux.params.guidance_embed
    return cfg_model and guidance is not None and guidance > 1


BLOCK_CHECK_SECONDS = 0.1  # least time between two cancellation checks inside a step


@contextmanager
def _checked_between_blocks(flux: Flux, cancelled: Callable[[], bool] | None):
    """Also ask `cancelled()` before the transformer's blocks (at most every BLOCK_CHECK_SECONDS),
    so a cancel stops a long step within about a block's time instead of at its end."""
    if cancelled is None:
        yield
        return
    last = [time.monotonic()]

    def check(_module, _args) -> None:
        now = time.monotonic()
        if now - last[0] >= BLOCK_CHECK_SECONDS:
            last[0] = now
            if cancelled():
                raise flow.Cancelled("cancelled inside a step")

    hooks = [b.register_forward_pre_hook(check) for b in (*flux.double_blocks,
                                                          *flux.single_blocks)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def sample_latents(
    model: LoadedModel,
    txt: Tensor,
    vec: Tensor,
    noise: Tensor,
    steps: int,
    guidance: float | None,
    refs: References | None = None,
    on_step: flow.StepCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    empty_text: tuple[Tensor, Tensor] | None = None,
    step_cache: StepCache | None = None,
) -> Tensor:
    """Denoise `noise` (B, z, h, w) into normalised latents of the same shape. `guidance`: the
    distilled guidance of a model that embeds it, else ignored; with `empty_text` (the text
    encoder's (txt, vec) for "", see `uses_classifier_free`) the classifier-free scale. With
    `step_cache` (a fresh one), steps skip the transformer's later blocks where it allows."""
    batch, _, h, w = noise.shape
    img = pack(noise)
    timesteps = flow.get_schedule(steps, img.shape[1])
    scale = guidance
    if not model.flux.params.guidance_embed:
        guidance = None
    with model.using(model.flux) as flux, _checked_between_blocks(flux, cancelled):
        if step_cache is not None:
            flux = functools.partial(flux, step_cache=step_cache)
        if empty_text is not None:
            flux = flow.classifier_free(flux, *empty_text, scale)
        out = flow.denoise(
            flux,
            img,
            image_ids(batch, h, w, device=noise.device, span=model.preset.position_span)
            .to(noise.dtype),
            txt.to(noise.dtype),
            text_ids(batch, txt.shape[1], device=noise.device).to(noise.dtype),
            vec.to(noise.dtype),
            timesteps,
            guidance=guidance,
            refs=refs,
            on_step=on_step,
            cancelled=cancelled,
        )
    return unpack(out, h, w)


@torch.no_grad()
def run_tensors(
    model: LoadedModel,
    prompts: list[str],
    seeds: list[int],
    height: int,
    width: int,
    steps: int,
    guidance: float | None,
    references: list[Tensor] | None = None,
    on_step: flow.StepCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    step_cache: StepCache | None = None,
) -> Tensor:
    """Edit (references given) or generate (none): -> images (B, 3, height, width) in [-1, 1].

    prompts and seeds have one entry per output image; references are shared by all outputs
    unless their batch equals the number of prompts. `step_cache`: see `sample_latents`.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    # 1. Text, and the empty instruction's in the same pass when guidance is classifier-free.
    guided = uses_classifier_free(model, guidance)
    with model.using(model.text) as text:
        txt, vec = text.encode([*prompts, ""] if guided else prompts)
    empty_text = None
    if guided:
        txt, vec, empty_text = txt[:-1], vec[:-1], (txt[-1:], vec[-1:])
    # 2. References, encoded one at a time.
    refs = encode_references(model, references) if references else None
    # 3. Denoise from seeded noise.
    factor = model.ae.params.downsample
    noise = initial_noise(seeds, model.z_channels, height, width, model.device, model.dtype, factor)
    z = sample_latents(
        model, txt, vec, noise, steps, guidance, refs, on_step, cancelled, empty_text, step_cache
    )
    # 4. Decode.
    with model.using(model.ae) as ae:
        return ae.decode(z).float().clamp(-1, 1)
