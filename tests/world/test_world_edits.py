import random

import numpy as np
import pytest

from openkontext.world.edits import (
    KINDS,
    NEUTRAL_COLORS,
    Edit,
    apply_edit,
    can_edit,
    edit_options,
    edit_slots,
    random_edit,
    reference,
)
from openkontext.world.phrasings import INSTRUCTIONS
from openkontext.world.render import (
    SUPERSAMPLE,
    change_mask,
    object_stencil,
    render,
    render_target,
)
from openkontext.world.scene import COLORS, SIZES, Obj, Scene, Target, random_scene

SIZE = 32


def _scenes(n=25, seed=0):
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(n)]


def _footprint(obj: Obj) -> np.ndarray:
    """Output pixels an object can touch (its stencil's bounding box): (SIZE, SIZE) bool."""
    y0, y1, x0, x1, _ = object_stencil(SUPERSAMPLE * SIZE, SUPERSAMPLE * SIZE, obj.shape,
                                       obj.size, obj.cell)
    out = np.zeros((SIZE, SIZE), dtype=bool)
    out[y0 // SUPERSAMPLE:-(-y1 // SUPERSAMPLE), x0 // SUPERSAMPLE:-(-x1 // SUPERSAMPLE)] = True
    return out


def test_references_use_shape_then_colour_and_shape():
    scene = Scene("white", (Obj("circle", "red", "top", "small"),
                            Obj("circle", "blue", "left", "small"),
                            Obj("star", "red", "center", "large"),
                            Obj("star", "red", "right", "small")))
    refs = [reference(scene, o) for o in scene.objects]
    assert refs == ["red circle", "blue circle", None, None]
    # The two red stars cannot be named, so no edit ever acts on them.
    for kind in KINDS:
        for e in edit_options(scene, kind):
            assert e.cell not in ("center", "right")
            if kind == "swap":
                assert e.value not in ("center", "right")
    alone = Scene("white", (Obj("circle", "red", "top", "small"),))
    assert reference(alone, alone.objects[0]) == "circle"


def test_every_kind_gives_valid_different_targets():
    seen = set()
    for scene in _scenes():
        for kind in KINDS:
            options = edit_options(scene, kind)
            assert can_edit(scene, kind) == bool(options)
            assert len(set(options)) == len(options)
            for i, e in enumerate(options):
                target = apply_edit(scene, e)  # Scene() validates every rule on construction
                assert target != Target(scene)
                if i % 97 == 0:  # render a spread of them: the pixels must change too
                    assert change_mask(render(scene, SIZE), render_target(target, SIZE)).any()
            if options:
                seen.add(kind)
    assert seen == set(KINDS)


def test_what_each_kind_changes_and_keeps():
    for scene in _scenes(15, seed=1):
        for kind in KINDS:
            for e in edit_options(scene, kind)[::7]:
                t = apply_edit(scene, e)
                new = t.scene
                obj = scene.at(e.cell) if e.cell else None
                if kind in ("grayscale", "invert", "night"):
                    assert t == Target(scene, kind)
                    continue
                assert t.filter is None
                if kind == "recolor":
                    assert new.at(e.cell) == Obj(obj.shape, e.value, obj.cell, obj.size)
                elif kind == "reshape":
                    assert new.at(e.cell) == Obj(e.value, obj.color, obj.cell, obj.size)
                elif kind == "resize":
                    steps = list(SIZES)
                    assert abs(steps.index(e.value) - steps.index(obj.size)) == 1
                    assert new.at(e.cell) == Obj(obj.shape, obj.color, obj.cell, e.value)
                elif kind == "move":
                    assert scene.at(e.value) is None and new.at(e.cell) is None
                    assert new.at(e.value) == Obj(obj.shape, obj.color, e.value, obj.size)
                elif kind == "swap":
                    other = scene.at(e.value)
                    assert new.at(e.value) == Obj(obj.shape, obj.color, e.value, obj.size)
                    assert new.at(e.cell) == Obj(other.shape, other.color, e.cell, other.size)
                elif kind == "remove":
                    assert new == scene.without(e.cell)
                elif kind == "add":
                    assert len(scene.objects) < 4 and new == scene.with_object(e.new)
                elif kind == "background":
                    assert e.value not in scene.colors() and new.objects == scene.objects
                untouched = {o for o in scene.objects if o.cell not in (e.cell, e.value)}
                assert untouched <= set(new.objects)


def test_change_mask_stays_on_the_objects_edited():
    for scene in _scenes(30, seed=2):
        src = render(scene, SIZE)
        for kind in ("recolor", "remove", "resize", "reshape", "move", "swap", "add"):
            for e in edit_options(scene, kind)[::11]:
                t = apply_edit(scene, e)
                mask = change_mask(src, render_target(t, SIZE))
                allowed = np.zeros_like(mask)
                for o in set(scene.objects) ^ set(t.scene.objects):
                    allowed |= _footprint(o)
                assert mask.any() and not (mask & ~allowed).any()


def test_background_avoids_object_colours_and_grayscale_needs_a_colour():
    neutral = Scene("gray", (Obj("circle", "white", "top", "small"),
                             Obj("square", "black", "center", "large")))
    assert edit_options(neutral, "grayscale") == []
    img = render(neutral, SIZE)
    assert np.array_equal(render_target(Target(neutral, "grayscale"), SIZE), img)
    assert {e.value for e in edit_options(neutral, "background")}.isdisjoint(
        {"gray", "white", "black"})
    colourful = neutral.with_background("pink")
    assert edit_options(colourful, "grayscale") == [Edit("grayscale")]
    for color in NEUTRAL_COLORS:  # neutral colours are the ones grayscale leaves alone
        assert len(set(COLORS[color])) == 1


def test_full_scene_allows_no_add_and_empty_scene_no_object_edits():
    rng = random.Random(5)
    full = random_scene(rng, 4, 4)
    assert edit_options(full, "add") == [] and not can_edit(full, "add")
    empty = Scene("blue")
    assert [k for k in KINDS if can_edit(empty, k)] == [
        "add", "background", "grayscale", "invert", "night"]
    with pytest.raises(ValueError, match="no swap edit"):
        random_edit(empty, "swap", rng)
    with pytest.raises(ValueError, match="unknown edit kind"):
        edit_options(empty, "rotate")


def test_random_add_is_one_of_the_options():
    rng = random.Random(4)
    scene = Scene("red", (Obj("star", "blue", "center", "small"),))
    options = set(edit_options(scene, "add"))
    assert len(options) == 8 * 5 * 10 * 3
    drawn = {random_edit(scene, "add", rng) for _ in range(300)}
    assert drawn <= options and len(drawn) > 250


def test_every_instruction_names_exactly_one_target():
    """Over all edits and all phrasings of a scene, one text never means two targets."""
    for scene in _scenes(12, seed=3):
        meaning: dict[str, Target] = {}
        for kind in KINDS:
            for e in edit_options(scene, kind):
                slots = edit_slots(scene, e)
                target = apply_edit(scene, e)
                variants = [slots]
                if kind == "swap":
                    variants.append({**slots, "obj": slots["obj2"], "obj2": slots["obj"]})
                for p in INSTRUCTIONS[kind]:
                    for v in variants:
                        text = p.fill(v)
                        assert meaning.setdefault(text, target) == target, text


def test_instructions_name_what_the_spec_requires():
    for scene in _scenes(20, seed=6):
        for kind in ("add", "move", "recolor", "swap", "resize", "reshape"):
            for e in edit_options(scene, kind)[::13]:
                text = INSTRUCTIONS[kind][0].fill(edit_slots(scene, e))
                if kind == "add":
                    n = e.new
                    assert all(w in text for w in (n.size, n.color, n.shape, n.cell))
                elif kind in ("move", "recolor"):
                    assert text.endswith(e.value)
                elif kind == "swap":
                    for cell in (e.cell, e.value):
                        assert reference(scene, scene.at(cell)) in text
                elif kind == "resize":
                    assert text.endswith(("bigger", "smaller"))
                elif kind == "reshape":
                    assert text.endswith(f"a {e.value}")
