"""Random edits, generations and multi-turn chains with ground truth; tensor batches.

Everything is a pure function of a `random.Random` passed in (no global state), so a seed fixes
the samples. Kinds are drawn uniformly from the requested ones, then a scene on which that kind
is possible, then one of the allowed edits uniformly, then a phrasing from the split. Training
may weight the kinds instead (`kind_weights`: unlisted kinds weigh 1).

Chains: turns 1..n-1 are scene edits; a filter (grayscale, invert, night) may only be the LAST
turn, because a filter changes the colour of everything and later instructions could no longer
name colours that exist in the picture. Every turn's source is the previous turn's target scene.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass

import numpy as np
import torch

from openkontext.world.edits import (
    KINDS,
    Edit,
    apply_edit,
    can_edit,
    edit_options,
    edit_slots,
    random_edit,
)
from openkontext.world.phrasings import choose_description, choose_phrasing
from openkontext.world.render import (
    Size,
    change_mask,
    render_batch,
    render_targets,
    to_tensor,
)
from openkontext.world.scene import FILTERS, Scene, Target, alike_shapes, random_scene

MAX_ATTEMPTS = 1000  # random scenes tried before a kind is declared impossible
# Kinds whose edit acts on one named object: a contrast twin names another object of the picture.
CONTRAST_KINDS: tuple[str, ...] = ("recolor", "remove", "move", "resize", "reshape")


@dataclass(frozen=True)
class EditSample:
    source: Scene
    edit: Edit
    instruction: str
    target: Target
    phrasing_split: str  # "train" | "heldout": the split of the phrasing used
    # "" for an edit drawn on its own; in `edit_samples`, "object" for a `contrast_edit` twin and
    # "colour" for a `colour_twin` of the last edit drawn on its own before it
    twin: str = ""

    @property
    def kind(self) -> str:
        return self.edit.kind

    def images(self, size: Size = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source (H, W, 3) uint8, target (H, W, 3) uint8, change mask (H, W) bool)."""
        src = render_batch([self.source], size)[0]
        tgt = render_targets([self.target], size)[0]
        return src, tgt, change_mask(src, tgt)


@dataclass(frozen=True)
class GenerationSample:
    description: str
    target: Target
    phrasing_split: str


@dataclass(frozen=True)
class ChainSample:
    source: Scene
    turns: tuple[EditSample, ...]  # turns[i].source == turns[i - 1].target.scene

    @property
    def targets(self) -> list[Target]:
        """The ground truth after every turn."""
        return [t.target for t in self.turns]


def check_kinds(kinds) -> tuple[str, ...]:
    """The edit kinds asked for (None: every kind), checked: known and at least one."""
    kinds = tuple(KINDS if kinds is None else kinds)
    if not kinds:
        raise ValueError("no edit kinds given")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown edit kind {k!r}; expected one of: {', '.join(KINDS)}")
    return kinds


def make_edit(source: Scene, edit: Edit, rng: random.Random, split: str = "train") -> EditSample:
    """Put an edit into words: an instruction from the split, plus its ground truth."""
    phrasing = choose_phrasing(edit.kind, rng, split)
    slots = edit_slots(source, edit)
    if edit.kind == "swap" and rng.random() < 0.5:
        slots["obj"], slots["obj2"] = slots["obj2"], slots["obj"]
    return EditSample(source, edit, phrasing.fill(slots), apply_edit(source, edit), phrasing.split)


def check_kind_weights(weights: dict[str, float] | None) -> dict[str, float] | None:
    """Validate {kind: weight} (unlisted kinds weigh 1): known kinds, finite, not negative."""
    if weights is None:
        return None
    for kind, w in weights.items():
        if kind not in KINDS:
            raise ValueError(f"unknown edit kind {kind!r}; expected one of: {', '.join(KINDS)}")
        if not (isinstance(w, int | float) and 0 <= w < float("inf")):
            raise ValueError(f"the weight of {kind!r} must be a number >= 0, got {w!r}")
    if not any(weights.get(k, 1) > 0 for k in KINDS):
        raise ValueError("every edit kind has weight 0")
    return dict(weights)


def _choose_kind(rng: random.Random, kinds: tuple[str, ...] | list[str],
                 weights: dict[str, float] | None) -> str:
    if weights is None:
        return rng.choice(kinds)  # the draw every run before kind weights made
    w = [weights.get(k, 1) for k in kinds]
    if not any(w):
        raise ValueError(f"the kinds {', '.join(kinds)} all have weight 0")
    return rng.choices(kinds, w)[0]


def sample_edit(rng: random.Random, kinds=None, split: str = "train",
                source: Scene | None = None,
                kind_weights: dict[str, float] | None = None) -> EditSample:
    """A random edit of one of `kinds` (default: all) on `source` (default: a random scene),
    the kind drawn uniformly or by `kind_weights`.

    With a given source, the kind is drawn among those possible on it (ValueError if none).
    """
    kinds = check_kinds(kinds)
    if source is not None:
        feasible = [k for k in kinds if can_edit(source, k)]
        if not feasible:
            raise ValueError(f"none of the kinds {', '.join(kinds)} is possible on this scene")
        kind = _choose_kind(rng, feasible, kind_weights)
    else:
        kind = _choose_kind(rng, kinds, kind_weights)
        for _ in range(MAX_ATTEMPTS):
            source = random_scene(rng)
            if can_edit(source, kind):
                break
        else:
            raise RuntimeError(f"found no scene for an edit of kind {kind!r}")
    return make_edit(source, random_edit(source, kind, rng), rng, split)


def sample_generation(rng: random.Random, split: str = "train",
                      scene: Scene | None = None) -> GenerationSample:
    """A random scene (or the given one) and a description that determines it."""
    scene = random_scene(rng) if scene is None else scene
    d = choose_description(rng, split)
    return GenerationSample(d.fill(scene), Target(scene), d.split)


def sample_chain(rng: random.Random, turns: int | None = None, kinds=None,
                 split: str = "train", min_turns: int = 2, max_turns: int = 10,
                 source: Scene | None = None) -> ChainSample:
    """A chain of edits (`turns`, default uniform in min_turns..max_turns) from a random scene.

    Filters only ever come last. If the kinds run out on the way (say only removals), the chain
    is drawn again from a new scene; RuntimeError after MAX_ATTEMPTS.
    """
    kinds = check_kinds(kinds)
    if turns is None:
        turns = rng.randint(min_turns, max_turns)
    if turns < 1:
        raise ValueError(f"a chain needs at least one turn, got {turns}")
    scene_kinds = tuple(k for k in kinds if k not in FILTERS)
    if turns > 1 and not scene_kinds:
        raise ValueError("chains of more than one turn need a kind that is not a filter")
    for _ in range(MAX_ATTEMPTS):
        start = random_scene(rng) if source is None else source
        scene, done = start, []
        for i in range(turns):
            allowed = kinds if i == turns - 1 else scene_kinds
            feasible = [k for k in allowed if can_edit(scene, k)]
            if not feasible:
                break
            step = sample_edit(rng, feasible, split, source=scene)
            done.append(step)
            scene = step.target.scene
        if len(done) == turns:
            return ChainSample(start, tuple(done))
    raise RuntimeError(f"found no chain of {turns} turns over kinds {', '.join(kinds)}")


# -- tensor batches for training --------------------------------------------------------------

@dataclass
class EditBatch:
    source: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]
    target: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]
    mask: torch.Tensor  # (B, H, W) bool, pixels that differ between source and target
    instructions: list[str]
    kinds: list[str]
    samples: list[EditSample]


@dataclass
class GenerationBatch:
    target: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]
    descriptions: list[str]
    samples: list[GenerationSample]


def contrast_edit(sample: EditSample, rng: random.Random, split: str = "train",
                  alike: bool = False) -> EditSample | None:
    """The same kind of edit on the same picture, naming another object: "remove the circle"
    beside "remove the square". Where the other object allows it, the edit's value is kept too
    (the same new colour, destination or size), so the two differ only in which object is named
    and where the change lands. With `alike`, the other object is one of a shape alike the named
    one's (`alike_shapes`) where the picture has one. None for other kinds, or when no other
    object can take the edit."""
    if sample.kind not in CONTRAST_KINDS:
        return None
    options = [e for e in edit_options(sample.source, sample.kind) if e.cell != sample.edit.cell]
    if not options:
        return None
    if alike:
        named = sample.source.at(sample.edit.cell).shape
        options = [e for e in options
                   if alike_shapes(sample.source.at(e.cell).shape, named)] or options
    same_value = [e for e in options if e.value == sample.edit.value]
    pick = same_value or options
    return make_edit(sample.source, pick[rng.randrange(len(pick))], rng, split)


def colour_twin(sample: EditSample, rng: random.Random,
                split: str = "train") -> EditSample | None:
    """A recolour of the same object on the same picture to another colour: "paint the star
    red" beside "colour the star green", so the two ask for different colours of one object and
    their answers differ only in that object's colour (the phrasing is drawn anew, as for
    `contrast_edit`). None for other kinds, or when no other colour is allowed."""
    if sample.kind != "recolor":
        return None
    options = [e for e in edit_options(sample.source, "recolor")
               if e.cell == sample.edit.cell and e.value != sample.edit.value]
    if not options:
        return None
    return make_edit(sample.source, options[rng.randrange(len(options))], rng, split)


def check_contrast(rate: float) -> float:
    if not (isinstance(rate, int | float) and 0 <= rate <= 1):
        raise ValueError(f"must be a fraction in [0, 1], got {rate!r}")
    return rate


def edit_samples(rng: random.Random, count: int, kinds=None, split: str = "train",
                 kind_weights: dict[str, float] | None = None,
                 contrast: float = 0.0, colour_contrast: float = 0.0,
                 alike_twins: bool = False) -> list[EditSample]:
    """`count` random edits. With `contrast` > 0, that fraction of the edits of CONTRAST_KINDS
    is followed by its `contrast_edit` twin (when the picture has one), so the model sees one
    picture and two named objects side by side (with `alike_twins`, an object of an alike shape
    where there is one); with `colour_contrast` > 0, that fraction of the recolours is followed
    by its `colour_twin` (the same object, another colour). At 0 these are the edits drawn
    before the twins existed (no extra draws from `rng`)."""
    check_kind_weights(kind_weights)
    check_contrast(contrast)
    check_contrast(colour_contrast)
    samples: list[EditSample] = []
    twins = (("object", contrast, functools.partial(contrast_edit, alike=alike_twins)),
             ("colour", colour_contrast, colour_twin))
    while len(samples) < count:
        sample = sample_edit(rng, kinds, split, kind_weights=kind_weights)
        samples.append(sample)
        for name, rate, make_twin in twins:
            if rate and len(samples) < count and rng.random() < rate:
                twin = make_twin(sample, rng, split)
                if twin is not None:
                    samples.append(dataclasses.replace(twin, twin=name))
    return samples


def edit_batch(rng: random.Random, batch_size: int, size: Size = 64, kinds=None,
               split: str = "train", kind_weights: dict[str, float] | None = None,
               contrast: float = 0.0, colour_contrast: float = 0.0,
               alike_twins: bool = False) -> EditBatch:
    """`edit_samples` rendered at `size`."""
    return edit_batch_from(
        edit_samples(rng, batch_size, kinds, split, kind_weights, contrast, colour_contrast,
                     alike_twins),
        size,
    )


def edit_batch_from(samples: list[EditSample], size: Size = 64) -> EditBatch:
    """Render given edit samples into a batch."""
    src = render_batch([s.source for s in samples], size)
    tgt = render_targets([s.target for s in samples], size)
    return EditBatch(
        source=to_tensor(src), target=to_tensor(tgt),
        mask=torch.from_numpy(change_mask(src, tgt)),
        instructions=[s.instruction for s in samples], kinds=[s.kind for s in samples],
        samples=samples,
    )


def generation_batch(rng: random.Random, batch_size: int, size: Size = 64,
                     split: str = "train") -> GenerationBatch:
    """`batch_size` random scenes with descriptions, rendered at `size`."""
    samples = [sample_generation(rng, split) for _ in range(batch_size)]
    tgt = render_targets([s.target for s in samples], size)
    return GenerationBatch(to_tensor(tgt), [s.description for s in samples], samples)
