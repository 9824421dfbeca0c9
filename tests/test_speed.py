"""The speed knob through the pipeline: quality is every block of every step, the others skip
steps, and requests of different speeds never share a batch."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest

from openkontext import imaging
from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext, Settings
from openkontext.sampling import run_tensors
from openkontext.speed import DEFAULT_SPEED, SPEEDS, check_speed
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene

STEPS = 6


@pytest.fixture(scope="module")
def kontext():
    speeds = {**SPEEDS, "never": 0.0, "always": math.inf}
    return Kontext(LoadedModel.random("mini", seed=0), speeds=speeds)


@pytest.fixture(scope="module")
def scene_png():
    buf = io.BytesIO()
    to_pil(render(random_scene(random.Random(3), min_objects=2), 64)).save(buf, "PNG")
    return buf.getvalue()


def _edit(kontext, scene_png, speed=None, seed=1):
    return kontext.edit(scene_png, "make the circle blue", seed=seed, steps=STEPS, speed=speed)


def test_quality_and_a_threshold_of_zero_give_the_bytes_of_no_cache(kontext, scene_png):
    plain = _edit(kontext, scene_png, "quality")
    assert plain.speed == "quality" and plain.skipped_steps == 0
    never = _edit(kontext, scene_png, "never")
    assert never.skipped_steps == 0
    assert plain.encode() == never.encode()
    # What no cache at all makes: the tensor core called without one.
    scene = imaging.image_to_tensor(imaging.load_image(scene_png))
    raw = run_tensors(kontext.model, ["make the circle blue"], [1], 64, 64, STEPS, None, [scene])
    plain = Kontext(kontext.model).edit(
        scene_png, "make the circle blue", seed=1, steps=STEPS, speed="quality", preserve=False
    )
    assert np.array_equal(np.asarray(plain.images[0]), imaging.tensor_to_uint8(raw)[0])


def test_the_default_speed_is_balanced(kontext, scene_png):
    assert DEFAULT_SPEED == "balanced" and SPEEDS["quality"] is None
    assert _edit(kontext, scene_png).speed == "balanced"
    assert (
        kontext.plan("x", [scene_png]).batch_key
        == kontext.plan("x", [scene_png], Settings(speed="balanced")).batch_key
    )


def test_a_huge_threshold_runs_the_first_step_whole_and_still_makes_a_picture(kontext, scene_png):
    plain, fast = _edit(kontext, scene_png), _edit(kontext, scene_png, "always")
    assert fast.skipped_steps == STEPS - 1
    image = np.asarray(fast.images[0])
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 0  # not a blank or NaN-cast picture
    assert fast.encode() != plain.encode()


def test_speeds_check_their_names_and_never_share_a_batch(kontext, scene_png):
    assert check_speed(None) == DEFAULT_SPEED and check_speed("fast") == "fast"
    with pytest.raises(ValueError, match="'warp'.*quality, balanced, fast"):
        check_speed("warp")
    with pytest.raises(ValueError, match="unknown speed 'warp'"):
        _edit(kontext, scene_png, "warp")
    fast = kontext.plan("x", [scene_png], Settings(speed="fast"))
    assert fast.batch_key != kontext.plan("x", [scene_png], Settings(speed="quality")).batch_key
    with pytest.raises(ValueError, match="share steps"):
        kontext.run_many(
            [
                ("x", [scene_png], Settings(speed="fast")),
                ("y", [scene_png], Settings(speed="quality")),
            ]
        )


def test_run_many_with_caching_equals_separate_runs(kontext, scene_png):
    """The cache decides per row, so a batched request gets what it gets alone."""
    settings = [Settings(seed=s, steps=STEPS, speed="fast") for s in (1, 2)]
    batch = kontext.run_many([("make the circle blue", [scene_png], s) for s in settings])
    for got, s in zip(batch, settings, strict=True):
        alone = kontext.run("make the circle blue", [scene_png], s)
        diff = np.abs(np.asarray(got.images[0], int) - np.asarray(alone.images[0], int))
        assert diff.max() <= 1
