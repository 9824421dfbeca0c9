"""Edit pairs to train a LoRA on, read from a folder and checked before any training starts.

A folder holds either

- `pairs.jsonl`: the evaluation dataset format (`openkontext.eval.dataset`), one edit per line
  with "input", "instruction" and "target" (image paths or Shapes World scenes); generations and
  chains are refused; or
- `NAME.png` (the input), `NAME_after.png` (the edited picture) and `NAME.txt` (the
  instruction) for every pair; .jpg, .jpeg and .webp are read as well as .png.

Every pair is sized as the pipeline sizes an edit: the input goes to the model's preferred
resolution for its aspect ratio (`resolution.resolve_size`), and the edited picture to the same
size, so pairs of any shape can be trained on side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from openkontext import imaging
from openkontext.model import ModelPreset
from openkontext.resolution import resolve_size

PAIRS_JSONL = "pairs.jsonl"
AFTER = "_after"  # NAME_after.png is the edited NAME.png
PAIR_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class PairsError(ValueError):
    """A pair folder that cannot be trained on; the message names the file (and line)."""


@dataclass(frozen=True)
class Pair:
    name: str  # the file stem or case id, for messages
    instruction: str
    source: Image.Image  # the input at its training size (width, height)
    target: Image.Image  # the edited picture at the same size

    @property
    def size(self) -> tuple[int, int]:
        return self.source.size


def read_pairs(folder: str | Path, preset: ModelPreset | None) -> list[Pair]:
    """Every pair in `folder`, read, checked and sized for `preset` (see the module docstring);
    PairsError naming the first file that is missing, unreadable or empty. With preset None
    the pictures keep their own sizes (scenes render at 64 px): a check of the folder before
    a large model loads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PairsError(f"{folder} is not a folder")
    if (folder / PAIRS_JSONL).is_file():
        return _read_jsonl(folder / PAIRS_JSONL, preset)
    return _read_files(folder, preset)


def _sized(name: str, instruction: str, source: Image.Image, target: Image.Image,
           preset: ModelPreset | None) -> Pair:
    size = source.size if preset is None else resolve_size(preset, source.size)
    return Pair(name, instruction, imaging.resize_image(source, size),
                imaging.resize_image(target, size))


def _image(path: Path) -> Image.Image:
    try:
        return imaging.load_image(path)
    except imaging.ImageError as e:
        raise PairsError(f"{path}: not a readable image ({e})") from None


def _read_files(folder: Path, preset: ModelPreset | None) -> list[Pair]:
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    images = {p.stem: p for p in files.values() if p.suffix.lower() in PAIR_SUFFIXES}
    for stem, path in sorted(images.items()):
        if stem.endswith(AFTER) and stem[: -len(AFTER)] not in images:
            raise PairsError(f"{path}: an edited picture without its input "
                             f"({stem[: -len(AFTER)]}.png)")
    pairs = []
    for stem, path in sorted(images.items()):
        if stem.endswith(AFTER):
            continue
        after = images.get(stem + AFTER)
        if after is None:
            raise PairsError(f"{path}: no edited picture beside it ({stem}{AFTER}.png)")
        text_path = folder / f"{stem}.txt"
        if not text_path.is_file():
            raise PairsError(f"{path}: no instruction beside it ({text_path.name})")
        try:
            instruction = text_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise PairsError(f"{text_path}: cannot read the instruction ({e})") from None
        if not instruction:
            raise PairsError(f"{text_path}: the instruction is empty")
        pairs.append(_sized(stem, instruction, _image(path), _image(after), preset))
    if not pairs:
        raise PairsError(f"{folder} holds no pairs (NAME.png + NAME{AFTER}.png + NAME.txt, "
                         f"or {PAIRS_JSONL})")
    return pairs


def _read_jsonl(path: Path, preset: ModelPreset | None) -> list[Pair]:
    from openkontext.eval.dataset import DatasetError, load_cases

    try:
        cases = load_cases(path, 64 if preset is None else preset.native_size)
    except DatasetError as e:
        raise PairsError(str(e)) from None
    pairs = []
    for case in cases:
        if case.input is None or case.is_chain:
            what = "a generation" if case.input is None else "a chain"
            raise PairsError(f"{case.where}: case {case.id!r} is {what}; a LoRA trains on "
                             "single edits")
        turn = case.turns[0]
        try:
            source, target = case.input.load(), turn.target.load()
        except (imaging.ImageError, OSError) as e:
            raise PairsError(f"{case.where}: {e}") from None
        pairs.append(_sized(case.id, turn.instruction, Image.fromarray(source, "RGB"),
                            Image.fromarray(target, "RGB"), preset))
    return pairs
