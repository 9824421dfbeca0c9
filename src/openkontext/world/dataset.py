"""Writing Shapes World evaluation sets: PNG images plus one JSONL file of cases.

Layout of a dataset folder:

    cases.jsonl
    images/<id>_input.png, <id>_target.png, <id>_mask.png   (single edits)
    images/<id>_gen.png                                       (generations)
    images/<id>_input.png, <id>_t<k>.png, <id>_t<k>_mask.png  (chains, k = 1..n)

One case per line, paths relative to the JSONL file; every case also carries the scenes as
JSON (`*_scene`, a target's with its `"filter"` when it has one) and the canvas `size`:

    edit:       {"id", "category": <kind>, "instruction", "input", "target", "mask",
                 "input_scene", "target_scene", "phrasing_split", "size"}
    generation: {"id", "category": "generation", "instruction", "input": null, "target",
                 "target_scene", "phrasing_split", "size"}
    chain:      {"id", "category": "chain", "input", "input_scene", "phrasing_split", "size",
                 "chain": [{"instruction", "kind", "target", "mask", "target_scene",
                            "phrasing_split"}, ...]}

A mask is white where the target differs from that turn's input. Case i is drawn from its own
generator seeded by (seed, i), so a larger count extends a dataset without changing its start.
Single cases cycle through the categories in order, so every category gets its share.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from openkontext.world.edits import KINDS
from openkontext.world.render import change_mask, render_batch, render_targets, to_pil
from openkontext.world.sampling import sample_chain, sample_edit, sample_generation

GENERATION = "generation"
CATEGORIES: tuple[str, ...] = (*KINDS, GENERATION)
JSONL_NAME = "cases.jsonl"


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"openkontext-world:{seed}:{index}")


def _save(image: np.ndarray, folder: Path, name: str) -> str:
    to_pil(image).save(folder / "images" / name)
    return f"images/{name}"


def edit_case(case_id: str, category: str, rng: random.Random, size: int, split: str,
              folder: Path) -> dict:
    """Draw one single-edit or generation case and write its images."""
    if category == GENERATION:
        g = sample_generation(rng, split)
        target = render_targets([g.target], size)[0]
        return {"id": case_id, "category": GENERATION, "instruction": g.description,
                "input": None, "target": _save(target, folder, f"{case_id}_gen.png"),
                "target_scene": g.target.to_dict(), "phrasing_split": g.phrasing_split,
                "size": size}
    e = sample_edit(rng, [category], split)
    src, tgt, mask = e.images(size)
    return {"id": case_id, "category": e.kind, "instruction": e.instruction,
            "input": _save(src, folder, f"{case_id}_input.png"),
            "target": _save(tgt, folder, f"{case_id}_target.png"),
            "mask": _save(mask, folder, f"{case_id}_mask.png"),
            "input_scene": e.source.to_dict(), "target_scene": e.target.to_dict(),
            "phrasing_split": e.phrasing_split, "size": size}


def chain_case(case_id: str, rng: random.Random, size: int, split: str, folder: Path,
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
            "size": size, "chain": turns}


def write_dataset(folder: Path, count: int, seed: int = 0, size: int = 64,
                  categories=None, split: str = "train", chains: bool = False,
                  min_turns: int = 2, max_turns: int = 10) -> Path:
    """Write `count` cases into `folder`; returns the JSONL path.

    categories: edit kinds and/or "generation" (default: all). With `chains`, every case is a
    chain whose turns use the given edit kinds ("generation" is ignored there).
    """
    categories = tuple(categories or CATEGORIES)
    for c in categories:
        if c not in CATEGORIES:
            raise ValueError(f"unknown category {c!r}; expected one of: {', '.join(CATEGORIES)}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    kinds = [c for c in categories if c != GENERATION]
    if chains and not kinds:
        raise ValueError("chains need at least one edit kind")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / JSONL_NAME
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            case_id, rng = f"{i:05d}", case_rng(seed, i)
            if chains:
                case = chain_case(case_id, rng, size, split, folder, kinds, min_turns, max_turns)
            else:
                case = edit_case(case_id, categories[i % len(categories)], rng, size, split,
                                 folder)
            f.write(json.dumps(case) + "\n")
    return path
