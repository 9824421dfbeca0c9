"""Edits on Shapes World scenes: what each kind may do, and the ground truth it produces.

An `Edit` is the language-free operation ("the object in cell X becomes blue"); `apply_edit`
gives its `Target` and `edit_slots` the words an instruction needs to name it. `edit_options`
lists every edit of a kind that is allowed on a scene, which is exactly the set of edits whose
instruction names a unique, valid, different target:

- the object acted on must have a reference: its shape when no other object has that shape,
  else its colour and shape when no other object shares both; objects with no such reference
  are never edited;
- the result must be a valid scene (at most 4 objects, one per cell, no object the colour of
  the background) and differ from the source;
- a filter kind is offered only when it changes pixels (grayscale needs a non-neutral colour).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from openkontext.world.scene import (
    COLORS,
    FILTERS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    Target,
)

OBJECT_KINDS: tuple[str, ...] = ("recolor", "remove", "move", "resize", "reshape", "swap")
SCENE_KINDS: tuple[str, ...] = ("add", "background")
KINDS: tuple[str, ...] = (
    "recolor", "remove", "add", "move", "resize", "reshape", "background", "swap", *FILTERS,
)
NEUTRAL_COLORS = frozenset({"white", "black", "gray"})  # colours grayscale leaves unchanged
_SIZE_ORDER = list(SIZES)  # small, medium, large


@dataclass(frozen=True)
class Edit:
    """One edit, without words.

    kind:  one of KINDS.
    cell:  the cell of the object acted on (recolor, remove, move, resize, reshape, swap).
    value: the new colour (recolor, background), destination cell (move), other object's cell
           (swap), new size (resize) or new shape (reshape).
    new:   the object added (add).
    """

    kind: str
    cell: str | None = None
    value: str | None = None
    new: Obj | None = None


def reference(scene: Scene, obj: Obj) -> str | None:
    """How an instruction names `obj`: "circle", "red circle", or None when neither is unique."""
    same_shape = [o for o in scene.objects if o.shape == obj.shape]
    if len(same_shape) == 1:
        return obj.shape
    if sum(o.color == obj.color for o in same_shape) == 1:
        return f"{obj.color} {obj.shape}"
    return None


def referable(scene: Scene) -> list[Obj]:
    """The objects an instruction can name unambiguously."""
    return [o for o in scene.objects if reference(scene, o) is not None]


def edit_options(scene: Scene, kind: str) -> list[Edit]:
    """Every allowed edit of one kind on a scene (possibly none), in a fixed order."""
    if kind not in KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of: {', '.join(KINDS)}")
    objs = referable(scene) if kind in OBJECT_KINDS else []
    if kind == "recolor":
        return [Edit(kind, o.cell, c) for o in objs for c in COLORS
                if c not in (o.color, scene.background)]
    if kind == "remove":
        return [Edit(kind, o.cell) for o in objs]
    if kind == "move":
        return [Edit(kind, o.cell, c) for o in objs for c in scene.empty_cells()]
    if kind == "resize":
        out = []
        for o in objs:
            i = _SIZE_ORDER.index(o.size)
            out += [Edit(kind, o.cell, _SIZE_ORDER[j]) for j in (i - 1, i + 1)
                    if 0 <= j < len(_SIZE_ORDER)]
        return out
    if kind == "reshape":
        return [Edit(kind, o.cell, s) for o in objs for s in SHAPES if s != o.shape]
    if kind == "swap":
        return [Edit(kind, a.cell, b.cell) for i, a in enumerate(objs) for b in objs[i + 1:]]
    if kind == "add":
        if len(scene.objects) >= MAX_OBJECTS:
            return []
        return [Edit(kind, new=Obj(shape, color, cell, size))
                for cell in scene.empty_cells() for shape in SHAPES for color in COLORS
                if color != scene.background for size in SIZES]
    if kind == "background":
        used = scene.colors()
        return [Edit(kind, value=c) for c in COLORS if c not in used]
    # filters
    if kind == "grayscale" and scene.colors() <= NEUTRAL_COLORS:
        return []
    return [Edit(kind)]


def can_edit(scene: Scene, kind: str) -> bool:
    """Whether `edit_options(scene, kind)` is non-empty (without listing every add)."""
    if kind == "add":
        return len(scene.objects) < MAX_OBJECTS
    return bool(edit_options(scene, kind))


def possible_kinds(scene: Scene, kinds: tuple[str, ...] | list[str] = KINDS) -> list[str]:
    """The kinds (of `kinds`, in that order) with at least one allowed edit on the scene."""
    return [k for k in kinds if can_edit(scene, k)]


def random_edit(scene: Scene, kind: str, rng: random.Random) -> Edit:
    """One of `edit_options(scene, kind)`, uniformly; ValueError when there is none."""
    if kind == "add" and can_edit(scene, kind):
        # The options are a product of independent choices: draw each one.
        colors = [c for c in COLORS if c != scene.background]
        new = Obj(rng.choice(SHAPES), rng.choice(colors), rng.choice(scene.empty_cells()),
                  rng.choice(list(SIZES)))
        return Edit(kind, new=new)
    options = edit_options(scene, kind)
    if not options:
        raise ValueError(f"no {kind} edit is possible on this scene")
    return options[rng.randrange(len(options))]


def apply_edit(scene: Scene, edit: Edit) -> Target:
    """The ground truth of an edit: the new scene, or the same scene plus a filter."""
    k = edit.kind
    if k == "recolor":
        return Target(scene.replaced(edit.cell, color=edit.value))
    if k == "remove":
        return Target(scene.without(edit.cell))
    if k == "move":
        return Target(scene.replaced(edit.cell, cell=edit.value))
    if k == "resize":
        return Target(scene.replaced(edit.cell, size=edit.value))
    if k == "reshape":
        return Target(scene.replaced(edit.cell, shape=edit.value))
    if k == "swap":
        a, b = scene.at(edit.cell), scene.at(edit.value)
        rest = tuple(o for o in scene.objects if o.cell not in (a.cell, b.cell))
        moved = (Obj(a.shape, a.color, b.cell, a.size), Obj(b.shape, b.color, a.cell, b.size))
        return Target(Scene(scene.background, rest + moved))
    if k == "add":
        return Target(scene.with_object(edit.new))
    if k == "background":
        return Target(scene.with_background(edit.value))
    if k in FILTERS:
        return Target(scene, k)
    raise ValueError(f"unknown edit kind {k!r}")


def edit_slots(scene: Scene, edit: Edit) -> dict[str, str]:
    """The words that name an edit on `scene`, for the phrasing templates.

    Keys: obj (reference to the object acted on), obj2 (swap's other object), color, shape,
    size, cell, and for resize the direction words bigger / grow / up / increase.
    """
    k = edit.kind
    slots: dict[str, str] = {}
    if edit.cell is not None:
        slots["obj"] = reference(scene, scene.at(edit.cell))
    if k in ("recolor", "background"):
        slots["color"] = edit.value
    elif k == "move":
        slots["cell"] = edit.value
    elif k == "reshape":
        slots["shape"] = edit.value
    elif k == "swap":
        slots["obj2"] = reference(scene, scene.at(edit.value))
    elif k == "resize":
        up = _SIZE_ORDER.index(edit.value) > _SIZE_ORDER.index(scene.at(edit.cell).size)
        slots.update(bigger="bigger" if up else "smaller", grow="enlarge" if up else "shrink",
                     up="up" if up else "down", increase="increase" if up else "decrease")
    elif k == "add":
        n = edit.new
        slots.update(size=n.size, color=n.color, shape=n.shape, cell=n.cell)
    return slots

