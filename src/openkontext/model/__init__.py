"""Model definitions: transformer, autoencoder, text encoders and the preset registry."""

from openkontext.model.autoencoder import AutoEncoder, AutoEncoderParams
from openkontext.model.flux import Flux, FluxParams
from openkontext.model.presets import KONTEXT_RESOLUTIONS, PRESETS, ModelPreset, get_preset
from openkontext.model.text import ByteTextEncoder, ByteTextParams

__all__ = [
    "KONTEXT_RESOLUTIONS",
    "PRESETS",
    "AutoEncoder",
    "AutoEncoderParams",
    "ByteTextEncoder",
    "ByteTextParams",
    "Flux",
    "FluxParams",
    "ModelPreset",
    "get_preset",
]
