"""Model definitions: transformer, autoencoder, text encoders, the preset registry, and
`LoadedModel`, the three parts of one preset loaded together."""

from openkontext.model.autoencoder import AutoEncoder, AutoEncoderParams
from openkontext.model.flux import Flux, FluxParams
from openkontext.model.loaded import LoadedModel
from openkontext.model.presets import (
    KONTEXT_RESOLUTIONS,
    PRESETS,
    ModelPreset,
    get_preset,
    preset_from_dict,
    preset_to_dict,
)
from openkontext.model.text import (
    ByteTextEncoder,
    ByteTextParams,
    HFTextEncoders,
    SentenceTextEncoder,
    SentenceTextParams,
    TextEncoder,
    TextEncoderMissing,
    build_text_encoder,
)

__all__ = [
    "KONTEXT_RESOLUTIONS",
    "PRESETS",
    "AutoEncoder",
    "AutoEncoderParams",
    "ByteTextEncoder",
    "ByteTextParams",
    "Flux",
    "FluxParams",
    "HFTextEncoders",
    "LoadedModel",
    "ModelPreset",
    "SentenceTextEncoder",
    "SentenceTextParams",
    "TextEncoder",
    "TextEncoderMissing",
    "build_text_encoder",
    "get_preset",
    "preset_from_dict",
    "preset_to_dict",
]
