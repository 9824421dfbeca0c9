"""Does a picture look like Shapes World? The cheap test behind the embedded model's notice.

A Shapes World picture is a plain background and at most four flat shapes, so five colours
cover nearly all of it: at 64 x 64 (box-filtered) and 4 bits a channel, the five commonest
colours cover at least 94% of every render, at any size and after any filter, and at least 81%
of the embedded model's own outputs. A photograph spreads over hundreds of colours: 3% for
photo-like pictures, 13% for smooth gradients (`tests/world/test_world_likeness.py`). Flat
clip art passes as Shapes World; that is the price of a test this cheap (about 1 ms).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FLAT_SHARE = 0.6  # below this, not Shapes World
NOTICE = (
    "the embedded model knows only Shapes World (up to four flat shapes on a plain background, "
    "see docs/shapes-world.md) and this picture does not look like one: expect coloured blobs. "
    "For photographs, use real FLUX.1 Kontext [dev] weights (--weights PATH; README, "
    "'Real weights')"
)


def flat_share(image: Image.Image, colours: int = 5, bits: int = 4) -> float:
    """The share of the picture covered by its `colours` commonest colours at 64 x 64 and
    `bits` bits a channel."""
    small = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BOX))
    q = (small >> (8 - bits)).astype(np.int64)
    codes = (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]
    counts = np.bincount(codes.ravel(), minlength=1 << (3 * bits))
    return float(np.sort(counts)[::-1][:colours].sum() / codes.size)


def looks_like_shapes_world(image: Image.Image) -> bool:
    return flat_share(image) >= FLAT_SHARE
