"""The built-in Shapes World suite (`openkontext eval --suite shapes`).

Written with the world dataset writer from fixed seeds, so the same size always gives the same
cases. With `per_kind` = N (default 20) it holds, at the model's native size:

- N edits of every kind (recolor, remove, add, move, resize, reshape, background, swap,
  grayscale, invert, night) with training phrasings, ids "train-*";
- N more of every kind with held-out phrasings (never used in training), ids "heldout-*";
- N generations, ceil(N/2) with training and floor(N/2) with held-out descriptions, ids
  "generation-train-*" and "generation-heldout-*";
- max(1, N // 2) chains of 5 turns over all kinds with training phrasings, ids "chain-*".

The default is 22 N + N + 5 N/2 = 510 model runs; a larger N extends the suite without changing
its first cases (the writer seeds case i from (seed, i)).
"""

from __future__ import annotations

import json
from pathlib import Path

from openkontext.world.edits import KINDS

SUITES = ("shapes",)
DEFAULT_PER_KIND = 20
CHAIN_TURNS = 5
SUITE_NAME = "suite.jsonl"
# One fixed seed per part, so parts never share a scene by construction of their generators.
SEEDS = {"train": 5101, "heldout": 5202, "generation-train": 5303,
         "generation-heldout": 5404, "chain": 5505}


def suite_label(per_kind: int, suite: str = "shapes") -> str:
    """How a report's settings name the built-in suite it ran on: "suite:shapes:N"."""
    return f"suite:{suite}:{per_kind}"


def suite_size_of(label: object, suite: str = "shapes") -> int:
    """The per-kind size in a label `suite_label` wrote (ValueError for any other dataset)."""
    prefix = f"suite:{suite}:"
    text = str(label)
    if not text.startswith(prefix) or not text[len(prefix):].isdigit():
        raise ValueError(f"it was run on {text!r}, not the built-in suite")
    return int(text[len(prefix):])


def _relocate(case: dict, part: str) -> dict:
    """Prefix the case's id and its image paths with its part's folder name."""
    case = dict(case, id=f"{part}-{case['id']}")
    for key in ("input", "target", "mask"):
        if isinstance(case.get(key), str):
            case[key] = f"{part}/{case[key]}"
    if "chain" in case:
        case["chain"] = [
            {k: f"{part}/{v}" if k in ("target", "mask") and isinstance(v, str) else v
             for k, v in turn.items()}
            for turn in case["chain"]
        ]
    return case


def build_suite(folder: str | Path, per_kind: int = DEFAULT_PER_KIND, size: int = 64) -> Path:
    """Write the suite into `folder` (one sub-folder per part); returns its JSONL path."""
    from openkontext.world.dataset import GENERATION, write_dataset  # torch: not at import

    if per_kind < 1:
        raise ValueError(f"the suite size must be at least 1, got {per_kind}")
    folder = Path(folder)
    parts = {
        "train": dict(count=per_kind * len(KINDS), categories=KINDS, split="train"),
        "heldout": dict(count=per_kind * len(KINDS), categories=KINDS, split="heldout"),
        "generation-train": dict(count=(per_kind + 1) // 2, categories=[GENERATION],
                                 split="train"),
        "generation-heldout": dict(count=per_kind // 2, categories=[GENERATION],
                                   split="heldout"),
        "chain": dict(count=max(1, per_kind // 2), categories=KINDS, split="train",
                      chains=True, min_turns=CHAIN_TURNS, max_turns=CHAIN_TURNS),
    }
    lines = []
    for part, options in parts.items():
        if options["count"] == 0:
            continue
        path = write_dataset(folder / part, seed=SEEDS[part], size=size, **options)
        for raw in path.read_text(encoding="utf-8").splitlines():
            lines.append(json.dumps(_relocate(json.loads(raw), part)))
    suite = folder / SUITE_NAME
    suite.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return suite
