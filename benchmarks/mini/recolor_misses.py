"""The suite's failed recolours, one line each: the named object, the other objects in the
picture (those of a shape alike the named one's marked), read from suite reports that
benchmarks/mini/evaluate_runs.py wrote. It answers which pictures the floor's recolor misses are,
e.g. whether they hold a small star (which the autoencoder draws back as a diamond or
triangle: benchmarks/mini/shape_latents.py) or an object of a look-alike shape.

    .venv/bin/python benchmarks/mini/recolor_misses.py /tmp/ev/I_x/suite_seed0.json [...]

The suite is rebuilt (it is fixed: the same pictures for every suite size) at the size each
report names (its settings' "suite:shapes:N") to read each case's scene.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from openkontext.eval import build_suite
from openkontext.eval.suite import suite_size_of
from openkontext.world.scene import alike_shapes


def suite_scenes(per_kind: int = 10) -> dict[str, dict]:
    """{case id: its suite line (input_scene, target_scene, instruction, ...)}."""
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = build_suite(tmp, per_kind)
        lines = Path(jsonl).read_text(encoding="utf-8").splitlines()
    return {case["id"]: case for case in map(json.loads, lines)}


def describe(obj: dict) -> str:
    return f"{obj['size']} {obj['color']} {obj['shape']}"


def recolours(report: dict, scenes: dict[str, dict]) -> list[dict]:
    """The single recolours of a suite report: [{id, instruction, success, named, others (each
    with "alike": bool)}]."""
    out = []
    for case in report["cases"]:
        if case["category"] != "recolor" or case["chain"]:
            continue
        if case["id"] not in scenes:
            raise ValueError(f"case {case['id']!r} is not in the suite")
        line = scenes[case["id"]]
        after = {o["cell"]: o for o in line["target_scene"]["objects"]}
        objects = line["input_scene"]["objects"]
        named = next(o for o in objects if after[o["cell"]]["color"] != o["color"])
        others = [dict(o, alike=alike_shapes(o["shape"], named["shape"]))
                  for o in objects if o is not named]
        out.append({"id": case["id"], "instruction": line["instruction"],
                    "success": case["turns"][0]["success"], "named": named, "others": others})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="suite_seed<k>.json files")
    args = parser.parse_args()
    reports = []
    for path in args.reports:
        try:
            reports.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as err:
            parser.error(f"cannot read the suite report {path}: {err}")
    suites: dict[int, dict[str, dict]] = {}
    for path, report in reports:
        try:
            per_kind = suite_size_of(report.get("settings", {}).get("dataset"))
            if per_kind not in suites:
                suites[per_kind] = suite_scenes(per_kind)
            every = recolours(report, suites[per_kind])
        except (KeyError, TypeError, ValueError, StopIteration) as err:
            sys.exit(f"{path} is not a report of the built-in suite: {err}")
        failed = [m for m in every if not m["success"]]
        with_alike = [m for m in every if any(o["alike"] for o in m["others"])]
        alike = sum(not m["success"] for m in with_alike)
        small_star = sum(any(o["shape"] == "star" and o["size"] == "small"
                             for o in [m["named"], *m["others"]]) for m in failed)
        print(f"{path}: {len(failed)} of {len(every)} recolours failed; {alike} of the"
              f" {len(with_alike)} with an object of an alike shape beside the named one failed;"
              f" {small_star} failed with a small star in the picture")
        for m in failed:
            others = ", ".join(describe(o) + (" (alike)" if o["alike"] else "")
                               for o in m["others"]) or "nothing else"
            print(f"  {m['id']} \"{m['instruction']}\": {describe(m['named'])}; beside it {others}")


if __name__ == "__main__":
    main()
