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
from openkontext.weights.keys import WeightsError
from openkontext.weights.parts import Parts, describe, find_parts
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
    check_memory(parts, device, dtype, fp8)
    return load_parts(parts, device, dtype, fp8)


# Bytes a parameter takes with fp8 storage: the transformer's blocks are 99% of it; T5's `wo`
# (21% of T5-XXL) stays in the compute dtype.
_FP8_SHARE = {"transformer": 0.99, "t5": 0.79}


def weights_bytes(parts: Parts, dtype: torch.dtype, fp8: bool) -> float:
    """What the loaded weights will take, from the checkpoint headers."""
    wide = torch.empty(0, dtype=dtype).element_size()
    total = 0.0
    for row in describe(parts):
        share = _FP8_SHARE.get(row["part"], 0.0) if fp8 else 0.0
        total += row.get("params", 0) * (share + (1 - share) * wide)
    return total


def available_bytes(device: torch.device) -> float | None:
    """Free memory where the weights will live: the GPU's, or the system's MemAvailable."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024.0
    except (OSError, KeyError, ValueError):
        return None  # not Linux: no check


def check_memory(parts: Parts, device: torch.device, dtype: torch.dtype, fp8: bool) -> None:
    """Refuse, before reading any weights, a load that cannot fit where it would go."""
    need, free = weights_bytes(parts, dtype, fp8), available_bytes(device)
    if free is None or need <= free:
        return
    where = "the GPU" if device.type == "cuda" else "this machine"
    hints = [] if fp8 else ["--weights-dtype fp8 (half of bf16)"]
    if device.type == "cuda":
        hints.append("--offload model or --offload blocks (weights wait in CPU memory)")
    elif dtype == torch.float32:
        hints.insert(0, "--dtype bf16 (half of fp32)")
    raise WeightsError(
        f"the weights need {need / 1e9:.1f} GB as {str(dtype).removeprefix('torch.')}"
        f"{' with fp8 storage' if fp8 else ''}; {where} has {free / 1e9:.1f} GB free"
        + (f"; try {', or '.join(hints)}" if hints else "")
    )


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
