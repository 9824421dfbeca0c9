"""Loading real FLUX.1 Kontext [dev] weights, from whatever layout `parts.find_parts` found.

Every part is found before any weights are read, so a missing tokenizer is reported in a second,
not after 30 GB have been loaded. With `fp8` the transformer's blocks and T5's linears are
stored as float8 e4m3 with a scale per output channel (`openkontext.model.fp8`), halving their
memory; the small layers, the autoencoder and CLIP keep `dtype`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from openkontext.model import HFTextEncoders, LoadedModel, get_preset
from openkontext.weights.files import load_autoencoder, load_transformer
from openkontext.weights.parts import Parts, find_parts
from openkontext.weights.text_encoders import load_clip, load_t5, load_tokenizers


def load_kontext_dev(
    weights: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    text_encoders: str | Path | None = None,
    tokenizers: str | Path | None = None,
    fp8: bool = False,
) -> LoadedModel:
    """The `kontext-dev` preset with the checkpoint's sizes, all six parts loaded."""
    parts = find_parts(weights, text_encoders, tokenizers, fp8=fp8)
    return load_parts(parts, device, dtype, fp8)


def load_parts(parts: Parts, device: torch.device, dtype: torch.dtype, fp8: bool) -> LoadedModel:
    # Tokenizers first: they are small, and a broken one should fail before the big reads.
    t5_tokenizer, clip_tokenizer = load_tokenizers(parts.t5_tokenizer, parts.clip_tokenizer)
    flux = load_transformer(parts.transformer, dtype, device, fp8=fp8)
    ae = load_autoencoder(parts.ae, dtype, device)
    encoders = HFTextEncoders(
        load_t5(parts.t5, dtype, device, fp8=fp8),
        load_clip(parts.clip, dtype, device),
        t5_tokenizer,
        clip_tokenizer,
        device=device,
    )
    preset = replace(get_preset("kontext-dev"), flux=flux.params, ae=ae.params)
    return LoadedModel(preset, flux, ae, encoders, device, dtype)
