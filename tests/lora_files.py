"""Small random LoRA files in the kohya convention, written for a given `Flux`, so tests of the
CLI and the server do not depend on openkontext's own LoRA writer."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

LAYERS = ("double_blocks.0.img_attn.qkv", "double_blocks.1.txt_mlp.0", "single_blocks.0.linear1",
          "single_blocks.2.linear2")


def kohya_key(module: str) -> str:
    """`double_blocks.0.img_attn.qkv` -> `lora_unet_double_blocks_0_img_attn_qkv`."""
    return "lora_unet_" + module.replace(".", "_")


def write_lora(path: Path, flux: nn.Module, layers=LAYERS, rank: int = 4, seed: int = 0,
               wrong_in: set[str] = frozenset()) -> Path:
    """A rank-`rank` LoRA on `layers` (alpha = rank, so its own scale is 1), strong enough to
    change a mini model's picture; layers in `wrong_in` get a down matrix with twice the layer's
    input width, as a LoRA made for another model would."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(flux.named_modules())
    tensors = {}
    for name in layers:
        layer = modules[name]
        width = layer.in_features * (2 if name in wrong_in else 1)
        key = kohya_key(name)
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, width, generator=gen) / width**0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(layer.out_features, rank,
                                                       generator=gen) / rank**0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))
    return path
