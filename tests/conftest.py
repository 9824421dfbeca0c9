"""Shared fixtures: tiny FLUX-shaped models with random weights in every parameter.

Default initialisation zeroes some layers (adaLN, output projections), which would hide a wrong
key mapping, so every parameter is redrawn: norm scales around 1, the rest scaled by fan-in.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from openkontext.model import AutoEncoder, AutoEncoderParams, Flux, FluxParams

# The same sizes as the tiny diffusers models in test_parity_diffusers.py.
TINY_FLUX = FluxParams(
    in_channels=16, out_channels=16, vec_in_dim=24, context_in_dim=32, hidden_size=32,
    num_heads=2, depth=2, depth_single_blocks=2, axes_dim=(4, 6, 6), guidance_embed=True,
)
TINY_AE = AutoEncoderParams(  # 8x down like FLUX's, so sampling.initial_noise fits it
    resolution=32, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=4,
    scale_factor=0.6, shift_factor=0.1, norm_groups=32,
)


def randomise_(module: nn.Module, seed: int) -> nn.Module:
    """Redraw every parameter in place from a seeded generator; returns the module in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and ("norm" in name or name.endswith("scale")):
                p.copy_(1 + 0.2 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module.eval()


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch) -> Path:
    """Tests never see this machine's Hugging Face cache: an empty one of their own (those that
    need a snapshot there write it)."""
    cache = tmp_path / "hf-hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def scene(tmp_path) -> Path:
    """A Shapes World picture (64 px PNG, at least two objects) in the test's folder."""
    from openkontext.world.render import render, to_pil
    from openkontext.world.scene import random_scene

    path = tmp_path / "scene.png"
    to_pil(render(random_scene(random.Random(2), min_objects=2), 64)).save(path)
    return path


@pytest.fixture
def flux_model() -> Flux:
    return randomise_(Flux(TINY_FLUX), seed=1)


@pytest.fixture
def ae_model() -> AutoEncoder:
    return randomise_(AutoEncoder(TINY_AE), seed=2)


@pytest.fixture
def refused(monkeypatch, capsys):
    """refused(main, *args): run a benchmark script's main() with those arguments, which it must
    refuse as argparse does (exit status 2); returns what it wrote to stderr."""
    def run(main, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["script", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 2
        return capsys.readouterr().err
    return run
