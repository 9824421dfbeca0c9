"""Reading evaluation datasets: image paths, scenes, chains, world datasets and bad lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openkontext.eval.dataset import DatasetError, load_cases
from openkontext.world.dataset import write_dataset
from openkontext.world.edits import KINDS
from openkontext.world.render import render_target

from .eval_helpers import picture, save, write_jsonl

SCENE = {"background": "blue", "objects": [
    {"shape": "square", "color": "white", "cell": "top left", "size": "small"}]}
MOVED = {"background": "blue", "objects": [
    {"shape": "square", "color": "white", "cell": "bottom right", "size": "small"}]}


def test_a_paired_dataset_of_image_paths(paired):
    cases = {c.id: c for c in load_cases(paired)}
    assert [c.category for c in cases.values()] == [
        "noop", "brighten", "brighten", "edit", "generation", "chain"]
    assert cases["same"].phrasing_split == "train" and cases["masked"].phrasing_split is None
    assert cases["wide"].input.size == (64, 48)
    assert cases["gen"].input is None and cases["gen"].turns[0].target.size == (64, 64)
    mask = cases["masked"].change_region(1)
    assert mask.shape == (64, 64) and mask[:, :32].all() and not mask[:, 32:].any()
    assert cases["same"].change_region(1) is None  # files without a mask: unknown
    story = cases["story"]
    assert story.is_chain and [t.instruction for t in story.turns] == ["leave it be",
                                                                       "brighten it"]
    assert story.start(2) == story.turns[0].target
    np.testing.assert_array_equal(story.input.load(), picture(1))


def test_scenes_render_at_the_native_or_the_given_size(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "a", "instruction": "move the square to the bottom right", "input": SCENE,
         "target": MOVED},
        {"id": "b", "instruction": "x", "input": SCENE, "target": dict(MOVED, filter="invert"),
         "size": [48, 32]},
    ])
    a, b = load_cases(path, native_size=64)
    assert a.input.load().shape == (64, 64, 3) and b.turns[0].target.load().shape == (32, 48, 3)
    # the change mask of two scenes: where their renders differ, here two small squares
    region = a.change_region(1)
    assert region.shape == (64, 64) and 0 < region.mean() < 0.2
    np.testing.assert_array_equal(region, np.any(a.input.load() != a.turns[0].target.load(), -1))
    assert b.turns[0].target.load()[0, 0].tolist() == [215, 175, 35]  # inverted blue


def test_a_world_dataset_loads_as_written(tmp_path):
    edits = load_cases(write_dataset(tmp_path / "e", count=len(KINDS) + 1, size=32))
    assert [c.category for c in edits] == [*KINDS, "generation"]
    assert all(c.phrasing_split == "train" for c in edits)
    assert all(c.turns[0].mask is not None for c in edits[:-1])
    chains = load_cases(write_dataset(tmp_path / "c", count=2, size=32, chains=True,
                                      min_turns=3, max_turns=3), native_size=32)
    assert [len(c.turns) for c in chains] == [3, 3] and chains[0].turns[0].category in KINDS
    # Targets are the files, with the scenes they show attached for the layout check.
    for case in [*edits, *chains]:
        for turn in case.turns:
            assert turn.target.path is not None and turn.target.scene is not None
    assert (edits[0].turns[0].target.load() == render_target(
        edits[0].turns[0].target.scene, 32)).all()


def test_blank_lines_are_skipped_and_limit_takes_the_first_cases(paired):
    path = paired.with_name("blank.jsonl")  # beside the images its paths refer to
    path.write_text("\n" + "\n\n".join(paired.read_text().splitlines()) + "\n\n")
    assert [c.id for c in load_cases(path)] == [c.id for c in load_cases(paired)]
    assert load_cases(path)[1].line == 4
    assert [c.id for c in load_cases(paired, limit=2)] == ["same", "offset"]


def good(folder) -> dict:
    return {"id": "ok", "instruction": "brighten", "input": save(folder, "in.png", picture(0)),
            "target": save(folder, "out.png", picture(1))}


BAD_LINES = [
    (lambda d: {k: v for k, v in d.items() if k != "instruction"}, "field 'instruction': missing"),
    (lambda d: {k: v for k, v in d.items() if k != "input"}, "field 'input': missing"),
    (lambda d: dict(d, target="images/nope.png"), "field 'target': no such file"),
    (lambda d: dict(d, instruction=""), "field 'instruction': must be a non-empty string"),
    (lambda d: dict(d, id="../up"), "field 'id': must be letters"),
    (lambda d: dict(d, id="first"), "field 'id': 'first' is already used on line 1"),
    (lambda d: dict(d, target={"background": "mauve"}), "field 'target': bad scene"),
    (lambda d: dict(d, target_scene={"objects": []}), "field 'target_scene': bad scene"),
    (lambda d: dict(d, size=0), "field 'size': must be a positive int"),
    (lambda d: dict(d, mask=save_mask), "field 'mask': is 8x8 but the image it masks is 64x64"),
    (lambda d: dict(d, chain=[]), "field 'chain': must be a non-empty list"),
    (lambda d: dict(d, chain=[{"instruction": "x"}]), "field 'chain[1].target': missing"),
    (lambda d: "just a string", "a case must be a JSON object"),
    (lambda d: dict(d, references=[]), "field 'references': must be a list of 1 to 3"),
    (lambda d: dict(d, references=["images/in.png"] * 4), "must be a list of 1 to 3 pictures"),
    (lambda d: dict(d, references=["images/gone.png"]), "field 'references[0]': no such file"),
    (lambda d: dict(d, input=None, references=["images/in.png"]),
     "field 'references': references need an input image"),
]
save_mask = "images/small_mask.png"


@pytest.mark.parametrize(("change", "message"), BAD_LINES)
def test_a_bad_line_names_its_line_and_field(tmp_path, change, message):
    save(tmp_path, "small_mask.png", np.zeros((8, 8, 3), dtype=np.uint8))
    first = dict(good(tmp_path), id="first")
    path = write_jsonl(tmp_path / "bad.jsonl", [first, change(good(tmp_path))])
    with pytest.raises(DatasetError) as info:
        load_cases(path)
    assert str(info.value).startswith("bad.jsonl line 2")
    assert message in str(info.value)


def test_a_line_that_is_not_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good(tmp_path)) + "\n{\"id\": \"x\",\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl line 2: not valid JSON"):
        load_cases(path)


def test_an_empty_or_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="holds no cases"):
        load_cases(tmp_path / "empty.jsonl")
    with pytest.raises(DatasetError, match="cannot read"):
        load_cases(tmp_path / "missing.jsonl")
