"""Checkpoints: finding the files, converting key names, loading and saving.

- `keys`: key names and params of the BFL and diffusers layouts, conversion between them;
- `files`: finding, reading (meta device, one copy) and writing those checkpoints;
- `mini`: the project's own export of the embedded `mini` model.

`load_model` turns what a user names (`--weights`) into a `model.LoadedModel`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from openkontext.model import HFTextEncoders, LoadedModel, get_preset
from openkontext.weights.files import (
    CheckpointFiles,
    _subfolders,
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
) -> LoadedModel:
    """A `LoadedModel` from what a user names:

    - None: the embedded mini model shipped in the package;
    - a mini export folder (`mini.json` + `mini.safetensors`);
    - "random" or "random:PRESET": a mini preset with random weights (pictures are noise;
      for trying the machinery and for tests);
    - FLUX.1 Kontext [dev] weights (BFL file or folder, diffusers root folder): the
      `kontext-dev` preset with the checkpoint's sizes, and T5/CLIP from the diffusers folder or
      from `text_encoders` (a folder with text_encoder/, text_encoder_2/ and their tokenizers).
    """
    device = torch.device(device)
    if weights is None:
        if not is_mini_export(EMBEDDED_DIR):
            raise WeightsError(
                f"no embedded mini weights in this installation ({EMBEDDED_DIR}); "
                "train them with `openkontext train mini` or pass --weights"
            )
        return load_mini(EMBEDDED_DIR, device, dtype)
    name = str(weights)
    if name == "random" or name.startswith("random:"):
        model = LoadedModel.random(name.partition(":")[2] or "mini")
        for module in (model.flux, model.ae, model.text):
            module.to(device=device, dtype=dtype)
        return replace(model, device=device, dtype=dtype)
    if is_mini_export(weights):
        return load_mini(weights, device, dtype)
    # 1. Find every piece before reading any weights.
    files = find_checkpoint(weights)
    if files.transformer is None or files.ae is None:
        missing = "transformer" if files.transformer is None else "autoencoder"
        raise WeightsError(f"{weights}: no {missing} found")
    text = (
        _subfolders(Path(text_encoders))
        if text_encoders
        else {
            n: getattr(files, n)
            for n in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        }
    )
    if text["text_encoder"] is None or text["text_encoder_2"] is None:
        where = text_encoders or weights
        raise WeightsError(
            f"{where}: no text_encoder/ (CLIP-L) and text_encoder_2/ (T5-XXL) "
            "folders; point text_encoders at a folder that has them"
        )
    # 2. Load.
    flux = load_transformer(files.transformer, dtype, device)
    ae = load_autoencoder(files.ae, dtype, device)
    encoders = HFTextEncoders(
        text["text_encoder_2"],
        text["text_encoder"],
        text["tokenizer_2"],
        text["tokenizer"],
        dtype=dtype,
        device=device,
    )
    preset = replace(get_preset("kontext-dev"), flux=flux.params, ae=ae.params)
    return LoadedModel(preset, flux, ae, encoders, device, dtype)
