"""The Shapes World scene model: colours, shapes, cells, sizes, `Obj`, `Scene` and `Target`.

A scene is a background colour and 0..4 objects, at most one per cell of a 3x3 grid, none the
colour of the background. Its JSON form:

    {"background": "yellow",
     "objects": [{"shape": "circle", "color": "red", "cell": "top left", "size": "medium"}]}

`Scene` keeps its objects in reading order of their cells (top left first), so two scenes with the
same objects compare equal whatever order they were listed in, and `to_dict` is canonical.

`Target` is what an edit produces: a scene plus an optional global filter ("grayscale", "invert",
"night") that rendering applies to the pixels afterwards. Its JSON form is the scene's with an
extra `"filter"` key when a filter is set.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace

# name -> sRGB; the order also fixes each colour's palette index.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 210, 50),
    "green": (50, 170, 70),
    "cyan": (40, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (240, 130, 180),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
# Shapes the model takes for one another: the blobs that fill their box and the pointed ones.
# A recolour that misses mostly paints an object of a shape alike the named one's
# (benchmarks/mini/object_colours.py; docs/mini.md, 49,400 to 52,000 steps). The pointed ones are
# also the closest pairs in pixels; circle and square are not (benchmarks/mini/shape_latents.py;
# docs/mini.md, 49,400 to 52,400 steps).
ALIKE_SHAPES: tuple[frozenset[str], ...] = (
    frozenset({"circle", "square"}), frozenset({"triangle", "star", "diamond"}),
)
# Reading order: index // 3 is the row, index % 3 the column.
CELLS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
# Circumradius as a fraction of the canvas side.
SIZES: dict[str, float] = {"small": 0.09, "medium": 0.13, "large": 0.17}
FILTERS: tuple[str, ...] = ("grayscale", "invert", "night")
MAX_OBJECTS = 4

_CELL_INDEX = {name: i for i, name in enumerate(CELLS)}


def alike_shapes(a: str, b: str) -> bool:
    """Two different shapes of one ALIKE_SHAPES group."""
    return a != b and any(a in group and b in group for group in ALIKE_SHAPES)


class SceneError(ValueError):
    """A scene (or its JSON) breaks a rule of the Shapes World."""


def _check_name(kind: str, value: object, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise SceneError(f"unknown {kind} {value!r}; expected one of: {', '.join(allowed)}")


def cell_row_col(cell: str) -> tuple[int, int]:
    """(row, col) of a cell in the 3x3 grid, both in 0..2."""
    return divmod(_CELL_INDEX[cell], 3)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    cell: str
    size: str

    def __post_init__(self):
        _check_name("shape", self.shape, SHAPES)
        _check_name("colour", self.color, COLORS)
        _check_name("cell", self.cell, CELLS)
        _check_name("size", self.size, SIZES)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "cell": self.cell, "size": self.size}

    @classmethod
    def from_dict(cls, d: object) -> Obj:
        if not isinstance(d, dict):
            raise SceneError(f"an object must be a JSON object, got {type(d).__name__}")
        keys = {"shape", "color", "cell", "size"}
        if missing := keys - d.keys():
            raise SceneError(f"object is missing {', '.join(sorted(missing))}: {d}")
        if extra := d.keys() - keys:
            raise SceneError(f"object has unknown keys {', '.join(sorted(extra))}: {d}")
        return cls(shape=d["shape"], color=d["color"], cell=d["cell"], size=d["size"])


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...] = field(default=())

    def __post_init__(self):
        _check_name("background colour", self.background, COLORS)
        objs = tuple(self.objects)
        for o in objs:
            if not isinstance(o, Obj):
                raise SceneError(f"scene objects must be Obj, got {type(o).__name__}")
        if len(objs) > MAX_OBJECTS:
            raise SceneError(f"a scene holds at most {MAX_OBJECTS} objects, got {len(objs)}")
        cells = [o.cell for o in objs]
        for cell in set(cells):
            if cells.count(cell) > 1:
                raise SceneError(f"two objects in one cell: {cell!r}")
        for o in objs:
            if o.color == self.background:
                raise SceneError(
                    f"the {o.color} {o.shape} at {o.cell!r} is the colour of the background"
                )
        object.__setattr__(self, "objects", tuple(sorted(objs, key=lambda o: _CELL_INDEX[o.cell])))

    # -- queries ---------------------------------------------------------------------------
    def at(self, cell: str) -> Obj | None:
        """The object in a cell, or None."""
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def empty_cells(self) -> list[str]:
        used = {o.cell for o in self.objects}
        return [c for c in CELLS if c not in used]

    def colors(self) -> set[str]:
        """Every colour in the scene: the background's and the objects'."""
        return {self.background} | {o.color for o in self.objects}

    # -- building new scenes -------------------------------------------------------------------
    def without(self, cell: str) -> Scene:
        return Scene(self.background, tuple(o for o in self.objects if o.cell != cell))

    def replaced(self, where: str, **changes) -> Scene:
        """The scene with the object in cell `where` changed (shape/color/cell/size)."""
        objs = tuple(replace(o, **changes) if o.cell == where else o for o in self.objects)
        return Scene(self.background, objs)

    def with_object(self, obj: Obj) -> Scene:
        return Scene(self.background, (*self.objects, obj))

    def with_background(self, color: str) -> Scene:
        return Scene(color, self.objects)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: object) -> Scene:
        if not isinstance(d, dict):
            raise SceneError(f"a scene must be a JSON object, got {type(d).__name__}")
        if "background" not in d:
            raise SceneError("scene is missing 'background'")
        if extra := d.keys() - {"background", "objects"}:
            raise SceneError(f"scene has unknown keys {', '.join(sorted(extra))}")
        objects = d.get("objects", [])
        if not isinstance(objects, list):
            raise SceneError("'objects' must be a list")
        return cls(d["background"], tuple(Obj.from_dict(o) for o in objects))

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(_loads(text))


@dataclass(frozen=True)
class Target:
    """A scene plus an optional global filter applied to its rendered pixels."""

    scene: Scene
    filter: str | None = None

    def __post_init__(self):
        if self.filter is not None:
            _check_name("filter", self.filter, FILTERS)

    def to_dict(self) -> dict:
        d = self.scene.to_dict()
        if self.filter is not None:
            d["filter"] = self.filter
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: object) -> Target:
        if not isinstance(d, dict):
            raise SceneError(f"a scene must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        flt = d.pop("filter", None)
        return cls(Scene.from_dict(d), flt)

    @classmethod
    def from_json(cls, text: str) -> Target:
        return cls.from_dict(_loads(text))


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SceneError(f"not valid JSON: {e}") from None


def random_scene(rng: random.Random, min_objects: int = 0, max_objects: int = MAX_OBJECTS) -> Scene:
    """A uniformly drawn valid scene: background, object count, then distinct cells and, per
    object, a shape, a non-background colour and a size."""
    if not 0 <= min_objects <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"need 0 <= min_objects <= max_objects <= {MAX_OBJECTS}")
    colors = list(COLORS)
    background = rng.choice(colors)
    others = [c for c in colors if c != background]
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample(CELLS, n)
    objs = tuple(
        Obj(rng.choice(SHAPES), rng.choice(others), cell, rng.choice(list(SIZES))) for cell in cells
    )
    return Scene(background, objs)
