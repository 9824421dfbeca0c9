"""benchmarks/mini/object_colours.py: the tallies it prints, judged on pictures of known colours."""

import importlib.util
import random
from pathlib import Path

from openkontext.world.layout import region_map
from openkontext.world.render import render_targets
from openkontext.world.sampling import edit_samples
from openkontext.world.scene import COLORS, alike_shapes

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "object_colours.py"
spec = importlib.util.spec_from_file_location("object_colours", SCRIPT)
object_colours = importlib.util.module_from_spec(spec)
spec.loader.exec_module(object_colours)

SIZE = 64


def recolours(count: int = 24):
    samples = edit_samples(random.Random(3), count, kinds=["recolor"])
    return samples, render_targets([s.target for s in samples], SIZE)


def named_of(sample):
    """The object a recolour names, as the target holds it (its new colour)."""
    return next(o for o in sample.target.scene.objects if o not in set(sample.source.objects))


def test_the_targets_themselves_score_every_object_right():
    samples, pixels = recolours()
    tally = object_colours._tally("recolor", samples, pixels, SIZE)
    assert tally["edited", "total"] == len(samples) == tally["recolor", "asked"]
    assert tally["untouched", "right"] == tally["untouched", "total"] > 0
    assert tally["wrong", "count"] == 0
    assert tally["all", "count"] == tally["untouched", "total"]
    assert tally["all", "named asked"] == tally["all", "count"]


def test_an_untouched_object_painted_the_asked_colour_counts_as_a_bystander():
    samples, pixels = recolours()
    # a picture with an untouched object whose colour is not the asked one
    i, j = next((i, j) for i, s in enumerate(samples)
                for j, o in enumerate(s.target.scene.objects) if o.color != named_of(s).color)
    sample, image = samples[i], pixels[i].copy()
    named, other = named_of(sample), sample.target.scene.objects[j]
    image[region_map(sample.target, (SIZE, SIZE)) == j] = COLORS[named.color]
    tally = object_colours._tally("recolor", [sample], image[None], SIZE)
    assert tally["untouched", "right"] == tally["untouched", "total"] - 1
    assert tally["recolor", "asked"] == 1  # the named object is still right
    assert tally["wrong", "count"] == 1 and tally["wrong", "asked colour"] == 1
    assert tally["wrong", "named asked"] == 1  # the edit landed on both
    assert tally["wrong", "same shape"] == (other.shape == named.shape)
    assert tally["wrong", "same old colour"] == (other.color == sample.source.at(named.cell).color)
    assert tally["wrong", "next cell"] == object_colours._next_to(other.cell, named.cell)
    sizes = object_colours.SIZES
    assert tally["wrong", "larger"] == (sizes[other.size] > sizes[named.size])
    assert tally["wrong", "same size"] == (other.size == named.size)
    cells = object_colours.CELLS
    assert tally["wrong", "read first"] == (cells.index(other.cell) < cells.index(named.cell))
    assert tally["wrong", "alike shape"] == alike_shapes(other.shape, named.shape)
    distance = object_colours._distance
    nearest = min(distance(o.color, named.color) for o in sample.target.scene.objects
                  if o is not named)
    assert tally["wrong", "closest colour"] == (distance(other.color, named.color) == nearest)
    assert tally["painted", named.shape, other.shape] == 1
    assert tally["beside", named.shape, other.shape] >= 1
    assert sum(n for key, n in tally.items() if key[0] == "beside") == tally["all", "count"]
    split = object_colours.painted_by_likeness(tally)
    alike = alike_shapes(other.shape, named.shape)
    assert split[alike][0] == 1 and split[not alike][0] == 0
    assert split[True][1] + split[False][1] == tally["all", "count"]
    assert split[True][1] == tally["all", "alike shape"]
    assert tally["all", "count"] == tally["untouched", "total"]


def test_closest_colour_and_alike_shapes():
    assert object_colours._distance("red", "red") == 0
    assert object_colours._distance("red", "orange") < object_colours._distance("red", "cyan")
    assert alike_shapes("star", "diamond") and alike_shapes("square", "circle")
    assert not alike_shapes("star", "star")
    assert not alike_shapes("circle", "triangle")


def test_next_cell_is_one_of_the_eight_around():
    around = [c for c in ("top left", "top", "top right", "left", "center", "right",
                          "bottom left", "bottom", "bottom right")
              if object_colours._next_to(c, "top left")]
    assert around == ["top", "left", "center"]
    assert object_colours._next_to("right", "center") and not object_colours._next_to("top", "top")
    assert not object_colours._next_to("top left", "bottom right")
