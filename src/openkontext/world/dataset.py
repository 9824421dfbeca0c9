"""Writing Shapes World evaluation sets: PNG images plus one JSONL file of cases.

Layout of a dataset folder:

    cases.jsonl
    images/<id>_input.png, <id>_target.png, <id>_mask.png   (single edits)
    images/<id>_ref<k>.png                                    (reference edits, k = 2..4)
    images/<id>_gen.png                                       (generations)
    images/<id>_input.png, <id>_t<k>.png, <id>_t<k>_mask.png  (chains, k = 1..n)

One case per line, paths relative to the JSONL file; every case also carries the scenes as
JSON (`*_scene`, a target's with its `"filter"` when it has one) and the canvas `size`:

    edit:       {"id", "category": <kind>, "instruction", "input", "target", "mask",
                 "input_scene", "target_scene", "phrasing_split", "size"}
    reference:  the same plus "references": [<path of image 2>, ...] and "reference_scenes"
                (category ref_object, ref_colour or ref_background: `world.references`)
    generation: {"id", "category": "generation", "instruction", "input": null, "target",
                 "target_scene", "phrasing_split", "size"}
    chain:      {"id", "category": "chain", "input", "input_scene", "phrasing_split", "size",
                 "chain": [{"instruction", "kind", "target", "mask", "target_scene",
                            "phrasing_split"}, ...]}

`size` is an int for a square canvas, else [width, height]; a dataset written with several
sizes draws case i at size i // (number of categories), cycling, so every category meets
every size. A mask is white where the target differs from that turn's input. Case i is drawn
from its own generator seeded by (seed, i), so a larger count extends a dataset without changing
its start.
Single cases cycle through the categories in order, so every category gets its share.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from openkontext.world.edits import KINDS
from openkontext.world.references import REFERENCE_KINDS, sample_reference_edit
from openkontext.world.render import Size, change_mask, render_batch, render_targets, to_pil
from openkontext.world.sampling import sample_chain, sample_edit, sample_generation

GENERATION = "generation"
CATEGORIES: tuple[str, ...] = (*KINDS, GENERATION, *REFERENCE_KINDS)
JSONL_NAME = "cases.jsonl"


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"openkontext-world:{seed}:{index}")


def _save(image: np.ndarray, folder: Path, name: str) -> str:
    to_pil(image).save(folder / "images" / name)
    return f"images/{name}"


def _size_json(size: Size) -> int | list[int]:
    return size if isinstance(size, int) else list(size)


def reference_case(case_id: str, category: str, rng: random.Random, size: Size, split: str,
                   folder: Path, references: int | None = None) -> dict:
    """Draw one reference edit (`references` pictures besides the input, default 1..3) and
    write its images."""
    r = sample_reference_edit(rng, category, references, split)
    src, refs, tgt = r.images(size)
    return {"id": case_id, "category": r.kind, "instruction": r.instruction,
            "input": _save(src, folder, f"{case_id}_input.png"),
            "references": [_save(image, folder, f"{case_id}_ref{k}.png")
                           for k, image in enumerate(refs, start=2)],
            "target": _save(tgt, folder, f"{case_id}_target.png"),
            "mask": _save(change_mask(src, tgt), folder, f"{case_id}_mask.png"),
            "input_scene": r.source.to_dict(),
            "reference_scenes": [s.to_dict() for s in r.references],
            "target_scene": r.target.to_dict(), "phrasing_split": r.phrasing_split,
            "size": _size_json(size)}


def edit_case(case_id: str, category: str, rng: random.Random, size: Size, split: str,
              folder: Path) -> dict:
    """Draw one single-edit or generation case and write its images."""
    if category in REFERENCE_KINDS:
        return reference_case(case_id, category, rng, size, split, folder)
    if category == GENERATION:
        g = sample_generation(rng, split)
        target = render_targets([g.target], size)[0]
        return {"id": case_id, "category": GENERATION, "instruction": g.description,
                "input": None, "target": _save(target, folder, f"{case_id}_gen.png"),
                "target_scene": g.target.to_dict(), "phrasing_split": g.phrasing_split,
                "size": _size_json(size)}
    e = sample_edit(rng, [category], split)
    src, tgt, mask = e.images(size)
    return {"id": case_id, "category": e.kind, "instruction": e.instruction,
            "input": _save(src, folder, f"{case_id}_input.png"),
            "target": _save(tgt, folder, f"{case_id}_target.png"),
            "mask": _save(mask, folder, f"{case_id}_mask.png"),
            "input_scene": e.source.to_dict(), "target_scene": e.target.to_dict(),
            "phrasing_split": e.phrasing_split, "size": _size_json(size)}


def chain_case(case_id: str, rng: random.Random, size: Size, split: str, folder: Path,
               kinds=None, min_turns: int = 2, max_turns: int = 10) -> dict:
    """Draw one multi-turn chain and write the input and every turn's target and mask."""
    c = sample_chain(rng, kinds=kinds, split=split, min_turns=min_turns, max_turns=max_turns)
    previous = source = render_batch([c.source], size)[0]
    turns = []
    for k, turn in enumerate(c.turns, start=1):
        image = render_targets([turn.target], size)[0]
        turns.append({
            "instruction": turn.instruction, "kind": turn.kind,
            "target": _save(image, folder, f"{case_id}_t{k}.png"),
            "mask": _save(change_mask(previous, image), folder, f"{case_id}_t{k}_mask.png"),
            "target_scene": turn.target.to_dict(), "phrasing_split": turn.phrasing_split,
        })
        previous = image
    splits = {t["phrasing_split"] for t in turns}
    return {"id": case_id, "category": "chain",
            "input": _save(source, folder, f"{case_id}_input.png"),
            "input_scene": c.source.to_dict(),
            "phrasing_split": splits.pop() if len(splits) == 1 else "mixed",
            "size": _size_json(size), "chain": turns}


def write_dataset(folder: Path, count: int, seed: int = 0, size: Size | list[Size] = 64,
                  categories=None, split: str = "train", chains: bool = False,
                  min_turns: int = 2, max_turns: int = 10) -> Path:
    """Write `count` cases into `folder`; returns the JSONL path.

    categories: edit kinds, reference edit kinds and/or "generation" (default: all). With
    `chains`, every case is a chain whose turns use the given edit kinds (the others are
    ignored there). size: one canvas, or a list cycled through.
    """
    categories = tuple(categories or CATEGORIES)
    sizes = size if isinstance(size, list) else [size]
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown category {c!r}; expected one of: {', '.join(CATEGORIES)}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    kinds = [c for c in categories if c in KINDS]
    if chains and not kinds:
        raise ValueError("chains need at least one edit kind")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / JSONL_NAME
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            case_id, rng = f"{i:05d}", case_rng(seed, i)
            at = sizes[(i if chains else i // len(categories)) % len(sizes)]
            if chains:
                case = chain_case(case_id, rng, at, split, folder, kinds, min_turns, max_turns)
            else:
                case = edit_case(case_id, categories[i % len(categories)], rng, at, split,
                                 folder)
            f.write(json.dumps(case) + "\n")
    return path
