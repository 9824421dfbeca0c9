"""Is the layout right? Colours in the right places, judged against a Shapes World target.

PSNR punishes a slightly soft edge as much as a wrong object; the layout check asks the coarser
question a person would: is every object of the target there, in its cell, in its colour, and
is the background the right colour everywhere else? It is what "generation layouts correct"
means in the spec's quality goals, and it applies to edits too.

How: every output pixel is given the palette colour nearest to it. A region is one object of
the target, or the background part of one of the nine cells; only its *interior* pixels count:
those whose whole 4x4 supersampled block, and whose 8 neighbours' blocks, belong to that region,
so anti-aliased edges and a one-pixel halo around them are left out. An object is right when at
least `min_share` (80%) of its interior pixels have its colour; a cell's background when at
least `BACKGROUND_SHARE` (95%) do, since a stray small object covers only about a tenth of a
cell. The layout is right when every region is. Shape and size are not judged here (PSNR sees them).
Filtered targets are not judged (None): a filter maps some palette colours close together
(grayscale puts red at 94 and purple at 99), so the nearest colour would not mean much.
"""

from __future__ import annotations

import numpy as np

from openkontext.world.render import PALETTE, SUPERSAMPLE, canvas_size, object_stencil
from openkontext.world.scene import COLORS, Target

MIN_SHARE = 0.8
BACKGROUND_SHARE = 0.95
_INDEX = {name: i for i, name in enumerate(COLORS)}


def region_map(target: Target, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int: object j of the scene -> j, background of cell (r, c) -> -1 - (3r + c), and
    -100 where the pixel is not interior to one region (not judged)."""
    w, h = canvas_size(size)
    s = SUPERSAMPLE
    fine = np.empty((s * h, s * w), dtype=np.int16)
    rows = (np.arange(s * h) * 3) // (s * h)
    cols = (np.arange(s * w) * 3) // (s * w)
    fine[:] = -1 - (3 * rows[:, None] + cols[None, :])
    for j, obj in enumerate(target.scene.objects):  # later objects win, as in rendering
        y0, y1, x0, x1, mask = object_stencil(s * w, s * h, obj.shape, obj.size, obj.cell)
        fine[y0:y1, x0:x1][mask] = j
    blocks = fine.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)
    pure = np.where((blocks == blocks[..., :1]).all(-1), blocks[..., 0], -100)
    padded = np.pad(pure, 1, constant_values=-100)
    interior = np.ones((h, w), dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            interior &= padded[dy : dy + h, dx : dx + w] == pure
    return np.where(interior, pure, -100)


def nearest_colours(output: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) index of the palette colour nearest each pixel."""
    dist = ((output[:, :, None, :].astype(np.int32) - PALETTE.astype(np.int32)) ** 2).sum(-1)
    return dist.argmin(-1)


def layout_correct(output: np.ndarray, target: Target, min_share: float = MIN_SHARE) -> bool | None:
    """True when every object and every cell's background has the target's colour in at least
    `min_share` of its pure pixels; None for filtered targets. output: (H, W, 3) uint8 at the
    size it is judged at."""
    if target.filter is not None:
        return None
    h, w = output.shape[:2]
    regions = region_map(target, (w, h))
    nearest = nearest_colours(output)
    expected = {j: _INDEX[o.color] for j, o in enumerate(target.scene.objects)}
    background = _INDEX[target.scene.background]
    for region in np.unique(regions):
        if region == -100:
            continue
        want, share = (
            (expected[int(region)], min_share)
            if region >= 0
            else (background, max(min_share, BACKGROUND_SHARE))
        )
        if (nearest[regions == region] == want).mean() < share:
            return False
    return True
