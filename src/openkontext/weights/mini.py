"""openkontext's own `mini` export: one safetensors file (`flux.*`, `ae.*`, and `text.*` for a
trained byte-level text encoder) and a config JSON carrying the whole preset, so the model is
rebuilt from the two files alone (plus, for a frozen sentence encoder, the installed package the
config names, checked by hash).
The embedded default model ships in this format inside the package (`openkontext/embedded/`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

from openkontext.files import atomic_write
from openkontext.model import (
    AutoEncoder,
    ByteTextEncoder,
    Flux,
    LoadedModel,
    ModelPreset,
    SentenceTextParams,
    TextEncoderMissing,
    build_text_encoder,
    preset_from_dict,
    preset_to_dict,
)
from openkontext.weights.keys import WeightsError

EMBEDDED_DIR = Path(__file__).parent.parent / "embedded"
MINI_WEIGHTS, MINI_CONFIG = "mini.safetensors", "mini.json"
MINI_FORMAT = "openkontext-mini"


def save_mini(
    folder: str | Path,
    preset: ModelPreset,
    flux: Flux,
    ae: AutoEncoder,
    text: nn.Module,
    dtype: torch.dtype = torch.float16,
    info: dict | None = None,
) -> Path:
    """Write a mini export atomically (weights first, then the config that points at them)."""
    folder = Path(folder)
    state: dict[str, Tensor] = {}
    for prefix, module in (("flux", flux), ("ae", ae), ("text", text)):
        for key, value in module.state_dict().items():
            v = value.detach().to("cpu")
            state[f"{prefix}.{key}"] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    config = {
        "format": MINI_FORMAT,
        "version": 1,
        "preset": preset_to_dict(preset),
        "info": info or {},
    }
    atomic_write(folder / MINI_WEIGHTS, save(state, metadata={"format": "pt"}))
    atomic_write(folder / MINI_CONFIG, (json.dumps(config, indent=2) + "\n").encode())
    return folder


def is_mini_export(path: str | Path) -> bool:
    path = Path(path)
    return (path / MINI_CONFIG).is_file() if path.is_dir() else path.name == MINI_CONFIG


def load_mini(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A `LoadedModel` from a mini export folder (or its config file)."""
    folder = Path(path)
    folder = folder.parent if folder.name == MINI_CONFIG else folder
    config_path, weights_path = folder / MINI_CONFIG, folder / MINI_WEIGHTS
    try:
        config = json.loads(config_path.read_text())
        if config.get("format") != MINI_FORMAT:
            raise WeightsError(f"{config_path}: not an openkontext mini export")
        preset = preset_from_dict(config["preset"])
    except FileNotFoundError:
        raise WeightsError(f"{config_path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{config_path}: damaged config ({e})") from None
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path}: no such file")
    with torch.device("meta"):
        modules = {"flux": Flux(preset.flux), "ae": AutoEncoder(preset.ae)}
        if not isinstance(preset.text, SentenceTextParams):
            modules["text"] = ByteTextEncoder(preset.text)
    if isinstance(preset.text, SentenceTextParams):
        # Frozen and not in the export: built from the installed package (hash checked).
        try:
            modules["text"] = build_text_encoder(preset.text).to(device)
        except TextEncoderMissing as e:
            raise WeightsError(f"{config_path}: {e}") from None
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            stored = set(f.keys())
            for prefix, module in modules.items():
                state = {}
                for key, param in module.state_dict().items():
                    name = f"{prefix}.{key}"
                    if name not in stored:
                        raise WeightsError(f"{weights_path}: missing key {name}")
                    t = f.get_tensor(name)
                    if tuple(t.shape) != tuple(param.shape):
                        raise WeightsError(
                            f"{weights_path}: key {name} has shape "
                            f"{tuple(t.shape)}, expected {tuple(param.shape)}"
                        )
                    state[key] = t.to(
                        device=device, dtype=dtype if t.is_floating_point() else t.dtype
                    )
                module.load_state_dict(state, strict=True, assign=True)
                stored -= {f"{prefix}.{k}" for k in state}
            if stored:
                raise WeightsError(f"{weights_path}: unexpected key {sorted(stored)[0]}")
    except WeightsError:
        raise
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise WeightsError(f"{weights_path}: unreadable safetensors file ({e})") from None
    for m in modules.values():
        m.eval().requires_grad_(False)
    return LoadedModel(
        preset, modules["flux"], modules["ae"], modules["text"], torch.device(device), dtype
    )
