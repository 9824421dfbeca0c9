"""The Shapes World likeness test: renders, filtered targets and the model's outputs pass;
photo-like pictures and smooth gradients do not."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from openkontext.world.likeness import FLAT_SHARE, flat_share, looks_like_shapes_world
from openkontext.world.render import render_batch, render_targets
from openkontext.world.sampling import sample_edit
from openkontext.world.scene import random_scene


def test_renders_at_any_size_and_filtered_targets_look_like_shapes_world():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(200)]
    for size in (64, (96, 64), 256):
        shares = [flat_share(Image.fromarray(x)) for x in render_batch(scenes, size)]
        assert min(shares) > 0.9, size
    targets = [sample_edit(rng, kinds=[k]).target
               for k in ("grayscale", "invert", "night") for _ in range(30)]
    assert all(looks_like_shapes_world(Image.fromarray(x)) for x in render_targets(targets))


def test_photo_like_pictures_and_gradients_do_not():
    noise = np.random.default_rng(0)
    for i in range(20):
        coarse = (noise.random((8 - i % 6, 6, 3)) * 255).astype(np.uint8)
        smooth = Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC)
        grainy = np.asarray(smooth) + noise.normal(0, 8, (480, 640, 3))
        photo = Image.fromarray(np.clip(grainy, 0, 255).astype(np.uint8))
        assert flat_share(photo) < 0.1
        assert flat_share(smooth) < FLAT_SHARE / 2
        assert not looks_like_shapes_world(photo)


def test_the_embedded_models_outputs_look_like_shapes_world():
    from openkontext import Kontext

    kontext = Kontext.load()
    for i in range(6):
        sample = sample_edit(random.Random(i))
        source, _, _ = sample.images(64)
        out = kontext.edit(Image.fromarray(source), sample.instruction, seed=1).images[0]
        assert flat_share(out) > 0.75, sample.instruction
