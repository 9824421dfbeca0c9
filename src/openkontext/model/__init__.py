"""Model definitions: transformer, autoencoder, text encoders and the preset registry."""

from openkontext.model.autoencoder import AutoEncoder, AutoEncoderParams
from openkontext.model.flux import Flux, FluxParams
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
    "ModelPreset",
    "SentenceTextEncoder",
    "SentenceTextParams",
    "TextEncoderMissing",
    "build_text_encoder",
    "get_preset",
    "preset_from_dict",
    "preset_to_dict",
]
