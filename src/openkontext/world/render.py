"""Deterministic rendering of Shapes World scenes, and the exact global filters.

How a scene becomes pixels (canvas W x H, square by default):

1. A label map of colour indices is drawn at 4x the size (4W x 4H). A fine pixel (i, j) belongs
   to a shape when its centre (j + 0.5, i + 0.5) passes the shape's inside test (boundary
   included). Objects are drawn in reading order of their cells, so where two large shapes in
   neighbouring cells touch, the later cell wins — the picture depends only on the scene.
2. Geometry, in fine pixels: the centre of cell (row, col) is ((col + 0.5) / 3 * 4W,
   (row + 0.5) / 3 * 4H); the circumradius is r = SIZES[size] * min(4W, 4H). The circle has
   radius r; the square (axis-aligned), triangle (equilateral, apex up), diamond (a rhombus of
   half-height r and half-width DIAMOND_WIDTH * r) and star (5 points, the outer ones on the
   circle, the inner ones at STAR_INNER * r, one point straight up) are inscribed in it.
3. Each 4x4 block is replaced by its mean colour, rounded half up: (sum + 8) // 16.

Filters act on the rendered uint8 pixels (at the output size) with integer arithmetic:

- grayscale: v = (299 R + 587 G + 114 B + 500) // 1000 on all three channels.
- invert:    255 - x on every channel.
- night:     R' = round(0.30 R), G' = round(0.35 G + 5), B' = round(0.55 B + 30), halves rounded
             up; a darkening with a blue tint (always within 0..255, clipped anyway).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from openkontext.world.scene import COLORS, SIZES, Scene, Target, cell_row_col

SUPERSAMPLE = 4  # fixed by the spec; `downsample` is written for exactly 4
STAR_INNER = 0.45  # inner radius of the star / its circumradius
DIAMOND_WIDTH = 0.75  # half-width of the diamond / its circumradius (half-height is 1)

PALETTE = np.array(list(COLORS.values()), dtype=np.uint16)  # (11, 3)
# The palette packed as R << 20 | G << 10 | B, for `downsample`.
_PACKED = (PALETTE[:, 0].astype(np.uint32) << 20) | (PALETTE[:, 1].astype(np.uint32) << 10) \
    | PALETTE[:, 2].astype(np.uint32)
_COLOR_INDEX = {name: i for i, name in enumerate(COLORS)}

Size = int | tuple[int, int]


def canvas_size(size: Size) -> tuple[int, int]:
    """(W, H) from an int (square) or a (W, H) pair; both must be positive."""
    w, h = (size, size) if isinstance(size, int | np.integer) else size
    if w < 1 or h < 1:
        raise ValueError(f"canvas size must be positive, got {w}x{h}")
    return int(w), int(h)


# -- geometry -------------------------------------------------------------------------------

def _unit_polygons(shape: str) -> list[list[tuple[float, float]]]:
    """Convex pieces of a shape of circumradius 1 centred at the origin, y pointing down."""
    if shape == "square":
        s = math.sqrt(0.5)
        return [[(-s, -s), (s, -s), (s, s), (-s, s)]]
    if shape == "triangle":
        c = math.sqrt(3) / 2
        return [[(0.0, -1.0), (c, 0.5), (-c, 0.5)]]
    if shape == "diamond":
        w = DIAMOND_WIDTH
        return [[(0.0, -1.0), (w, 0.0), (0.0, 1.0), (-w, 0.0)]]
    if shape == "star":
        def point(deg: float, rad: float) -> tuple[float, float]:
            a = math.radians(deg)
            return (rad * math.cos(a), rad * math.sin(a))
        # Kite k: centre, inner point before outer point k, outer point k, inner point after.
        return [
            [(0.0, 0.0), point(-90 + 72 * k - 36, STAR_INNER), point(-90 + 72 * k, 1.0),
             point(-90 + 72 * k + 36, STAR_INNER)]
            for k in range(5)
        ]
    raise ValueError(f"no polygon for shape {shape!r}")


def _inside_convex(x: np.ndarray, y: np.ndarray, poly: list[tuple[float, float]]) -> np.ndarray:
    """Points (x, y) inside or on a convex polygon, whatever its vertex order."""
    edges = list(zip(poly, poly[1:] + poly[:1], strict=True))
    sign = 1.0 if sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges) > 0 else -1.0
    inside = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for (x0, y0), (x1, y1) in edges:
        inside &= sign * ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) >= 0
    return inside


@lru_cache(maxsize=4096)
def object_stencil(fine_w: int, fine_h: int, shape: str, size: str, cell: str):
    """Where one object covers the fine grid: (y0, y1, x0, x1, mask (y1-y0, x1-x0) bool)."""
    row, col = cell_row_col(cell)
    cx = (col + 0.5) / 3 * fine_w
    cy = (row + 0.5) / 3 * fine_h
    r = SIZES[size] * min(fine_w, fine_h)
    x0, x1 = max(0, math.floor(cx - r) - 1), min(fine_w, math.ceil(cx + r) + 1)
    y0, y1 = max(0, math.floor(cy - r) - 1), min(fine_h, math.ceil(cy + r) + 1)
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :] / r
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None] / r
    if shape == "circle":
        mask = dx * dx + dy * dy <= 1.0
    else:
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for poly in _unit_polygons(shape):
            mask |= _inside_convex(dx, dy, poly)
    mask.setflags(write=False)
    return y0, y1, x0, x1, mask


# -- rendering ------------------------------------------------------------------------------

def label_maps(scenes: list[Scene], size: Size) -> np.ndarray:
    """Colour indices at 4x resolution: (B, 4H, 4W) uint8."""
    w, h = canvas_size(size)
    fw, fh = SUPERSAMPLE * w, SUPERSAMPLE * h
    labels = np.empty((len(scenes), fh, fw), dtype=np.uint8)
    for b, scene in enumerate(scenes):
        labels[b] = _COLOR_INDEX[scene.background]
        for obj in scene.objects:  # already in reading order of cells
            y0, y1, x0, x1, mask = object_stencil(fw, fh, obj.shape, obj.size, obj.cell)
            labels[b, y0:y1, x0:x1][mask] = _COLOR_INDEX[obj.color]
    return labels


def downsample(labels: np.ndarray) -> np.ndarray:
    """Mean colour of every 4x4 block, rounded half up: (B, 4H, 4W) labels -> (B, H, W, 3) uint8.

    For speed the three channels travel packed in one uint32 (10 bits each) through the sum
    over block rows (at most 4 * 255 = 1020 per field), then are unpacked for the column sum.
    """
    s = SUPERSAMPLE
    fine = np.take(_PACKED, labels)  # (B, 4H, 4W) uint32
    rows = fine[:, 0::s] + fine[:, 1::s] + fine[:, 2::s] + fine[:, 3::s]  # (B, H, 4W)
    b, h, fw = rows.shape
    chans = np.empty((b, h, fw, 3), dtype=np.uint16)
    chans[..., 0] = rows >> 20
    chans[..., 1] = (rows >> 10) & 1023
    chans[..., 2] = rows & 1023
    total = chans[:, :, 0::s] + chans[:, :, 1::s] + chans[:, :, 2::s] + chans[:, :, 3::s]
    return ((total + s * s // 2) // (s * s)).astype(np.uint8)


def render_batch(scenes: list[Scene], size: Size = 64) -> np.ndarray:
    """Render scenes: (B, H, W, 3) uint8.

    Equal to `downsample(label_maps(scenes, size))`, but only the 4x4 blocks under some object's
    bounding box are averaged; every other block is pure background.
    """
    w, h = canvas_size(size)
    s = SUPERSAMPLE
    labels = label_maps(scenes, (w, h))
    out = np.empty((len(scenes), h, w, 3), dtype=np.uint8)
    for b, scene in enumerate(scenes):
        out[b] = PALETTE[_COLOR_INDEX[scene.background]]
        for obj in scene.objects:
            y0, y1, x0, x1, _ = object_stencil(s * w, s * h, obj.shape, obj.size, obj.cell)
            by0, by1, bx0, bx1 = y0 // s, -(-y1 // s), x0 // s, -(-x1 // s)
            block = labels[b:b + 1, by0 * s:by1 * s, bx0 * s:bx1 * s]
            out[b, by0:by1, bx0:bx1] = downsample(block)[0]
    return out


def render(scene: Scene, size: Size = 64) -> np.ndarray:
    """Render one scene: (H, W, 3) uint8."""
    return render_batch([scene], size)[0]


def render_targets(targets: list[Target], size: Size = 64) -> np.ndarray:
    """Render targets (scene, then filter): (B, H, W, 3) uint8."""
    images = render_batch([t.scene for t in targets], size)
    for i, t in enumerate(targets):
        if t.filter is not None:
            images[i] = apply_filter(images[i], t.filter)
    return images


def render_target(target: Target, size: Size = 64) -> np.ndarray:
    """Render one target: (H, W, 3) uint8."""
    return render_targets([target], size)[0]


# -- filters --------------------------------------------------------------------------------

_NIGHT_SCALE = np.array([300, 350, 550], dtype=np.int32)  # per mille
_NIGHT_OFFSET = np.array([0, 5000, 30000], dtype=np.int32)  # per mille


def apply_filter(image: np.ndarray, name: str) -> np.ndarray:
    """One of FILTERS on uint8 pixels (..., 3); returns a new uint8 array of the same shape."""
    x = image.astype(np.int32)
    if name == "grayscale":
        v = (299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000
        out = np.repeat(v[..., None], 3, axis=-1)
    elif name == "invert":
        out = 255 - x
    elif name == "night":
        out = (x * _NIGHT_SCALE + _NIGHT_OFFSET + 500) // 1000
    else:
        raise ValueError(f"unknown filter {name!r}")
    return np.clip(out, 0, 255).astype(np.uint8)


# -- masks and conversions ------------------------------------------------------------------

def change_mask(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pixels whose value differs in any channel: (..., H, W, 3) x2 -> (..., H, W) bool."""
    return np.any(source != target, axis=-1)


_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]: v / 127.5 - 1.

    Converted with numpy (a lookup table): torch's elementwise ops on a busy 2-core machine
    were 30x slower here.
    """
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.take(_TO_UNIT, images.transpose(0, 3, 1, 2)))


def to_pil(image: np.ndarray):
    """uint8 (H, W, 3) -> PIL RGB image; (H, W) bool -> PIL L image (0 / 255)."""
    from PIL import Image

    if image.dtype == bool:
        return Image.fromarray(image.astype(np.uint8) * 255, mode="L")
    return Image.fromarray(image, mode="RGB")


def cell_centre(cell: str, size: Size) -> tuple[float, float]:
    """(x, y) of a cell centre in output pixels (continuous coordinates)."""
    w, h = canvas_size(size)
    row, col = cell_row_col(cell)
    return (col + 0.5) / 3 * w, (row + 0.5) / 3 * h

