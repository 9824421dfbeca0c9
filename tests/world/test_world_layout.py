"""The layout check: right colours in the right places, blind to soft edges and small noise."""

from __future__ import annotations

import random

import numpy as np
import pytest

from openkontext.world.edits import apply_edit, possible_kinds, random_edit
from openkontext.world.layout import layout_correct, region_map
from openkontext.world.render import render, render_target
from openkontext.world.scene import Scene, Target, random_scene

ONE = Scene.from_json('{"background": "yellow", "objects": [{"shape": "circle", "color": "red", '
                      '"cell": "center", "size": "small"}]}')


def _colours(scene: Scene) -> tuple:
    return scene.background, sorted((o.cell, o.color) for o in scene.objects)


@pytest.mark.parametrize("size", [64, (96, 64), 128])
def test_ground_truth_is_always_correct(size):
    rng = random.Random(1)
    for _ in range(40):
        target = Target(random_scene(rng))
        assert layout_correct(render_target(target, size), target) is True


def test_noise_and_blur_keep_a_layout_correct():
    rng, noise = random.Random(2), np.random.default_rng(0)
    for _ in range(20):
        target = Target(random_scene(rng, min_objects=1))
        image = render_target(target, 64).astype(np.int32)
        noisy = np.clip(image + noise.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        assert layout_correct(noisy, target)
        blurred = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1)) // 3
        assert layout_correct(blurred.astype(np.uint8), target)


@pytest.mark.parametrize("kind", ["recolor", "remove", "add", "move", "background", "swap"])
def test_an_edit_not_made_is_a_wrong_layout(kind):
    """The input scored against an edit's target: every edit that moves colours fails (a swap
    of two objects of one colour changes only shapes, which the layout does not judge)."""
    rng, judged = random.Random(3), 0
    while judged < 15:
        scene = random_scene(rng, min_objects=2)
        if kind not in possible_kinds(scene):
            continue
        target = apply_edit(scene, random_edit(scene, kind, rng))
        if _colours(target.scene) == _colours(scene):
            continue
        assert layout_correct(render(scene, 64), target) is False, (kind, scene)
        judged += 1


def test_counts_and_exclusions():
    regions = region_map(Target(ONE), (64, 64))
    assert (regions == 0).sum() == 52  # the small circle's interior pixels (radius 5.76 px)
    assert set(np.unique(regions)) == {-100, 0, *range(-9, 0)}
    image = render(ONE, 64)
    wrong = image.copy()
    wrong[regions == 0] = (40, 80, 220)  # the circle turned blue
    assert layout_correct(wrong, Target(ONE)) is False
    half = image.copy()
    ys, xs = np.nonzero(regions == 0)
    half[ys[:15], xs[:15]] = (40, 80, 220)  # 15 of 52 pixels: 71% right, below 80%
    assert layout_correct(half, Target(ONE)) is False
    assert layout_correct(half, Target(ONE), min_share=0.6) is True
    stray = image.copy()
    stray[2:14, 2:14] = (25, 25, 25)  # a black object appears in the top left cell
    assert layout_correct(stray, Target(ONE)) is False
    assert layout_correct(image, Target(ONE, "grayscale")) is None
