import math
import random

import numpy as np
import pytest
import torch

from openkontext.world.render import (
    DIAMOND_WIDTH,
    STAR_INNER,
    apply_filter,
    cell_centre,
    change_mask,
    downsample,
    label_maps,
    object_stencil,
    render,
    render_batch,
    render_target,
    to_pil,
    to_tensor,
)
from openkontext.world.scene import CELLS, COLORS, SHAPES, Obj, Scene, Target, random_scene


def _scene(*objs, background="white"):
    return Scene(background, tuple(Obj(*o) for o in objs))


def test_rendering_is_deterministic_and_batch_independent():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(12)]
    batch = render_batch(scenes, 48)
    assert batch.shape == (12, 48, 48, 3) and batch.dtype == np.uint8
    assert render_batch(scenes, 48).tobytes() == batch.tobytes()
    for scene, image in zip(scenes, batch, strict=True):
        assert render(scene, 48).tobytes() == image.tobytes()


@pytest.mark.parametrize("size", [64, 17, (40, 24)])
def test_fast_path_equals_full_supersampled_average(size):
    rng = random.Random(1)
    scenes = [random_scene(rng, 2, 4) for _ in range(10)]
    assert np.array_equal(render_batch(scenes, size), downsample(label_maps(scenes, size)))


def test_downsample_is_the_rounded_block_mean():
    labels = np.zeros((1, 4, 4), dtype=np.uint8)  # red
    labels[0, :, :1] = list(COLORS).index("black")  # 4 of 16 fine pixels black
    out = downsample(labels)[0, 0, 0]
    expected = [math.floor((12 * r + 4 * b) / 16 + 0.5)
                for r, b in zip(COLORS["red"], COLORS["black"], strict=True)]
    assert out.tolist() == expected


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_colours_at_object_centres_and_background_corners(shape):
    cells = ["top left", "center", "bottom right"]
    scene = _scene(*((shape, c, cell, "small") for c, cell in zip(
        ["red", "blue", "pink"], cells, strict=True)), background="green")
    image = render(scene, 64)
    for color, cell in zip(["red", "blue", "pink"], cells, strict=True):
        x, y = cell_centre(cell, 64)
        assert tuple(image[int(y), int(x)]) == COLORS[color]
    for y, x in [(0, 63), (63, 0), (0, 32), (63, 32)]:
        assert tuple(image[y, x]) == COLORS["green"]


@pytest.mark.parametrize("shape, area", [
    ("circle", math.pi),
    ("square", 2.0),
    ("triangle", 3 * math.sqrt(3) / 4),
    ("diamond", 2 * DIAMOND_WIDTH),
    ("star", 5 * STAR_INNER * math.sin(math.radians(36))),
])
def test_shape_areas_match_their_geometry(shape, area):
    # Area in units of r^2, counted on the fine grid of a 256 px canvas (r = 174 fine px).
    *_, mask = object_stencil(1024, 1024, shape, "large", "center")
    r = 0.17 * 1024
    assert mask.sum() == pytest.approx(area * r * r, rel=0.005)


def test_circle_coverage_after_downsampling_is_pi_r_squared():
    scene = _scene(("circle", "black", "center", "medium"), background="white")
    image = render(scene, 64).astype(np.float64)
    coverage = (COLORS["white"][0] - image[..., 0]) / (COLORS["white"][0] - COLORS["black"][0])
    r = 0.13 * 64
    assert coverage.sum() == pytest.approx(math.pi * r * r, rel=0.005)


def test_sizes_scale_the_circumradius():
    counts = [object_stencil(256, 256, "circle", s, "center")[-1].sum()
              for s in ("small", "medium", "large")]
    ratios = [c / counts[2] for c in counts]
    assert ratios == pytest.approx([(0.09 / 0.17) ** 2, (0.13 / 0.17) ** 2, 1.0], rel=0.01)


def test_triangle_points_up_and_star_has_five_points():
    *_, tri = object_stencil(256, 256, "triangle", "large", "center")
    rows = tri.sum(axis=1)
    filled = np.nonzero(rows)[0]
    assert rows[filled[0]] < rows[filled[-1]]  # narrow apex on top, wide base below
    *_, star = object_stencil(256, 256, "star", "large", "center")
    h, w = star.shape
    # Walk a circle at 0.8 r: it crosses in and out of the points exactly 5 times.
    r = 0.17 * 256 * 0.8
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ys = (h / 2 + r * np.sin(angles)).astype(int)
    xs = (w / 2 + r * np.cos(angles)).astype(int)
    ring = star[ys, xs].astype(int)
    assert int(np.sum(np.diff(np.append(ring, ring[0])) == 1)) == 5
    assert star[int(h / 2 - r), w // 2]  # a point straight up


def test_objects_sit_in_their_cells_on_non_square_canvases():
    scene = _scene(("square", "black", "right", "small"))
    image = render(scene, (90, 30))
    assert image.shape == (30, 90, 3)
    ys, xs = np.nonzero(image[..., 0] < 200)
    assert xs.min() >= 60 and xs.max() < 90 and ys.max() < 30
    assert (xs.mean(), ys.mean()) == pytest.approx((75, 15), abs=0.6)


def test_filters_are_the_documented_integer_transforms():
    red = np.array([[list(COLORS["red"])]], dtype=np.uint8)
    assert apply_filter(red, "grayscale")[0, 0].tolist() == [94, 94, 94]
    assert apply_filter(red, "invert")[0, 0].tolist() == [35, 215, 215]
    assert apply_filter(red, "night")[0, 0].tolist() == [66, 19, 52]
    x = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    f = x.astype(np.float64)
    gray = np.floor(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2] + 0.5 + 1e-9)
    assert np.array_equal(apply_filter(x, "grayscale"), np.repeat(gray[..., None], 3, -1))
    assert np.array_equal(apply_filter(x, "invert"), 255 - x)
    night = np.floor(f * [0.30, 0.35, 0.55] + [0, 5, 30] + 0.5 + 1e-9)
    assert np.array_equal(apply_filter(x, "night"), night)
    with pytest.raises(ValueError, match="unknown filter"):
        apply_filter(x, "sepia")


def test_target_rendering_applies_the_filter_after_the_scene():
    scene = _scene(("star", "red", "center", "large"), background="cyan")
    plain = render(scene, 32)
    for name in ("grayscale", "invert", "night"):
        assert np.array_equal(render_target(Target(scene, name), 32), apply_filter(plain, name))
    assert np.array_equal(render_target(Target(scene), 32), plain)


def test_change_mask_and_conversions():
    a = render(_scene(("circle", "red", "top", "small")), 32)
    b = render(_scene(("circle", "blue", "top", "small")), 32)
    mask = change_mask(a, b)
    assert mask.dtype == bool and mask.shape == (32, 32)
    assert np.array_equal(mask, (a != b).any(-1)) and 0 < mask.sum() < 32 * 32 / 9
    t = to_tensor(np.stack([a, b]))
    assert t.shape == (2, 3, 32, 32) and t.dtype == torch.float32
    assert torch.equal(t[0, :, 0, 0], torch.tensor(COLORS["white"]) / 127.5 - 1)
    assert to_tensor(a).shape == (1, 3, 32, 32)
    assert to_pil(a).size == (32, 32) and to_pil(mask).mode == "L"


def test_every_cell_renders_its_object_inside_the_cell():
    for cell in CELLS:
        image = render(_scene(("diamond", "black", cell, "medium")), 48)
        ys, xs = np.nonzero(image[..., 0] < 200)
        x, y = cell_centre(cell, 48)
        assert abs(xs.mean() + 0.5 - x) < 0.5 and abs(ys.mean() + 0.5 - y) < 0.5
