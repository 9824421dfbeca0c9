import random
import re

import pytest

from openkontext.world.edits import KINDS
from openkontext.world.phrasings import (
    DESCRIPTIONS,
    INSTRUCTIONS,
    MAX_DESCRIPTION_BYTES,
    MAX_INSTRUCTION_BYTES,
    Description,
    choose_description,
    choose_phrasing,
    describe,
    phrase,
)
from openkontext.world.scene import CELLS, COLORS, SHAPES, SIZES, Obj, Scene, random_scene

# The longest word each slot can hold (references: colour + shape when the shape is shared).
LONGEST_SLOTS = {
    "obj": "purple triangle", "obj2": "orange triangle", "color": "orange", "shape": "triangle",
    "size": "medium", "cell": "bottom right", "bigger": "smaller", "grow": "enlarge",
    "up": "down", "increase": "decrease",
}


def test_every_kind_has_enough_phrasings_and_some_held_out():
    assert set(INSTRUCTIONS) == set(KINDS)
    for kind, options in INSTRUCTIONS.items():
        held = [p for p in options if p.heldout]
        assert len(options) >= 5 and 1 <= len(held) <= 2 and len(options) - len(held) >= 5, kind
        assert len({p.template for p in options}) == len(options)
    assert 1 <= sum(d.heldout for d in DESCRIPTIONS) <= 2
    assert len(DESCRIPTIONS) >= 5


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_splits_never_mix(split):
    rng = random.Random(0)
    for kind in KINDS:
        chosen = {choose_phrasing(kind, rng, split) for _ in range(200)}
        assert {p.split for p in chosen} == {split}
        assert chosen == {p for p in INSTRUCTIONS[kind] if p.split == split}
    descriptions = {choose_description(rng, split) for _ in range(200)}
    assert {d.split for d in descriptions} == {split}
    both = {choose_phrasing("move", rng, "any").split for _ in range(200)}
    assert both == {"train", "heldout"}
    with pytest.raises(ValueError, match="unknown split"):
        choose_phrasing("move", rng, "test")


def test_instructions_fit_the_byte_budget():
    longest = max(len(p.fill(LONGEST_SLOTS).encode()) for ps in INSTRUCTIONS.values()
                  for p in ps)
    assert longest <= MAX_INSTRUCTION_BYTES == 64
    assert phrase("recolor", {"obj": "circle", "color": "blue"}, random.Random(1)) in {
        p.fill({"obj": "circle", "color": "blue"}) for p in INSTRUCTIONS["recolor"]
        if not p.heldout}


def test_descriptions_fit_the_byte_budget():
    # Longest words everywhere: 6-letter colours, triangles, medium, the four corner cells.
    worst = Scene("orange", tuple(Obj("triangle", "purple", c, "medium") for c in
                                  ("top left", "top right", "bottom left", "bottom right")))
    lengths = [len(d.fill(worst).encode()) for d in DESCRIPTIONS]
    assert max(lengths) <= MAX_DESCRIPTION_BYTES <= 160
    rng = random.Random(2)
    for _ in range(300):
        scene = random_scene(rng)
        assert all(len(d.fill(scene).encode()) <= max(lengths) for d in DESCRIPTIONS)


def _parse(description: Description, text: str) -> Scene:
    """Read a scene back from a description, knowing only the template and the vocabulary."""
    words = {"bg": COLORS, "size": SIZES, "color": COLORS, "shape": SHAPES, "cell": CELLS}

    def pattern(template: str, **fixed: str) -> str:
        parts = re.split(r"(\{\w+\})", template)
        out = []
        for part in parts:
            m = re.fullmatch(r"\{(\w+)\}", part)
            if m is None:
                out.append(re.escape(part))
            elif m[1] in fixed:
                out.append(f"(?P<{m[1]}>{fixed[m[1]]})")
            else:
                out.append(f"(?P<{m[1]}>{'|'.join(sorted(words[m[1]], key=len)[::-1])})")
        return "".join(out)

    empty = re.fullmatch(pattern(description.empty), text)
    if empty:
        return Scene(empty["bg"])
    m = re.fullmatch(pattern(description.frame, objects=".+"), text)
    items = [re.fullmatch(pattern(description.item), item)
             for item in m["objects"].split(description.sep)]
    return Scene(m["bg"], tuple(Obj(i["shape"], i["color"], i["cell"], i["size"])
                                for i in items))


def test_descriptions_determine_the_scene():
    rng = random.Random(3)
    scenes = [random_scene(rng) for _ in range(150)] + [Scene("black")]
    for scene in scenes:
        for d in DESCRIPTIONS:
            assert _parse(d, d.fill(scene)) == scene, d.fill(scene)
    example = Scene("yellow", (Obj("circle", "red", "top left", "small"),
                               Obj("square", "blue", "center", "large")))
    assert DESCRIPTIONS[0].fill(example) == \
        "on yellow: small red circle top left, large blue square center"
    assert describe(example, random.Random(0), "heldout") in {
        d.fill(example) for d in DESCRIPTIONS if d.heldout}
