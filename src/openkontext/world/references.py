"""Reference edits: instructions that need a second (third, fourth) picture to be carried out.

Image 1 is the picture edited; images 2..n+1 are references. The instruction names one of
them by its number ("image 3", "the third image"), and what it takes from it is exact, so the
ground truth is a scene like any other edit's:

- `ref_object` ("character reference"): every reference shows one object on its background;
  "put the object from image 2 at the top left" adds that object (its shape, colour and size)
  to image 1 in the named empty cell;
- `ref_colour` ("style reference"): "paint the circle the colour of image 2's background"
  recolours a named object of image 1 to the background colour of the named reference;
- `ref_background`: "use the second image's background colour" changes image 1's background
  to it.

The other references are distractors: each differs from the named one in what would be taken
(another object; another background colour), so only reading the right picture gives the
answer. The rules of plain edits hold: the object acted on is named uniquely, the result is a
valid scene (an added object never has the background's colour) and differs from image 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from openkontext.world.edits import referable, reference
from openkontext.world.phrasings import Phrasing, phrasing_set, pick_phrasing
from openkontext.world.render import Size, change_mask, render_batch, render_targets, to_tensor
from openkontext.world.scene import (
    CELLS,
    COLORS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    Target,
    random_scene,
)

REFERENCE_KINDS: tuple[str, ...] = ("ref_object", "ref_colour", "ref_background")
MAX_REFERENCES = 3  # besides image 1: Kontext reads at most four pictures
ORDINALS = {2: "second", 3: "third", 4: "fourth"}

# Slots: n (the reference's number, 2..4), nth (its ordinal), cell, obj (as in `edits`).
# The last two of each kind are held out, as for the plain kinds.
REFERENCE_INSTRUCTIONS: dict[str, tuple[Phrasing, ...]] = {
    "ref_object": phrasing_set(
        "put the object from the {nth} image at the {cell}",
        "add the shape from image {n} at the {cell}",
        "place the object of image {n} at the {cell}",
        "copy the shape in the {nth} image to the {cell}",
        "insert the object from image {n} at the {cell}",
        heldout=("bring the object of image {n} to the {cell}",
                 "the {cell} gets the shape from the {nth} image"),
    ),
    "ref_colour": phrasing_set(
        "paint the {obj} the colour of image {n}'s background",
        "make the {obj} the {nth} image's background colour",
        "recolor the {obj} like the background of image {n}",
        "give the {obj} the background colour of image {n}",
        "colour the {obj} as the {nth} image's background",
        heldout=("the {obj} takes image {n}'s background colour",
                 "match the {obj} to the background of image {n}"),
    ),
    "ref_background": phrasing_set(
        "use the {nth} image's background colour",
        "make the background like image {n}'s background",
        "paint the background the colour of image {n}'s",
        "give it the background colour of the {nth} image",
        "copy the background colour of image {n}",
        heldout=("take the background colour from image {n}",
                 "the background should match the {nth} image"),
    ),
}


@dataclass(frozen=True)
class ReferenceSample:
    """A reference edit: image 1 (`source`), the references (images 2..), the instruction and
    the ground truth."""

    kind: str
    source: Scene
    references: tuple[Scene, ...]
    named: int  # the number the instruction gives the reference it uses (2..len(references)+1)
    instruction: str
    target: Target
    phrasing_split: str

    def images(self, size: Size = 64) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(source (H, W, 3) uint8, references [(H, W, 3) uint8], target (H, W, 3) uint8)."""
        rendered = render_batch([self.source, *self.references], size)
        return rendered[0], list(rendered[1:]), render_targets([self.target], size)[0]


def _other_colors(*excluded: str) -> list[str]:
    return [c for c in COLORS if c not in excluded]


def _lone_object(rng: random.Random, obj_choices) -> Scene:
    """A reference picture: one object, drawn from `obj_choices(rng)` -> (shape, colour, size),
    in a random cell on a background of another colour."""
    shape, color, size = obj_choices(rng)
    cell = rng.choice(CELLS)
    return Scene(rng.choice(_other_colors(color)), (Obj(shape, color, cell, size),))


def _with_background(rng: random.Random, color: str) -> Scene:
    """A reference picture whose background is `color`, with 0..3 objects of other colours."""
    scene = random_scene(rng, 0, MAX_OBJECTS - 1)
    return Scene(color, tuple(o for o in scene.objects if o.color != color))


def _source(rng: random.Random, kind: str) -> tuple[Scene, list]:
    """A random image 1 on which `kind` is possible, and its options (what may be taken)."""
    while True:
        scene = random_scene(rng)
        if kind == "ref_object" and len(scene.objects) < MAX_OBJECTS:
            return scene, scene.empty_cells()
        if kind == "ref_colour" and (objs := referable(scene)):
            return scene, objs
        if kind == "ref_background" and len(scene.colors()) < len(COLORS):
            return scene, [c for c in COLORS if c not in scene.colors()]


def sample_reference_edit(rng: random.Random, kind: str | None = None,
                          references: int | None = None,
                          split: str = "train") -> ReferenceSample:
    """A random reference edit of `kind` (default: one of REFERENCE_KINDS) with `references`
    reference pictures (default 1..MAX_REFERENCES), the named one drawn uniformly."""
    kind = rng.choice(REFERENCE_KINDS) if kind is None else kind
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference edit kind {kind!r}; "
                         f"expected one of: {', '.join(REFERENCE_KINDS)}")
    count = rng.randint(1, MAX_REFERENCES) if references is None else references
    if not 1 <= count <= MAX_REFERENCES:
        raise ValueError(f"a reference edit has 1 to {MAX_REFERENCES} references, got {count}")
    source, options = _source(rng, kind)
    named = rng.randint(2, count + 1)
    slots = {"n": str(named), "nth": ORDINALS[named]}
    if kind == "ref_object":
        cell = rng.choice(options)
        colors = _other_colors(source.background)
        picked = (rng.choice(SHAPES), rng.choice(colors), rng.choice(list(SIZES)))
        taken = _lone_object(rng, lambda _: picked)

        def distractor(r: random.Random) -> tuple[str, str, str]:
            """Another object: not the named one's shape and colour both."""
            while True:
                choice = (r.choice(SHAPES), r.choice(list(COLORS)), r.choice(list(SIZES)))
                if choice[:2] != picked[:2]:
                    return choice

        others = [_lone_object(rng, distractor) for _ in range(count - 1)]
        target = Target(source.with_object(Obj(picked[0], picked[1], cell, picked[2])))
        slots["cell"] = cell
    else:
        if kind == "ref_colour":
            obj = rng.choice(options)
            color = rng.choice(_other_colors(obj.color, source.background))
            target = Target(source.replaced(obj.cell, color=color))
            slots["obj"] = reference(source, obj)
        else:
            color = rng.choice(options)
            target = Target(source.with_background(color))
        taken = _with_background(rng, color)
        others = [_with_background(rng, rng.choice(_other_colors(color))) for _ in range(count - 1)]
    refs = others[: named - 2] + [taken] + others[named - 2:]
    phrasing = pick_phrasing(REFERENCE_INSTRUCTIONS[kind], rng, split)
    return ReferenceSample(kind, source, tuple(refs), named, phrasing.fill(slots), target,
                           phrasing.split)


@dataclass
class ReferenceBatch:
    source: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]: image 1
    references: list[torch.Tensor]  # per reference image 2.., (B, 3, H, W)
    target: torch.Tensor  # (B, 3, H, W)
    mask: torch.Tensor  # (B, H, W) bool, pixels where target differs from image 1
    instructions: list[str]
    kinds: list[str]
    samples: list[ReferenceSample]


def reference_batch(rng: random.Random, batch_size: int, size: Size = 64, references: int = 1,
                    kinds: tuple[str, ...] = REFERENCE_KINDS,
                    split: str = "train") -> ReferenceBatch:
    """`batch_size` reference edits, each with `references` references (one count a batch, so
    its tensors stack), rendered at `size`."""
    samples = [sample_reference_edit(rng, rng.choice(kinds), references, split)
               for _ in range(batch_size)]
    src = render_batch([s.source for s in samples], size)
    tgt = render_targets([s.target for s in samples], size)
    refs = [to_tensor(render_batch([s.references[k] for s in samples], size))
            for k in range(references)]
    return ReferenceBatch(
        source=to_tensor(src), references=refs, target=to_tensor(tgt),
        mask=torch.from_numpy(change_mask(src, tgt)),
        instructions=[s.instruction for s in samples], kinds=[s.kind for s in samples],
        samples=samples,
    )
