"""Named model sizes, in one registry. `kontext-dev` is the real 12B FLUX.1 Kontext [dev]
shape; `mini` is the embedded model this project trains on Shapes World and ships."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from openkontext.model.autoencoder import AutoEncoderParams
from openkontext.model.flux import FluxParams
from openkontext.model.text import ByteTextParams, SentenceTextParams, text_params_from_dict

# Preferred (width, height) of FLUX.1 Kontext [dev]; an input picks the closest aspect ratio.
KONTEXT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)


@dataclass(frozen=True)
class ModelPreset:
    name: str
    flux: FluxParams
    ae: AutoEncoderParams
    text: ByteTextParams | SentenceTextParams | None  # None: T5-XXL + CLIP-L (transformers)
    native_size: int  # side of the square the model was trained at
    default_steps: int
    default_guidance: float
    # Trained with some instructions dropped (`train mini --text-drop`), so the model knows the
    # velocity for an empty instruction: on a model without a guidance embedding, guidance > 1
    # then runs classifier-free guidance at that scale (else guidance is ignored there).
    classifier_free: bool = False
    # A picture's position ids span the native square's tokens on each side whatever its aspect
    # ratio (`packing.image_ids`), so "the top left" sits at the same positions on every canvas:
    # how the model samples, and trains with `train mini --fit-positions`. The shipped export,
    # trained on squares alone, samples this way since 56,800 steps (docs/mini.md).
    fit_positions: bool = False

    @property
    def position_span(self) -> int | None:
        """What `packing.image_ids` scales each side to (tokens), or None for plain token
        counts."""
        return self.native_size // self.latent_multiple if self.fit_positions else None

    @property
    def latent_multiple(self) -> int:
        """Image sides must be multiples of this (autoencoder factor x 2x2 packing)."""
        return self.ae.downsample * 2

    @property
    def shapes_world_only(self) -> bool:
        """The mini presets (the ones with a small text encoder of their own): trained on
        Shapes World alone, they know nothing else."""
        return self.text is not None

    @property
    def max_side(self) -> int:
        """The longest output side asked for by width/height: twice the trained size (2048 for
        Kontext [dev]; 128 for mini, whose work grows with the square of it)."""
        return 2 * self.native_size


PRESETS: dict[str, ModelPreset] = {
    "kontext-dev": ModelPreset(
        name="kontext-dev",
        flux=FluxParams(),
        ae=AutoEncoderParams(),
        text=None,
        native_size=1024,
        default_steps=28,
        default_guidance=2.5,
    ),
    # The embedded model: frozen all-MiniLM-L6-v2 text encoder (since the 5,200-step export).
    "mini": ModelPreset(
        name="mini",
        flux=FluxParams(
            in_channels=64,
            out_channels=64,
            vec_in_dim=384,
            context_in_dim=384,
            hidden_size=256,
            mlp_ratio=4.0,
            num_heads=4,
            depth=2,
            depth_single_blocks=4,
            axes_dim=(8, 28, 28),
            theta=10_000,
            qkv_bias=True,
            guidance_embed=False,
        ),
        ae=AutoEncoderParams(
            resolution=64,
            ch=32,
            ch_mult=(1, 2, 2, 2),
            num_res_blocks=1,
            z_channels=16,
            scale_factor=1.0,
            shift_factor=0.0,
            norm_groups=8,
        ),
        text=SentenceTextParams(),
        native_size=64,
        default_steps=16,
        default_guidance=1.0,
    ),
}


# The first two exports (to 6,000 steps, 2026-11-22): the same transformer with a byte-level text
# encoder trained jointly (those exports name this preset's shapes; they still load).
PRESETS["mini-byte"] = dataclasses.replace(
    PRESETS["mini"],
    name="mini-byte",
    flux=dataclasses.replace(PRESETS["mini"].flux, vec_in_dim=256, context_in_dim=256),
    text=ByteTextParams(max_bytes=160, bytes_per_token=4, width=192, depth=2, num_heads=4),
)


# mini with two more single-stream blocks, grown from a mini export (the new blocks start as the
# identity: their modulation is zeroed), measured against mini at equal wall time (docs/mini.md,
# `mini` 14,400 to 17,900 steps).
PRESETS["mini-deep"] = dataclasses.replace(
    PRESETS["mini"],
    name="mini-deep",
    flux=dataclasses.replace(PRESETS["mini"].flux, depth_single_blocks=6),
)


# mini on a finer token grid (docs/mini.md, `mini-fine` 0 to 5,600 steps). The 8x autoencoder
# gives a 64 px picture 4 x 4 tokens of 16 px, which do not line up with Shapes World's 3 x 3 cells
# (an object in the centre cell straddles four tokens); one level fewer (4x) gives 8 x 8 tokens of
# 8 px for twice the training step (benchmarks/mini/train_step_cost.py).
PRESETS["mini-fine"] = dataclasses.replace(
    PRESETS["mini"],
    name="mini-fine",
    ae=dataclasses.replace(PRESETS["mini"].ae, ch_mult=(1, 2, 2)),
)


# mini-fine with two more single-stream blocks (as mini-deep is to mini), to be grown from a
# mini-fine export (docs/mini.md, 17,000 to 21,000 steps). 11.2M transformer parameters: its fp16
# export with the autoencoder is 24.4 MB, just under the 25 MB the package allows.
PRESETS["mini-fine-deep"] = dataclasses.replace(
    PRESETS["mini-fine"],
    name="mini-fine-deep",
    flux=dataclasses.replace(PRESETS["mini-fine"].flux, depth_single_blocks=6),
)


# The presets `openkontext train mini` trains: those whose text encoder this project builds
# (kontext-dev's comes with its checkpoint, and it is far too large to train here).
MINI_PRESETS: tuple[str, ...] = tuple(name for name, p in PRESETS.items() if p.text is not None)


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


def preset_to_dict(preset: ModelPreset) -> dict:
    """JSON-ready description of a preset (what a checkpoint carries to rebuild its model)."""
    return {
        "name": preset.name,
        "flux": preset.flux.to_dict(),
        "ae": preset.ae.to_dict(),
        "text": None if preset.text is None else preset.text.to_dict(),
        "native_size": preset.native_size,
        "default_steps": preset.default_steps,
        "default_guidance": preset.default_guidance,
        "classifier_free": preset.classifier_free,
        "fit_positions": preset.fit_positions,
    }


def preset_from_dict(d: dict) -> ModelPreset:
    return ModelPreset(
        name=d["name"],
        flux=FluxParams.from_dict(d["flux"]),
        ae=AutoEncoderParams.from_dict(d["ae"]),
        text=None if d["text"] is None else text_params_from_dict(d["text"]),
        native_size=d["native_size"],
        default_steps=d["default_steps"],
        default_guidance=d["default_guidance"],
        classifier_free=d.get("classifier_free", False),  # exports before 8,800 steps lack it
        fit_positions=d.get("fit_positions", False),  # and before 56,800 steps this
    )
