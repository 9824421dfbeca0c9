"""`openkontext eval` through a small Typer app that mounts the command with a random model."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from .eval_helpers import picture, save, write_jsonl

runner = CliRunner()


def test_eval_prints_tables_and_writes_json_and_outputs(app, paired, tmp_path):
    out, doc = tmp_path / "out", tmp_path / "report.json"
    result = runner.invoke(app, ["eval", str(paired), "--steps", "1", "--seed", "1",
                                 "--json", str(doc), "--save-outputs", str(out)])
    assert result.exit_code == 0, result.output
    for title in ("By category", "By phrasing split", "Chains, by turn"):
        assert title in result.stdout
    assert "1 of 7 outputs differed in size from their target and were resized to it (lanczos)" \
        in result.stdout
    report = json.loads(doc.read_text())
    assert set(report) == {"metrics", "settings", "summary", "cases"}
    assert report["metrics"] == {"psnr_cap_db": 99.0, "success_db": 25.0,
                                 "resize_filter": "lanczos"}
    assert report["settings"]["steps"] == 1 and report["settings"]["dataset"] == str(paired)
    summary = report["summary"]
    assert (summary["cases"], summary["runs"], summary["resized"]) == (6, 7, 1)
    assert set(summary["turns"]) == {"1", "2"}
    assert summary["categories"]["all edits"]["count"] == 4
    assert set(summary["categories"]["brighten"]) >= {
        "count", "psnr_median", "psnr_mean", "success_rate", "preservation_median",
        "identity_psnr_median", "identity_psnr_mean", "identity_success_rate",
        "identity_preservation_median"}
    same = report["cases"][0]
    assert same["id"] == "same" and same["chain"] is False
    assert same["turns"][0]["identity_psnr"] == 99.0 and same["turns"][0]["identity_success"]
    story = report["cases"][-1]
    assert [t["turn"] for t in story["turns"]] == [1, 2]
    assert Image.open(out / "story_turn2_target.png").size == (64, 64)
    assert Image.open(out / "wide.png").size == (80, 48)
    assert len(list(out.iterdir())) == 14


@pytest.mark.parametrize(("line", "message"), [
    ({"id": "b", "input": None, "target": "images/t.png"}, "line 2, field 'instruction': missing"),
    ({"id": "b", "instruction": "x", "input": "images/gone.png", "target": "images/t.png"},
     "line 2, field 'input': no such file"),
    ('{"id": "b", "instruction": ', "line 2: not valid JSON"),
])
def test_a_bad_line_exits_with_code_2(app, tmp_path, line, message):
    good = {"id": "a", "instruction": "x", "input": None,
            "target": save(tmp_path, "t.png", picture(0))}
    path = write_jsonl(tmp_path / "cases.jsonl", [good])
    with path.open("a") as f:
        f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    result = runner.invoke(app, ["eval", str(path), "--steps", "2"])
    assert result.exit_code == 2
    assert f"error: cases.jsonl {message}" in result.stderr


def test_dataset_or_suite_but_not_both(app, paired):
    assert runner.invoke(app, ["eval"]).exit_code == 2
    result = runner.invoke(app, ["eval", str(paired), "--suite", "shapes"])
    assert result.exit_code == 2 and "either a DATASET file or --suite" in result.stderr
    result = runner.invoke(app, ["eval", "--suite", "mountains"])
    assert result.exit_code == 2 and "--suite must be one of shapes" in result.stderr


def test_the_shapes_suite_with_a_limit(app, tmp_path):
    doc = tmp_path / "r.json"
    result = runner.invoke(app, ["eval", "--suite", "shapes", "--suite-size", "1", "--limit",
                                 "2", "--steps", "1", "--no-preserve", "--json", str(doc)])
    assert result.exit_code == 0, result.output
    report = json.loads(doc.read_text())
    assert [c["id"] for c in report["cases"]] == ["train-00000", "train-00001"]
    assert [c["category"] for c in report["cases"]] == ["recolor", "remove"]
    assert report["settings"]["preserve"] is False
    assert report["settings"]["dataset"] == "suite:shapes:1"
    assert report["settings"]["speed"] == "quality" and "speed quality" in result.stdout
    result = runner.invoke(app, ["eval", "--suite", "shapes", "--limit", "1", "--speed", "turbo"])
    assert result.exit_code == 2 and "--speed" in result.stderr


def test_bad_paths_are_refused_before_the_model_loads(tmp_path, paired):
    import typer

    from openkontext.eval.cli import register

    loads = []
    app = typer.Typer(add_completion=False)
    register(app, load=lambda *args: loads.append(args))
    app.callback()(lambda: None)  # keeps `eval` a named sub-command
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["eval", str(tmp_path / "gone.jsonl")], "gone.jsonl does not exist"),
        (["eval", str(tmp_path)], "is a directory, not a file"),
        (["eval", str(paired), "--json", "/sys/x.json"], "cannot write /sys/x.json"),
        (["eval", str(paired), "--json", str(tmp_path)], "is a directory"),
        (["eval", str(paired), "--save-outputs", str(afile / "out")], "is a file"),
    ]
    for args, words in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr and "Traceback" not in result.output, result.stderr
    assert loads == []
