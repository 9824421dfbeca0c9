"""The built-in Shapes World suites (`openkontext eval --suite shapes|shapes-plus`).

Written with the world dataset writer from fixed seeds, so the same size always gives the same
cases. With `per_kind` = N (default 20), `shapes` holds, at the model's native size:

- N edits of every kind (recolor, remove, add, move, resize, reshape, background, swap,
  grayscale, invert, night) with training phrasings, ids "train-*";
- N more of every kind with held-out phrasings (never used in training), ids "heldout-*";
- N generations, ceil(N/2) with training and floor(N/2) with held-out descriptions, ids
  "generation-train-*" and "generation-heldout-*";
- max(1, N // 2) chains of 5 turns over all kinds with training phrasings, ids "chain-*".

The default is 22 N + N + 5 N/2 = 510 model runs; a larger N extends the suite without changing
its first cases (the writer seeds case i from (seed, i)).

`shapes-plus` holds what the square suite cannot show: other aspect ratios and references.

- N edits of each of recolor, background, remove and add on the non-square preferred
  resolutions (the Kontext list scaled to the native size), cycling through them, ids "wide-*";
- N generations alternating 16:9 and 9:16 (snapped to the preferred list),
  "wide-generation-*";
- max(1, N // 2) chains of 5 turns on the non-square sizes, "wide-chain-*";
- N reference edits of each of ref_object, ref_colour and ref_background (1 to 3 references,
  `world.references`) with training phrasings, "reference-train-*", and N with held-out ones,
  "reference-heldout-*", at the native size.

That is 4 N + N + 5 N/2 + 6 N = 270 model runs at N = 20.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from openkontext.world.edits import KINDS

SUITES = ("shapes", "shapes-plus")
DEFAULT_PER_KIND = 20
CHAIN_TURNS = 5
SUITE_NAME = "suite.jsonl"
# One fixed seed per part, so parts never share a scene by construction of their generators.
SEEDS = {"train": 5101, "heldout": 5202, "generation-train": 5303,
         "generation-heldout": 5404, "chain": 5505, "wide": 5606, "wide-generation": 5707,
         "wide-chain": 5808, "reference-train": 5909, "reference-heldout": 6010}
WIDE_KINDS = ("recolor", "background", "remove", "add")
REFERENCE_KINDS = ("ref_object", "ref_colour", "ref_background")  # world.references (torch)


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
    if "references" in case:
        case["references"] = [f"{part}/{r}" for r in case["references"]]
    if "chain" in case:
        case["chain"] = [
            {k: f"{part}/{v}" if k in ("target", "mask") and isinstance(v, str) else v
             for k, v in turn.items()}
            for turn in case["chain"]
        ]
    return case


def _parts(suite: str, per_kind: int, size: int, multiple: int) -> dict[str, dict]:
    """The parts of a suite: {part: `write_dataset` options}."""
    from openkontext.world.dataset import GENERATION  # torch: not at import

    if suite == "shapes":
        return {
            "train": dict(count=per_kind * len(KINDS), categories=KINDS, split="train"),
            "heldout": dict(count=per_kind * len(KINDS), categories=KINDS, split="heldout"),
            "generation-train": dict(count=(per_kind + 1) // 2, categories=[GENERATION],
                                     split="train"),
            "generation-heldout": dict(count=per_kind // 2, categories=[GENERATION],
                                       split="heldout"),
            "chain": dict(count=max(1, per_kind // 2), categories=KINDS, split="train",
                          chains=True, min_turns=CHAIN_TURNS, max_turns=CHAIN_TURNS),
        }
    from openkontext.resolution import scaled_resolutions

    sizes = scaled_resolutions(size, multiple)
    wide = [s for s in sizes if s[0] != s[1]]

    def snapped(ratio: float) -> tuple[int, int]:
        return min(sizes, key=lambda s: abs(math.log(s[0] / s[1] / ratio)))

    return {
        "wide": dict(count=per_kind * len(WIDE_KINDS), categories=WIDE_KINDS, split="train",
                     size=wide),
        "wide-generation": dict(count=per_kind, categories=[GENERATION], split="train",
                                size=[snapped(16 / 9), snapped(9 / 16)]),
        "wide-chain": dict(count=max(1, per_kind // 2), categories=KINDS, split="train",
                           chains=True, min_turns=CHAIN_TURNS, max_turns=CHAIN_TURNS, size=wide),
        "reference-train": dict(count=per_kind * len(REFERENCE_KINDS),
                                categories=REFERENCE_KINDS, split="train"),
        "reference-heldout": dict(count=per_kind * len(REFERENCE_KINDS),
                                  categories=REFERENCE_KINDS, split="heldout"),
    }


def build_suite(folder: str | Path, per_kind: int = DEFAULT_PER_KIND, size: int = 64,
                suite: str = "shapes", multiple: int = 8) -> Path:
    """Write a suite into `folder` (one sub-folder per part); returns its JSONL path.
    size: the model's native square; multiple: its latent multiple (the sides of the
    shapes-plus canvases are multiples of it)."""
    from openkontext.world.dataset import write_dataset  # torch: not at import

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of: {', '.join(SUITES)}")
    if per_kind < 1:
        raise ValueError(f"the suite size must be at least 1, got {per_kind}")
    folder = Path(folder)
    lines = []
    for part, options in _parts(suite, per_kind, size, multiple).items():
        if options["count"] == 0:
            continue
        options.setdefault("size", size)
        path = write_dataset(folder / part, seed=SEEDS[part], **options)
        for raw in path.read_text(encoding="utf-8").splitlines():
            lines.append(json.dumps(_relocate(json.loads(raw), part)))
    out = folder / SUITE_NAME
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
