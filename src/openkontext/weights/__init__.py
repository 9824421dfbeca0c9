"""Checkpoints: finding the files, converting key names, loading and saving.

- `keys`: key names and params of the BFL and diffusers layouts, conversion between them;
- `files`: finding, reading (meta device, one copy) and writing those checkpoints;
- `mini`: the project's own export of the embedded `mini` model;
- `parts`: finding the six parts of FLUX.1 Kontext [dev] in the layouts users download;
- `text_encoders`: T5-XXL and CLIP-L from folders or single files, fp8 included;
- `kontext_dev`: loading those parts; `convert`: rewriting a transformer as bf16 or fp8;
- `safetensors_io`: reading and writing a tensor at a time, nothing mapped.

`load_model` turns what a user names (`--weights`) into a `model.LoadedModel`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from openkontext.model import LoadedModel
from openkontext.model.fp8 import quantize_linears_
from openkontext.weights.files import (
    FP8_PARTS,
    CheckpointFiles,
    find_checkpoint,
    load_autoencoder,
    load_transformer,
    save_model,
)
from openkontext.weights.keys import (
    BFL_AE_NAME,
    BFL_TRANSFORMER_NAME,
    DTYPES,
    Layout,
    WeightsError,
    ae_bfl_to_diffusers,
    ae_diffusers_to_bfl,
    ae_params_from_diffusers_config,
    ae_params_to_diffusers_config,
    default_axes_dim,
    flux_bfl_to_diffusers,
    flux_diffusers_to_bfl,
    flux_params_from_diffusers_config,
    flux_params_to_diffusers_config,
    infer_ae_params,
    infer_flux_params,
)
from openkontext.weights.mini import EMBEDDED_DIR, is_mini_export, load_mini, save_mini

__all__ = [
    "BFL_AE_NAME",
    "BFL_TRANSFORMER_NAME",
    "DTYPES",
    "EMBEDDED_DIR",
    "CheckpointFiles",
    "Layout",
    "WeightsError",
    "ae_bfl_to_diffusers",
    "ae_diffusers_to_bfl",
    "ae_params_from_diffusers_config",
    "ae_params_to_diffusers_config",
    "default_axes_dim",
    "find_checkpoint",
    "flux_bfl_to_diffusers",
    "flux_diffusers_to_bfl",
    "flux_params_from_diffusers_config",
    "flux_params_to_diffusers_config",
    "infer_ae_params",
    "infer_flux_params",
    "is_mini_export",
    "load_autoencoder",
    "load_mini",
    "load_model",
    "load_transformer",
    "save_mini",
    "save_model",
]


def load_model(
    weights: str | Path | None,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    text_encoders: str | Path | None = None,
    *,
    tokenizers: str | Path | None = None,
    fp8: bool = False,
) -> LoadedModel:
    """A `LoadedModel` from what a user names:

    - None: the embedded mini model shipped in the package;
    - a mini export folder (`mini.json` + `mini.safetensors`);
    - "random" or "random:PRESET": a mini preset with random weights (pictures are noise;
      for trying the machinery and for tests);
    - FLUX.1 Kontext [dev] weights in any layout `parts.find_parts` knows (a Hugging Face
      snapshot folder or `kontext-dev` from the cache, BFL files, diffusers folders), T5/CLIP
      and tokenizers from `text_encoders` / `tokenizers` when the weights lack them.

    `fp8`: the transformer's blocks (and T5's linears) stored in fp8, computed in `dtype`.
    """
    device = torch.device(device)
    if weights is None:
        if not is_mini_export(EMBEDDED_DIR):
            raise WeightsError(
                f"no embedded mini weights in this installation ({EMBEDDED_DIR}); "
                "train them with `openkontext train mini` or pass --weights"
            )
        model = load_mini(EMBEDDED_DIR, device, dtype)
    elif str(weights) == "random" or str(weights).startswith("random:"):
        model = LoadedModel.random(str(weights).partition(":")[2] or "mini")
        for module in (model.flux, model.ae, model.text):
            module.to(device=device, dtype=dtype)
        model = replace(model, device=device, dtype=dtype)
    elif is_mini_export(weights):
        model = load_mini(weights, device, dtype)
    else:
        from openkontext.weights.kontext_dev import load_kontext_dev

        return load_kontext_dev(weights, device, dtype, text_encoders, tokenizers, fp8)
    if fp8:  # the mini models load whole, then store their blocks in fp8
        quantize_linears_(model.flux, keep=lambda name: not name.startswith(FP8_PARTS))
    return model
