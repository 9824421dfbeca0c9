import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from openkontext.files import PathError, check_output_folder
from openkontext.world.cli import app
from openkontext.world.dataset import CATEGORIES
from openkontext.world.render import change_mask, render_target
from openkontext.world.scene import Scene, Target

runner = CliRunner()
SCENE = {"background": "yellow",
         "objects": [{"shape": "circle", "color": "red", "cell": "top left", "size": "medium"}]}


def _load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_render_writes_a_png_of_the_right_size(tmp_path):
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps({**SCENE, "filter": "invert"}))
    out = tmp_path / "out" / "scene.png"
    result = runner.invoke(app, ["render", str(scene_file), "--size", "40", "-o", str(out)])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.size == (40, 40) and image.format == "PNG"
    expected = render_target(Target(Scene.from_dict(SCENE), "invert"), 40)
    assert np.array_equal(np.asarray(image), expected)
    wide = tmp_path / "wide.png"
    result = runner.invoke(app, ["render", str(scene_file), "--size", "48", "--height", "24",
                                 "-o", str(wide)])
    assert result.exit_code == 0 and Image.open(wide).size == (48, 24)


def test_render_refuses_bad_scene_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SCENE, "background": "red"}))  # the circle is red too
    result = runner.invoke(app, ["render", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "colour of the background" in result.output + result.stderr
    assert not (tmp_path / "x.png").exists()
    missing = runner.invoke(app, ["render", str(tmp_path / "nope.json"), "-o", "x.png"])
    assert missing.exit_code == 2 and "nope.json does not exist" in missing.output
    folder = runner.invoke(app, ["render", str(tmp_path), "-o", "x.png"])
    assert folder.exit_code == 2 and f"{tmp_path} is a directory, not a file" in folder.output
    bad.write_text("{not json")
    result = runner.invoke(app, ["render", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "not valid JSON" in result.output + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_render_refuses_bad_outputs_and_sizes(tmp_path):
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps(SCENE))
    (tmp_path / "notes.txt").write_text("hi")
    cases = [
        (["-o", str(tmp_path)], f"{tmp_path} is a directory; give a file name such as"),
        (["-o", str(tmp_path / "notes.txt" / "x.png")], "notes.txt is a file, not a directory"),
        (["-o", str(tmp_path / "x.jpg")], "the name must end in .png"),
        (["-o", str(tmp_path / "x.png"), "--size", "0"], "--size and --height must be positive"),
    ]
    try:
        check_output_folder("/sys")  # sysfs refuses new files, even root's
    except PathError:
        cases.append((["-o", "/sys/x.png"], "cannot write /sys/x.png"))
    for args, message in cases:
        result = runner.invoke(app, ["render", str(scene_file), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "scene.json"]
    bare = runner.invoke(app, ["render", str(scene_file), "-o", str(tmp_path / "bare")])
    assert bare.exit_code == 0 and Image.open(tmp_path / "bare.png").format == "PNG"


def test_sample_writes_a_valid_jsonl_dataset(tmp_path):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["sample", "--out", str(out), "--count", "24", "--seed", "3",
                                 "--size", "24", "--split", "heldout"])
    assert result.exit_code == 0, result.output
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert len(cases) == 24 and len({c["id"] for c in cases}) == 24
    assert {c["category"] for c in cases} == set(CATEGORIES)
    for c in cases:
        assert c["phrasing_split"] == "heldout" and c["instruction"]
        target = _load(out / c["target"])
        assert target.shape == (24, 24, 3)
        assert np.array_equal(target, render_target(Target.from_dict(c["target_scene"]), 24))
        if c["category"] == "generation":
            assert c["input"] is None
            continue
        source = _load(out / c["input"])
        mask = np.asarray(Image.open(out / c["mask"])) > 0
        assert np.array_equal(mask, change_mask(source, target)) and mask.any()
        assert Scene.from_dict(c["input_scene"]) != Target.from_dict(c["target_scene"]).scene \
            or "filter" in c["target_scene"]
    again = tmp_path / "again"
    runner.invoke(app, ["sample", "--out", str(again), "--count", "24", "--seed", "3",
                        "--size", "24", "--split", "heldout"])
    assert (again / "cases.jsonl").read_text() == (out / "cases.jsonl").read_text()


def test_sample_kinds_and_chains(tmp_path):
    out = tmp_path / "moves"
    result = runner.invoke(app, ["sample", "--out", str(out), "--count", "4", "--size", "16",
                                 "--kinds", "move,night", "--kinds", "generation"])
    assert result.exit_code == 0, result.output
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [c["category"] for c in cases] == ["move", "night", "generation", "move"]

    out = tmp_path / "chains"
    result = runner.invoke(app, ["sample", "--out", str(out), "--count", "3", "--size", "16",
                                 "--chains", "--max-turns", "4"])
    assert result.exit_code == 0, result.output
    for line in (out / "cases.jsonl").read_text().splitlines():
        c = json.loads(line)
        assert c["category"] == "chain" and 2 <= len(c["chain"]) <= 4
        previous = _load(out / c["input"])
        assert np.array_equal(previous, render_target(Target.from_dict(c["input_scene"]), 16))
        for turn in c["chain"]:
            image = _load(out / turn["target"])
            assert np.array_equal(image, render_target(Target.from_dict(turn["target_scene"]), 16))
            mask = np.asarray(Image.open(out / turn["mask"])) > 0
            assert np.array_equal(mask, change_mask(previous, image))
            previous = image

    bad = runner.invoke(app, ["sample", "--out", str(tmp_path / "x"), "--kinds", "rotate"])
    assert bad.exit_code == 2 and "unknown category 'rotate'" in bad.output + bad.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    bad = runner.invoke(app, ["sample", "--out", str(notes), "--count", "1"])
    assert bad.exit_code == 2 and f"{notes} is a file, not a directory" in bad.output


def test_sample_help_lists_the_dataset_categories():
    """world/cli.py writes CATEGORIES out (world.dataset imports torch); they must agree."""
    from openkontext.world import cli

    assert cli.CATEGORIES == CATEGORIES
