"""benchmarks/mini/recolor_misses.py: the suite's failed recolours read from a suite report."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "recolor_misses.py"
spec = importlib.util.spec_from_file_location("recolor_misses", SCRIPT)
recolor_misses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recolor_misses)


@pytest.fixture(scope="module")
def scenes():
    return recolor_misses.suite_scenes()


def report_failing(scenes, failed_ids):
    """A suite report (the fields the script reads) of every single recolour of the suite,
    those in failed_ids failed."""
    cases = [{"id": i, "category": c["category"], "chain": False,
              "turns": [{"turn": 1, "success": i not in failed_ids}]}
             for i, c in scenes.items() if c["category"] == "recolor"]
    return {"settings": {"dataset": "suite:shapes:10"}, "cases": cases}


def test_each_recolour_names_the_object_whose_colour_changes(scenes):
    report = report_failing(scenes, {"train-00000"})
    every = recolor_misses.recolours(report, scenes)
    assert len(every) == 20
    first = next(m for m in every if m["id"] == "train-00000")
    assert first["success"] is False and sum(not m["success"] for m in every) == 1
    # "change the diamond's colour to cyan": a small black diamond beside a small pink circle
    assert first["named"] == {"shape": "diamond", "color": "black", "cell": "top", "size": "small"}
    assert [(o["shape"], o["alike"]) for o in first["others"]] == [("circle", False)]
    star = next(m for m in every if m["id"] == "train-00011")  # a star beside a diamond
    assert star["named"]["shape"] == "star" and star["others"][0]["alike"] is True


def test_reports_printed_and_bad_ones_refused(scenes, tmp_path, monkeypatch, capsys,
                                               refused):
    good = tmp_path / "suite_seed0.json"
    good.write_text(json.dumps(report_failing(scenes, {"train-00000", "train-00011"})))
    monkeypatch.setattr(sys, "argv", ["recolor_misses.py", str(good)])
    recolor_misses.main()
    out = capsys.readouterr().out
    assert "2 of 20 recolours failed; 1 of the" in out
    assert 'train-00011 "paint the star purple": medium white star;' in out

    stranger = tmp_path / "other.json"
    stranger.write_text(json.dumps({"settings": {"dataset": "suite:shapes:10"},
                                    "cases": [{"id": "train-99999", "category": "recolor",
                                               "chain": False, "turns": [{"success": False}]}]}))
    monkeypatch.setattr(sys, "argv", ["recolor_misses.py", str(stranger)])
    with pytest.raises(SystemExit) as stop:
        recolor_misses.main()
    assert "'train-99999' is not in the suite" in str(stop.value.code)

    # a report of another dataset, named in its settings, is refused before any suite is built
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"settings": {"dataset": "/data/edits.jsonl"}, "cases": []}))
    monkeypatch.setattr(sys, "argv", ["recolor_misses.py", str(own)])
    with pytest.raises(SystemExit) as stop:
        recolor_misses.main()
    assert "run on '/data/edits.jsonl', not the built-in suite" in str(stop.value.code)

    missing = str(tmp_path / "missing.json")
    assert "cannot read the suite report" in refused(recolor_misses.main, missing)
