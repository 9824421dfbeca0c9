"""benchmarks/mini/shape_latents.py: how far apart the shipped autoencoder keeps the shapes."""

import importlib.util
from pathlib import Path

import pytest

from openkontext.weights import load_model
from openkontext.world.scene import SHAPES

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "shape_latents.py"
spec = importlib.util.spec_from_file_location("shape_latents", SCRIPT)
shape_latents = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shape_latents)


def test_each_set_is_one_object_in_every_shape_and_alike_otherwise():
    sets = shape_latents.shape_sets(6, seed=3)
    assert len(sets) == 6
    for group in sets:
        assert [s.objects[0].shape for s in group] == list(SHAPES)
        rest = {(s.background, o.color, o.cell, o.size) for s in group for o in s.objects}
        assert len(rest) == 1 and all(len(s.objects) == 1 for s in group)
    assert shape_latents.shape_sets(6, seed=3) == sets != shape_latents.shape_sets(6, seed=4)


def test_distances_of_every_pair_in_pixels_and_latent():
    ae = load_model(None).ae.float()
    distances = shape_latents.pair_distances(ae, shape_latents.shape_sets(4, seed=0))
    assert len(distances) == 10
    assert all(pix > 0.01 and lat > 0.01 for pix, lat in distances.values())
    # a circle differs from a triangle of the same circumradius in more pixels than a diamond
    # does (the diamond and triangle share their top point and much of their outline)
    assert distances["circle", "triangle"][0] > distances["triangle", "diamond"][0]
    kept = shape_latents.relative_kept(distances)
    assert sum(kept.values()) / len(kept) == pytest.approx(1.0)
    assert len(set(kept.values())) > 1


def test_no_pictures_is_refused(refused):
    assert "--pictures must be at least 1" in refused(shape_latents.main, "--pictures", "0")


def test_round_trips_matched_to_the_nearest_picture_of_their_set():
    ae = load_model(None).ae.float()
    sets = shape_latents.shape_sets(4, seed=0)
    nearest = shape_latents.round_trip_nearest(ae, sets)
    assert list(nearest) == list(SHAPES)
    assert all(sum(counts.values()) == 4 for counts in nearest.values())
    # a circle comes back a circle at every size; its nearest picture is its own
    assert nearest["circle"] == {"circle": 4, "square": 0, "triangle": 0, "diamond": 0, "star": 0}
