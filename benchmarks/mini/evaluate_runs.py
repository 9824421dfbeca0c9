"""Export training runs and score them side by side on the Shapes suite, against issue 3's floor.

What follows every `openkontext train mini` run before its weights are shipped: export each run
(or take an export folder as it is, e.g. the shipped one), evaluate the built-in suite on each
noise seed, and print one table with a column per (model, seed): every edit kind's success,
median PSNR over all edits beside the identity baseline, generation, preservation, trained and
held-out phrasings, how many failed edits left the picture as it was (within 0.5 dB of
returning the input), how each floor kind's failures split (left as input / only the edited
part wrong / the rest of the picture damaged too), and whether the floor to ship is met.

    .venv/bin/python benchmarks/mini/evaluate_runs.py /work/runs/A /work/runs/B \\
        src/openkontext/embedded --out /tmp/evaluated --seeds 0 1

With `--suite shapes-plus` the columns are the other suite's groups instead (issue 34): edits on
non-square canvases per kind, generations at 16:9 and 9:16, the last turn of non-square chains,
and reference edits per kind in trained and held-out words, each as success / layout (every
object in its cell and colour, every background right).

Each suite report is written as OUT/<name>/suite_seed<k>.json (shapes-plus: plus_seed<k>.json;
the `openkontext eval --json` format; with `--no-preserve`, no paste-back,
suite_seed<k>_nopreserve.json; with `--fit-positions`, sampled with fitted position ids whatever
the model was trained with, ..._fit.json); the exports are OUT/<name>/mini.{json,safetensors},
ready to copy into the package.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import tempfile
from pathlib import Path

import torch
import typer

from openkontext.eval import build_suite, evaluate
from openkontext.eval.dataset import load_cases
from openkontext.eval.report import ALL_EDITS, GENERATION
from openkontext.eval.runner import EVAL_SPEED
from openkontext.eval.suite import REFERENCE_KINDS as PLUS_REFERENCE_KINDS
from openkontext.eval.suite import WIDE_KINDS, suite_label
from openkontext.pipeline import Kontext
from openkontext.speed import SPEEDS
from openkontext.train.cli import export
from openkontext.world.edits import KINDS

FLOOR_KINDS = ("recolor", "remove", "background", "grayscale", "invert", "night")
FLOOR_SUCCESS = 0.70  # success on each floor kind
FLOOR_GAIN_DB = 8.0  # median PSNR over all edits, above the identity baseline


def exported(source: Path, out: Path) -> Path:
    """An export folder for `source`: itself when it is one, else `train export` into out."""
    if (source / "mini.json").exists():
        return source
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its one line names the step counts
            export(run=source, out=out)
    except typer.BadParameter as e:  # e.g. the run's autoencoder is missing or unfinished
        raise SystemExit(f"evaluate_runs.py: error: cannot export {source}: {e}") from None
    return out


NEAR_INPUT_DB = 0.5  # a failed edit scoring this close to returning its input left it as it was


def failed_edits(cases: list[dict]) -> list[dict]:
    """The first (only) turn of every failed single edit (chains and generations left out).
    cases: a report's "cases"."""
    return [
        c["turns"][0] | {"category": c["category"]}
        for c in cases
        if not c["chain"]
        and c["turns"][0]["identity_psnr"] is not None
        and not c["turns"][0]["success"]
    ]


def _near_input(turn: dict) -> bool:
    """Whether a turn scored within NEAR_INPUT_DB of returning its input."""
    return abs(turn["psnr"] - turn["identity_psnr"]) < NEAR_INPUT_DB


def left_as_input(cases: list[dict]) -> tuple[int, int]:
    """(failed single edits that scored within NEAR_INPUT_DB of the identity baseline, failed
    single edits): how much of the failure is not editing at all. cases: a report's "cases"."""
    failed = failed_edits(cases)
    return sum(map(_near_input, failed)), len(failed)


DAMAGED_DB = 30.0  # preservation below this: the edit spoilt what it should have kept


def failures(cases: list[dict], category: str) -> tuple[int, int, int]:
    """How a kind's failed single edits split: (left as input, only the edited part wrong, the
    rest of the picture damaged too: preservation below DAMAGED_DB). cases: a report's "cases"."""
    failed = [t for t in failed_edits(cases) if t["category"] == category]
    near = [t for t in failed if _near_input(t)]
    damaged = [t for t in failed if not _near_input(t)
               and t["preservation"] is not None and t["preservation"] < DAMAGED_DB]
    return len(near), len(failed) - len(near) - len(damaged), len(damaged)


def column(summary: dict, cases: list[dict] | None = None) -> dict[str, str]:
    """One table column from a report summary (and its cases): row name -> cell."""
    cats, splits = summary["categories"], summary["splits"]
    edits = cats[ALL_EDITS]
    gain = edits["psnr_median"] - edits["identity_psnr_median"]
    floor = gain >= FLOOR_GAIN_DB and all(
        cats[k]["success_rate"] >= FLOOR_SUCCESS for k in FLOOR_KINDS
    )
    cells = {
        "all edits dB": f"{edits['psnr_median']:.1f}",
        "all edits success": f"{edits['success_rate']:.0%}",
        "over identity dB": f"{gain:+.1f}",
        "preservation dB": f"{edits['preservation_median']:.1f}",
    }
    cells.update({kind: f"{cats[kind]['success_rate']:.0%}" for kind in KINDS if kind in cats})
    if GENERATION in cats:
        gen = cats[GENERATION]
        cells[GENERATION] = f"{gen['psnr_median']:.1f} dB {gen['success_rate']:.0%}"
    for split in ("train", "heldout"):
        if split in splits:
            cells[f"{split} phrasings dB"] = f"{splits[split]['psnr_median']:.1f}"
    if cases is not None:
        near, failed = left_as_input(cases)
        cells["failed, left as input"] = f"{near}/{failed}"
        for kind in FLOOR_KINDS:
            if kind in cats:
                cells[f"{kind} failed: input/part/rest"] = "/".join(
                    str(n) for n in failures(cases, kind)
                )
    cells["floor met"] = "yes" if floor else "no"
    return cells


def _rates(turns: list[dict]) -> str:
    """"success / layout" over turns (layout over those that have a verdict)."""
    if not turns:
        return "-"
    ok = sum(t["success"] for t in turns) / len(turns)
    judged = [t["layout"] for t in turns if t.get("layout") is not None]
    layout = f"{sum(judged) / len(judged):.0%}" if judged else "n/a"
    return f"{ok:.0%} / {layout}"


def plus_column(cases: list[dict]) -> dict[str, str]:
    """One table column of the shapes-plus suite from a report's cases: row name -> cell."""
    def part(prefix: str) -> list[dict]:
        return [c for c in cases if c["id"].rsplit("-", 1)[0] == prefix]

    cells = {}
    wide = part("wide")
    for kind in WIDE_KINDS:
        cells[f"non-square {kind}"] = _rates([c["turns"][0] for c in wide if c["category"] == kind])
    cells["non-square 4 kinds"] = _rates([c["turns"][0] for c in wide])
    gens = part("wide-generation")  # written alternating 16:9, 9:16
    for i, ratio in enumerate(("16:9", "9:16")):
        cells[f"generation {ratio}"] = _rates([c["turns"][0] for c in gens[i::2]])
    cells["non-square chain, turn 5"] = _rates([c["turns"][-1] for c in part("wide-chain")])
    for split in ("train", "heldout"):
        refs = part(f"reference-{split}")
        for kind in PLUS_REFERENCE_KINDS:
            cells[f"{kind}, {split} words"] = _rates(
                [c["turns"][0] for c in refs if c["category"] == kind])
    return cells


def print_table(columns: dict[str, dict[str, str]]) -> None:
    rows = list(dict.fromkeys(row for cells in columns.values() for row in cells))
    width = max(len(r) for r in rows)
    heads = list(columns)
    widths = [max(len(h), *(len(c.get(r, "")) for r in rows)) for h, c in columns.items()]
    print(" " * width + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for row in rows:
        cells = [columns[h].get(row, "-").rjust(w) for h, w in zip(heads, widths, strict=True)]
        print(row.ljust(width) + "  " + "  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="run folders or mini exports")
    parser.add_argument("--out", type=Path, required=True, help="exports and reports go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--suite-size", type=int, default=10, help="cases per kind and split")
    parser.add_argument("--suite", choices=("shapes", "shapes-plus"), default="shapes",
                        help="the square suite, or other ratios and references")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--speed", choices=tuple(SPEEDS), default=EVAL_SPEED,
                        help="the step cache's setting (default: quality, every step computed)")
    parser.add_argument(
        "--no-preserve", action="store_true", help="no paste-back (the model's own pixels)"
    )
    parser.add_argument(
        "--fit-positions", action="store_true",
        help="sample with fitted position ids whatever the model was trained with (what they "
        "do alone; ModelPreset.fit_positions)",
    )
    args = parser.parse_args()
    if args.suite_size < 1:
        parser.error(f"--suite-size must be at least 1, got {args.suite_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [s.resolve().name for s in args.sources]
    if len(set(names)) != len(names):
        parser.error(f"sources must have different folder names, got {names}")
    for source in args.sources:
        if not ((source / "mini.json").is_file() or (source / "flux.pt").is_file()):
            parser.error(f"{source} is neither a mini export (mini.json) nor a run (flux.pt)")
    columns: dict[str, dict[str, str]] = {}
    # of each report's file name
    tail = ("_nopreserve" if args.no_preserve else "") + ("_fit" if args.fit_positions else "")
    stem = "suite" if args.suite == "shapes" else "plus"
    with tempfile.TemporaryDirectory() as tmp:
        suites: dict[int, list] = {}  # native size -> the suite's cases at that size
        for source, name in zip(args.sources, names, strict=True):
            folder = exported(source, args.out / name)
            kontext = Kontext.load(str(folder))
            if args.fit_positions:
                kontext.model.preset = dataclasses.replace(kontext.model.preset,
                                                           fit_positions=True)
            size = kontext.model.preset.native_size
            if size not in suites:
                jsonl = build_suite(Path(tmp) / str(size), args.suite_size, size, args.suite,
                                    kontext.model.preset.latent_multiple)
                suites[size] = load_cases(jsonl, size)
            (args.out / name).mkdir(parents=True, exist_ok=True)
            for seed in args.seeds:
                report = evaluate(kontext, suites[size], seed=seed, preserve=not args.no_preserve,
                                  speed=args.speed)
                report.settings["dataset"] = suite_label(args.suite_size, args.suite)
                data = report.write_json(args.out / name / f"{stem}_seed{seed}{tail}.json")
                columns[f"{name} s{seed}"] = (
                    column(data["summary"], data["cases"]) if args.suite == "shapes"
                    else plus_column(data["cases"])
                )
                print(f"{name} seed {seed}: {report.seconds:.0f} s", file=sys.stderr)
    print_table(columns)


if __name__ == "__main__":
    main()
