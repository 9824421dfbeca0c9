"""Evaluation datasets: JSONL, one case per line, checked line by line.

A case (paths are relative to the JSONL file):

    {"id": "cat-01", "category": "recolor", "instruction": "make the cat black",
     "input": "images/cat.png", "target": "images/cat_black.png", "mask": "images/cat_mask.png",
     "phrasing_split": "train"}

- "input": an image path, a Shapes World scene object, or null for a generation (required, so a
  misspelt key cannot silently turn edits into generations).
- "target": an image path or a scene object (a scene may carry "filter").
- "target_scene": optional, with an image-path target: the scene that image shows (as
  `openkontext world sample` writes it). Scores come from the file; the scene adds the layout
  check (every object in its cell and colour).
- "mask": optional image path, white (>= 128) where the edit may change the picture; it must
  have the input's size. Without one, a case whose input and target are both scenes gets the
  pixels that differ between the two renders; any other case has no preservation score.
- "references": optional, for an edit: 1 to 3 more pictures (paths or scenes), images 2..4,
  which the instruction may name ("the object from image 2").
- "category": optional; "edit", "generation" or "chain" when absent.
- "phrasing_split": optional ("train", "heldout", ...); reported as its own group.
- "size": optional canvas for scenes, an int or [width, height]; default the model's native size.
- A chain replaces "instruction"/"target"/"mask" with "chain": [{"instruction", "target",
  "mask"?, "kind"?, "phrasing_split"?, "target_scene"?}, ...], each turn editing the previous
  turn's output. It needs an input; turn k's mask has the size of turn k-1's target (turn 1's:
  the input's).

Other keys are allowed and ignored, so Shapes World datasets (`openkontext world sample`) load
as they are. Any broken line raises `DatasetError` naming the line and the field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from openkontext import imaging
from openkontext.world.render import change_mask, render_target
from openkontext.world.scene import SceneError, Target

EXIF_ORIENTATION = 0x0112
MAX_CASE_REFERENCES = 3  # besides the input: Kontext reads at most four pictures
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # ids become file names in --save-outputs


class DatasetError(ValueError):
    """A dataset line that cannot be evaluated; the message names the line and the field."""


@dataclass(frozen=True)
class Picture:
    """One image of a case: a file, or a scene rendered on demand. size is (width, height)."""

    size: tuple[int, int]
    path: Path | None = None
    scene: Target | None = None

    def load(self) -> np.ndarray:
        """(H, W, 3) uint8: the file when there is one, else the scene rendered."""
        if self.path is None:
            return render_target(self.scene, self.size)
        return imaging.image_to_array(imaging.load_image(self.path))

    def load_mask(self) -> np.ndarray:
        """A mask file as (H, W) bool: True where the value is >= 128."""
        with Image.open(self.path) as img:
            return np.asarray(img.convert("L")) >= 128


@dataclass(frozen=True)
class Turn:
    instruction: str
    target: Picture
    mask: Picture | None = None
    category: str | None = None  # a chain turn's edit kind, when given
    phrasing_split: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    input: Picture | None  # None: a generation
    turns: tuple[Turn, ...]  # one for a single case
    is_chain: bool = False
    phrasing_split: str | None = None
    source: str = "cases.jsonl"  # where the case came from, for error messages
    line: int = 0
    references: tuple[Picture, ...] = ()  # images 2.. of an edit

    def start(self, k: int) -> Picture | None:
        """The ground-truth picture turn k (1-based) starts from: the input, then targets."""
        return self.input if k == 1 else self.turns[k - 2].target

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}"

    def change_region(self, k: int, start: np.ndarray | None = None,
                      target: np.ndarray | None = None) -> np.ndarray | None:
        """Where turn k may change the picture, (H, W) bool at the start picture's size: the
        mask file, else the difference of two scene renders, else None (not known).
        start, target: the two pictures already loaded, to save loading them again."""
        turn, first = self.turns[k - 1], self.start(k)
        if first is None:
            return None
        if turn.mask is not None:
            return turn.mask.load_mask()
        if first.scene is not None and turn.target.scene is not None:
            if first.size != turn.target.size:
                return None
            start = first.load() if start is None else start
            target = turn.target.load() if target is None else target
            return change_mask(start, target)
        return None


# -- parsing -----------------------------------------------------------------------------------


class _Line:
    """Field checks for one line, each error prefixed with where it happened."""

    def __init__(self, source: Path, number: int, native_size: int):
        self.source, self.number, self.native = source, number, native_size
        self.size: tuple[int, int] = (native_size, native_size)

    def error(self, field: str | None, message: str) -> DatasetError:
        where = f"{self.source.name} line {self.number}"
        return DatasetError(f"{where}, field {field!r}: {message}" if field else
                            f"{where}: {message}")

    def text(self, d: dict, field: str, required: bool = True, label: str | None = None):
        label = label or field
        if field not in d or d[field] is None:
            if required:
                raise self.error(label, "missing")
            return None
        value = d[field]
        if not isinstance(value, str) or not value.strip():
            raise self.error(label, f"must be a non-empty string, got {value!r}")
        return value

    def canvas(self, d: dict) -> None:
        value = d.get("size")
        if value is None:
            return
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            self.size = (value, value)
        elif (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            self.size = (value[0], value[1])
        else:
            raise self.error("size", f"must be a positive int or [width, height], got {value!r}")

    def picture(self, value: object, label: str) -> Picture:
        if isinstance(value, dict):
            try:
                return Picture(self.size, scene=Target.from_dict(value))
            except SceneError as e:
                raise self.error(label, f"bad scene: {e}") from None
        if not isinstance(value, str) or not value.strip():
            raise self.error(label, f"must be an image path or a scene object, got {value!r}")
        path = self.source.parent / value
        if not path.is_file():
            raise self.error(label, f"no such file: {path}")
        try:
            with Image.open(path) as img:
                size = img.size
                if img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # turned a quarter
                    size = (size[1], size[0])
        except Exception as e:  # noqa: BLE001 - anything PIL cannot open is a bad file
            raise self.error(label, f"not a readable image: {path} ({e})") from None
        return Picture(size, path=path)

    def with_scene(self, d: dict, label: str, target: Picture) -> Picture:
        """`target` with the scene of d["target_scene"] attached, when there is one."""
        value = d.get("target_scene")
        if value is None or target.scene is not None:
            return target
        try:
            return dataclasses.replace(target, scene=Target.from_dict(value))
        except SceneError as e:
            raise self.error(label, f"bad scene: {e}") from None

    def mask(self, d: dict, label: str, start: Picture | None) -> Picture | None:
        if d.get("mask") is None:
            return None
        if start is None:
            raise self.error(label, "a mask needs an input image")
        mask = self.picture(d["mask"], label)
        if mask.path is None:
            raise self.error(label, "must be an image path")
        if mask.size != start.size:
            raise self.error(label, f"is {mask.size[0]}x{mask.size[1]} but the image it masks "
                                    f"is {start.size[0]}x{start.size[1]}")
        return mask


    def references(self, d: dict, start: Picture | None) -> tuple[Picture, ...]:
        value = d.get("references")
        if value is None:
            return ()
        if start is None:
            raise self.error("references", "references need an input image")
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_CASE_REFERENCES:
            raise self.error("references", f"must be a list of 1 to {MAX_CASE_REFERENCES} "
                                           f"pictures, got {value!r}")
        return tuple(self.picture(v, f"references[{k}]") for k, v in enumerate(value))


def parse_case(d: object, source: Path, number: int, native_size: int) -> Case:
    """One decoded JSONL line -> Case, or DatasetError."""
    line = _Line(source, number, native_size)
    if not isinstance(d, dict):
        raise line.error(None, f"a case must be a JSON object, got {type(d).__name__}")
    case_id = line.text(d, "id")
    if not SAFE_ID.fullmatch(case_id):
        raise line.error("id", f"must be letters, digits, '.', '_' or '-', got {case_id!r}")
    line.canvas(d)
    if "input" not in d:
        raise line.error("input", "missing (use null for a generation)")
    start = None if d["input"] is None else line.picture(d["input"], "input")
    split = line.text(d, "phrasing_split", required=False)
    if "chain" in d:
        chain = d["chain"]
        if not isinstance(chain, list) or not chain:
            raise line.error("chain", "must be a non-empty list of turns")
        if start is None:
            raise line.error("input", "a chain needs an input image")
        turns, previous = [], start
        for k, t in enumerate(chain, start=1):
            label = f"chain[{k}]"
            if not isinstance(t, dict):
                raise line.error(label, f"must be an object, got {type(t).__name__}")
            if t.get("target") is None:
                raise line.error(f"{label}.target", "missing")
            target = line.with_scene(t, f"{label}.target_scene",
                                     line.picture(t["target"], f"{label}.target"))
            turns.append(Turn(
                instruction=line.text(t, "instruction", label=f"{label}.instruction"),
                target=target,
                mask=line.mask(t, f"{label}.mask", previous),
                category=line.text(t, "kind", required=False, label=f"{label}.kind"),
                phrasing_split=line.text(t, "phrasing_split", required=False,
                                         label=f"{label}.phrasing_split"),
            ))
            previous = target
        category = line.text(d, "category", required=False) or "chain"
        return Case(case_id, category, start, tuple(turns), True, split, source.name, number)
    if "target" not in d or d["target"] is None:
        raise line.error("target", "missing")
    turn = Turn(
        instruction=line.text(d, "instruction"),
        target=line.with_scene(d, "target_scene", line.picture(d["target"], "target")),
        mask=line.mask(d, "mask", start),
        phrasing_split=split,
    )
    default = "generation" if start is None else "edit"
    category = line.text(d, "category", required=False) or default
    return Case(case_id, category, start, (turn,), False, split, source.name, number,
                line.references(d, start))


def load_cases(path: str | Path, native_size: int = 64, limit: int | None = None) -> list[Case]:
    """Read and check a JSONL dataset (blank lines are skipped); the first `limit` cases."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if limit is not None and len(cases) >= limit:
            break
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path.name} line {number}: not valid JSON: {e}") from None
        case = parse_case(d, path, number, native_size)
        if case.id in seen:
            raise DatasetError(f"{path.name} line {number}, field 'id': {case.id!r} is already "
                               f"used on line {seen[case.id]}")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise DatasetError(f"{path} holds no cases")
    return cases
