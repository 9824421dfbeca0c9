"""Words for edits and scenes: several phrasings per edit kind and per scene description.

A fixed subset of phrasings (the last two of every kind, and of the descriptions) is HELD OUT:
never used for training, so the benchmark can report results on phrasings the model has not
seen separately from those it has. `split` selects: "train" (the others), "heldout", or "any".

Every instruction is at most MAX_INSTRUCTION_BYTES of UTF-8 and every description at most
MAX_DESCRIPTION_BYTES (both checked in the tests against the worst case of every template).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from openkontext.world.scene import Scene

SPLITS = ("train", "heldout", "any")
MAX_INSTRUCTION_BYTES = 64
MAX_DESCRIPTION_BYTES = 152


@dataclass(frozen=True)
class Phrasing:
    template: str  # str.format template over the slots of `edits.edit_slots`
    heldout: bool = False

    @property
    def split(self) -> str:
        return "heldout" if self.heldout else "train"

    def fill(self, slots: dict[str, str]) -> str:
        return self.template.format(**slots)


def phrasing_set(*train: str, heldout: tuple[str, ...]) -> tuple[Phrasing, ...]:
    return tuple(Phrasing(t) for t in train) + tuple(Phrasing(t, True) for t in heldout)


INSTRUCTIONS: dict[str, tuple[Phrasing, ...]] = {
    "recolor": phrasing_set(
        "make the {obj} {color}",
        "paint the {obj} {color}",
        "change the {obj}'s colour to {color}",
        "turn the {obj} {color}",
        "recolor the {obj} to {color}",
        heldout=("colour the {obj} {color}", "change the color of the {obj} to {color}"),
    ),
    "remove": phrasing_set(
        "remove the {obj}",
        "delete the {obj}",
        "take away the {obj}",
        "get rid of the {obj}",
        "erase the {obj}",
        heldout=("take out the {obj}", "make the {obj} disappear"),
    ),
    "add": phrasing_set(
        "add a {size} {color} {shape} at the {cell}",
        "put a {size} {color} {shape} at the {cell}",
        "place a {size} {color} {shape} at the {cell}",
        "draw a {size} {color} {shape} at the {cell}",
        "insert a {size} {color} {shape} at the {cell}",
        heldout=("there should be a {size} {color} {shape} at the {cell}",
                 "add a {size} {color} {shape} to the {cell}"),
    ),
    "move": phrasing_set(
        "move the {obj} to the {cell}",
        "put the {obj} at the {cell}",
        "shift the {obj} to the {cell}",
        "place the {obj} at the {cell}",
        "drag the {obj} to the {cell}",
        heldout=("relocate the {obj} to the {cell}", "the {obj} goes to the {cell}"),
    ),
    "resize": phrasing_set(
        "make the {obj} {bigger}",
        "{grow} the {obj}",
        "scale the {obj} {up}",
        "{increase} the size of the {obj}",
        "make the {obj} one size {bigger}",
        heldout=("resize the {obj} to be {bigger}", "the {obj} should be {bigger}"),
    ),
    "reshape": phrasing_set(
        "turn the {obj} into a {shape}",
        "change the {obj} into a {shape}",
        "make the {obj} a {shape}",
        "replace the {obj} with a {shape}",
        "reshape the {obj} into a {shape}",
        heldout=("transform the {obj} into a {shape}", "morph the {obj} into a {shape}"),
    ),
    "background": phrasing_set(
        "change the background to {color}",
        "make the background {color}",
        "paint the background {color}",
        "set the background colour to {color}",
        "turn the background {color}",
        heldout=("switch the background to {color}", "the background should be {color}"),
    ),
    "swap": phrasing_set(
        "swap the {obj} and the {obj2}",
        "switch the {obj} and the {obj2}",
        "exchange the {obj} and the {obj2}",
        "swap where the {obj} and the {obj2} are",
        "let the {obj} and the {obj2} trade places",
        heldout=("the {obj} and the {obj2} swap places",
                 "switch places of the {obj} and the {obj2}"),
    ),
    "grayscale": phrasing_set(
        "make it grayscale",
        "convert the image to grayscale",
        "make the picture black and white",
        "remove all colour",
        "desaturate the image",
        heldout=("make it greyscale", "turn it black and white"),
    ),
    "invert": phrasing_set(
        "invert the colours",
        "invert the image",
        "make a negative of the image",
        "invert all colors",
        "turn it into a negative",
        heldout=("reverse the colours", "make it look like a photo negative"),
    ),
    "night": phrasing_set(
        "make it night",
        "turn day into night",
        "make it look like night",
        "change the scene to night",
        "make it nighttime",
        heldout=("darken it to a night scene", "set the scene at night"),
    ),
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")


def pick_phrasing(options, rng: random.Random, split: str):
    _check_split(split)
    pool = [p for p in options if split == "any" or p.split == split]
    return pool[rng.randrange(len(pool))]


def choose_phrasing(kind: str, rng: random.Random, split: str = "train") -> Phrasing:
    """A phrasing of an edit kind drawn uniformly from the split."""
    if kind not in INSTRUCTIONS:
        raise ValueError(f"no phrasings for edit kind {kind!r}")
    return pick_phrasing(INSTRUCTIONS[kind], rng, split)


def phrase(kind: str, slots: dict[str, str], rng: random.Random, split: str = "train") -> str:
    """An instruction for an edit of `kind` named by `slots` (see `edits.edit_slots`)."""
    return choose_phrasing(kind, rng, split).fill(slots)


# -- scene descriptions (generation) --------------------------------------------------------

@dataclass(frozen=True)
class Description:
    """How a whole scene is put in words: `frame` around the objects joined by `sep`, each
    written as `item`; `empty` when there are no objects. Objects go in reading order."""

    frame: str  # slots: bg, objects
    item: str  # slots: size, color, shape, cell
    sep: str
    empty: str  # slot: bg
    heldout: bool = False

    @property
    def split(self) -> str:
        return "heldout" if self.heldout else "train"

    def fill(self, scene: Scene) -> str:
        if not scene.objects:
            return self.empty.format(bg=scene.background)
        items = [self.item.format(size=o.size, color=o.color, shape=o.shape, cell=o.cell)
                 for o in scene.objects]
        return self.frame.format(bg=scene.background, objects=self.sep.join(items))


_PLAIN = "{size} {color} {shape} {cell}"
DESCRIPTIONS: tuple[Description, ...] = (
    Description("on {bg}: {objects}", _PLAIN, ", ", "plain {bg} background"),
    Description("{bg}: {objects}", "{cell} {size} {color} {shape}", ", ", "{bg}: empty"),
    Description("{objects} on {bg}", _PLAIN, ", ", "nothing on {bg}"),
    Description("{bg} with {objects}", _PLAIN, ", ", "{bg} with nothing"),
    Description("{bg}; {objects}", "{cell}: {size} {color} {shape}", "; ", "{bg}; no shapes",
                heldout=True),
    Description("{bg} scene: {objects}", _PLAIN, ", ", "only {bg}", heldout=True),
)


def choose_description(rng: random.Random, split: str = "train") -> Description:
    """A description phrasing drawn uniformly from the split."""
    return pick_phrasing(DESCRIPTIONS, rng, split)


def describe(scene: Scene, rng: random.Random, split: str = "train") -> str:
    """A text that determines the scene exactly: background and every object's size, colour,
    shape and cell, e.g. "on yellow: small red circle top left, large blue square center"."""
    return choose_description(rng, split).fill(scene)
