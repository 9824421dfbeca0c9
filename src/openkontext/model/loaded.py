"""`LoadedModel`: the three parts of one preset, loaded and ready to sample.

`openkontext.weights` builds it from what a user names; the sampler and the pipeline take it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from openkontext.model.autoencoder import AutoEncoder
from openkontext.model.flux import Flux
from openkontext.model.offload import OFFLOAD_MODES, Offload, streamed_blocks
from openkontext.model.presets import ModelPreset, get_preset
from openkontext.model.text import TextEncoder, build_text_encoder


@dataclass
class LoadedModel:
    """Everything needed to sample: transformer, autoencoder and text encoder of one preset."""

    preset: ModelPreset
    flux: Flux
    ae: AutoEncoder
    text: TextEncoder
    device: torch.device
    dtype: torch.dtype
    # Where the weights wait while a part does not run (see `openkontext.model.offload`):
    # "none" on `device`; "model" on the CPU, each part moved to `device` while it runs;
    # "blocks" as "model", but the transformer's blocks are streamed a group at a time.
    offload: Offload = "none"

    def __post_init__(self):
        if isinstance(self.offload, bool):  # the older switch: True was CPU offload
            self.offload = "model" if self.offload else "none"
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(
                f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}"
            )

    @property
    def z_channels(self) -> int:
        return self.ae.params.z_channels

    @contextmanager
    def using(self, part):
        """`part` (transformer, autoencoder or text encoder) on `device` for the duration. With
        offload "model", moved there on entry and back to the CPU on exit, so a low-memory GPU
        holds one part at a time; with "blocks" the same, except that the transformer's blocks
        visit the device a few at a time while it runs (`streamed_blocks`)."""
        if self.offload == "none":
            yield part
            return
        try:
            if self.offload == "blocks" and part is self.flux:
                with streamed_blocks(part, self.device):
                    yield part
            else:
                part.to(self.device)
                try:
                    yield part
                finally:
                    part.to("cpu")
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @classmethod
    def random(cls, preset: str | ModelPreset = "mini", seed: int = 0) -> LoadedModel:
        """A randomly initialised model of a mini preset (a frozen sentence encoder keeps its
        pretrained weights): for tests and for trying the machinery before trained weights
        exist. Its pictures are noise."""
        p = get_preset(preset) if isinstance(preset, str) else preset
        if p.text is None:
            raise ValueError(f"preset {p.name!r} needs T5/CLIP weights; no random variant")
        torch.manual_seed(seed)
        flux, ae, text = Flux(p.flux), AutoEncoder(p.ae), build_text_encoder(p.text)
        for m in (flux, ae, text):
            m.eval().requires_grad_(False)
        return cls(p, flux, ae, text, torch.device("cpu"), torch.float32)
