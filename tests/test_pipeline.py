import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from openkontext import flow
from openkontext.imaging import ImageError, image_to_tensor, tensor_to_uint8
from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext, Settings
from openkontext.preserve import changed_region
from openkontext.sampling import initial_noise, round_trip
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene


@pytest.fixture(scope="module")
def kontext():
    return Kontext(LoadedModel.random("mini", seed=0))


@pytest.fixture(scope="module")
def scene_png():
    buf = io.BytesIO()
    to_pil(render(random_scene(random.Random(3), min_objects=2), 64)).save(buf, "PNG")
    return buf.getvalue()


def test_initial_noise_matches_the_reference_draw_and_batches_like_a_loop():
    a = initial_noise([7, 8], 16, 64, 96)
    assert a.shape == (2, 16, 8, 12)
    ref = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[1:], ref)
    # a 4x autoencoder (preset mini-fine) has twice the latent side
    assert initial_noise([7], 16, 64, 96, downsample=4).shape == (1, 16, 16, 24)


def test_same_seed_same_bytes_and_different_seed_differs(kontext, scene_png):
    a = kontext.edit(scene_png, "make the circle blue", seed=5, steps=2).encode("png")[0]
    b = kontext.edit(scene_png, "make the circle blue", seed=5, steps=2).encode("png")[0]
    c = kontext.edit(scene_png, "make the circle blue", seed=6, steps=2).encode("png")[0]
    assert a == b
    assert a != c


def test_batch_equals_loop_of_seeded_calls(kontext, scene_png):
    batch = kontext.edit(scene_png, "remove the square", seed=10, steps=2, num_images=4,
                         preserve=False)
    assert batch.seeds == [10, 11, 12, 13]
    for i, seed in enumerate(batch.seeds):
        single = kontext.edit(scene_png, "remove the square", seed=seed, steps=2, preserve=False)
        diff = np.abs(np.asarray(batch.images[i], int) - np.asarray(single.images[0], int))
        assert diff.max() <= 1  # float tolerance, then rounding to uint8


def test_output_keeps_the_input_aspect_ratio_or_the_requested_one(kontext):
    wide = Image.new("RGB", (640, 360), "white")
    assert (kontext.edit(wide, "x", steps=1).width, kontext.edit(wide, "x", steps=1).height) == (
        80, 48)
    r = kontext.edit(wide, "x", steps=1, aspect_ratio="1:1")
    assert (r.width, r.height) == (64, 64)
    g = kontext.generate("on white: small red circle center", steps=1, width=96, height=64)
    assert (g.width, g.height) == (96, 64)


def test_preserve_keeps_untouched_pixels_bit_identical(kontext, scene_png):
    original = np.asarray(Image.open(io.BytesIO(scene_png)).convert("RGB"))
    r = kontext.edit(scene_png, "make the circle blue", seed=1, steps=2)
    out = np.asarray(r.images[0])
    region = r.changed[0]
    assert np.array_equal(out[~region], original[~region])
    # the region is where the raw output departs from the input's autoencoder round trip
    raw = kontext.edit(scene_png, "make the circle blue", seed=1, steps=2, preserve=False)
    trip = tensor_to_uint8(round_trip(kontext.model, image_to_tensor(original)))[0]
    assert np.array_equal(region, changed_region(trip, np.asarray(raw.images[0])))
    # ... which is not what comparing with the input itself would give
    assert not np.array_equal(region, changed_region(original, np.asarray(raw.images[0])))
    assert np.array_equal(out[region], np.asarray(raw.images[0])[region])


def test_progress_and_cancellation(kontext, scene_png):
    seen = []
    kontext.run("x", [scene_png], Settings(steps=3), on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(flow.Cancelled):
        kontext.run("x", [scene_png], Settings(steps=3), cancelled=lambda: True)


def test_style_preset_extends_the_prompt(kontext):
    r = kontext.generate("a cat", steps=1, style_preset="watercolor")
    assert r.prompt == "a cat, as a watercolor painting"
    with pytest.raises(ValueError, match="unknown style_preset"):
        kontext.generate("a cat", steps=1, style_preset="nope")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_images": 5}, "num_images"),
        ({"steps": 0}, "steps"),
        ({"steps": 51}, "steps"),
        ({"guidance": 30.0}, "guidance"),
        ({"aspect_ratio": "30:9"}, "aspect_ratio"),
    ],
)
def test_bad_settings_are_rejected(kontext, scene_png, settings, message):
    with pytest.raises(ValueError, match=message):
        kontext.edit(scene_png, "x", **settings)


def test_bad_inputs_are_rejected(kontext, scene_png):
    with pytest.raises(ImageError):
        kontext.edit(b"not an image", "x")
    with pytest.raises(ValueError, match="at most 4"):
        kontext.run("x", [scene_png] * 5)
    with pytest.raises(ValueError, match="prompt"):
        kontext.edit(scene_png, "  ")


def test_extra_references_are_accepted(kontext, scene_png):
    r = kontext.edit(scene_png, "put the star from image 2 here", references=[scene_png],
                     steps=1)
    assert (r.width, r.height) == (64, 64)


def test_run_many_equals_separate_runs(kontext, scene_png):
    other = np.asarray(Image.open(io.BytesIO(scene_png)).convert("RGB"))[:, ::-1].copy()
    requests = [
        ("make the circle blue", [scene_png], Settings(seed=3, steps=2, preserve=False)),
        (
            "remove the square",
            [Image.fromarray(other)],
            Settings(seed=9, steps=2, num_images=2, preserve=False),
        ),
        ("add a red star", [scene_png], Settings(seed=4, steps=2)),
    ]
    batch = kontext.run_many(requests)
    assert [r.seeds for r in batch] == [[3], [9, 10], [4]]
    assert [r.prompt for r in batch] == [p for p, _, _ in requests]
    for result, (prompt, images, settings) in zip(batch, requests, strict=True):
        alone = kontext.run(prompt, images, settings)
        assert (result.width, result.height) == (alone.width, alone.height)
        for a, b in zip(result.images, alone.images, strict=True):
            diff = np.abs(np.asarray(a, int) - np.asarray(b, int))
            assert diff.max() <= 1  # float tolerance, then rounding to uint8
    # Different prompts really give different pictures; paste-back applies per request.
    assert not np.array_equal(np.asarray(batch[0].images[0]), np.asarray(batch[2].images[0]))
    assert batch[2].changed and not batch[0].changed


def test_run_many_refuses_requests_that_cannot_share_a_batch(kontext, scene_png):
    with pytest.raises(ValueError, match="share steps"):
        kontext.run_many(
            [("x", [scene_png], Settings(steps=1)), ("y", [scene_png], Settings(steps=2))]
        )
    with pytest.raises(ValueError, match="share steps"):
        kontext.run_many([("x", [], Settings(steps=1)), ("y", [scene_png], Settings(steps=1))])
    wide = Image.new("RGB", (640, 360), "white")
    with pytest.raises(ValueError, match="share steps"):
        kontext.run_many(
            [
                ("x", [wide], Settings(steps=1, aspect_ratio="1:1")),
                ("y", [scene_png], Settings(steps=1)),
            ]
        )
    plan = kontext.plan("x", [scene_png], Settings(steps=1))
    assert plan.batch_key == kontext.plan("y", [scene_png], Settings(steps=1)).batch_key


def test_cpu_offload_gives_the_same_bytes_and_leaves_weights_on_the_cpu(scene_png):
    import dataclasses

    base = LoadedModel.random("mini", seed=0)
    plain = Kontext(base).edit(scene_png, "make the circle blue", seed=2, steps=2)
    offloaded = Kontext(dataclasses.replace(base, offload=True))
    out = offloaded.edit(scene_png, "make the circle blue", seed=2, steps=2)
    assert out.encode("png") == plain.encode("png")
    for part in (base.flux, base.ae, base.text):
        assert {p.device.type for p in part.parameters()} == {"cpu"}


def test_guidance_is_classifier_free_on_a_model_trained_for_it_and_ignored_elsewhere(scene_png):
    """mini has no guidance embedding: guidance is ignored, unless the preset says the model
    was trained with dropped instructions; then it is the classifier-free scale (1 = none)."""
    import dataclasses

    from openkontext.model import get_preset

    plain = Kontext(LoadedModel.random("mini", seed=0))
    cfg_preset = dataclasses.replace(get_preset("mini"), classifier_free=True)
    guided = Kontext(LoadedModel.random(cfg_preset, seed=0))  # the same weights

    def pixels(k, guidance):
        r = k.edit(scene_png, "make the circle blue", seed=3, steps=2, guidance=guidance,
                   preserve=False)
        return np.asarray(r.images[0], int)

    assert np.array_equal(pixels(plain, 1.0), pixels(plain, 4.0))
    assert np.array_equal(pixels(guided, 1.0), pixels(plain, 4.0))
    assert np.abs(pixels(guided, 4.0) - pixels(guided, 1.0)).max() > 0


def test_fitted_positions_change_a_non_square_edit_and_leave_a_square_one(scene_png):
    """A preset trained with fitted positions samples with them: on the native square they are
    the token counts (the same pictures), on another canvas other positions (other pictures)."""
    import dataclasses

    from openkontext.model import get_preset

    token = Kontext(LoadedModel.random("mini", seed=0))
    fitted = Kontext(LoadedModel.random(
        dataclasses.replace(get_preset("mini"), fit_positions=True), seed=0))
    wide = io.BytesIO()
    Image.open(io.BytesIO(scene_png)).resize((96, 48)).save(wide, "PNG")

    def pixels(k, png):
        r = k.edit(png, "make the circle blue", seed=3, steps=2, preserve=False)
        return np.asarray(r.images[0], int)

    assert np.array_equal(pixels(token, scene_png), pixels(fitted, scene_png))
    assert np.abs(pixels(token, wide.getvalue()) - pixels(fitted, wide.getvalue())).max() > 0
