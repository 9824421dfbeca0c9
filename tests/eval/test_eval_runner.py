"""`evaluate` and `run_batch` with a random mini model (its pictures are noise, so the model's
own figures are checked against a recomputation from the saved outputs, and the identity
baseline against the values the hand-written dataset was built to have)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from openkontext.eval import PSNR_CAP, evaluate, load_cases, psnr, run_batch
from openkontext.pipeline import Settings
from openkontext.resolution import resolve_size
from openkontext.world.dataset import write_dataset

from .eval_helpers import picture

TEN = 20 * math.log10(255 / 10)


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def evaluated(kontext, paired, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    return evaluate(kontext, paired, steps=2, seed=3, save_outputs=out), out


def test_every_case_and_turn_is_scored(evaluated):
    report, _ = evaluated
    assert [c.id for c in report.cases] == ["same", "offset", "masked", "wide", "gen", "story"]
    assert [len(c.turns) for c in report.cases] == [1, 1, 1, 1, 1, 2]
    assert report.runs == 7
    assert report.settings == {"model": "mini", "steps": 2, "guidance": 1.0, "seed": 3,
                               "preserve": True, "batch_size": None, "speed": "quality"}


def test_identity_baseline_values(evaluated):
    report, _ = evaluated
    s = {c.id: c.turns for c in report.cases}
    assert s["same"][0].identity_psnr == PSNR_CAP and s["same"][0].identity_success
    assert s["offset"][0].identity_psnr == pytest.approx(TEN)
    assert s["offset"][0].identity_success  # 28.1 dB clears the 25 dB bar
    assert s["masked"][0].identity_psnr == pytest.approx(10 * math.log10(255**2 / 450))
    assert s["masked"][0].identity_preservation == PSNR_CAP
    assert s["same"][0].preservation is None  # no mask, not scenes: unknown
    assert s["gen"][0].identity_psnr is None and s["gen"][0].identity_success is None
    # the chain: the identity baseline keeps returning the original input
    assert [t.identity_psnr for t in s["story"]] == [PSNR_CAP, pytest.approx(TEN)]


def test_model_figures_match_the_saved_outputs(evaluated, paired):
    report, out = evaluated
    s = {c.id: c.turns for c in report.cases}
    images = paired.parent / "images"
    a = picture(1)
    masked = read(out / "masked.png")
    np.testing.assert_array_equal(read(out / "masked_target.png"), read(images / "a_left.png"))
    assert s["masked"][0].psnr == pytest.approx(psnr(masked, read(images / "a_left.png")))
    right = np.zeros((64, 64), dtype=bool)
    right[:, 32:] = True
    assert s["masked"][0].preservation == pytest.approx(psnr(masked, a, right))
    turn2 = read(out / "story_turn2.png")
    assert s["story"][1].psnr == pytest.approx(psnr(turn2, read(images / "a_plus10.png")))
    assert [t.success for t in s["story"]] == [t.psnr >= 25 for t in s["story"]]


def test_an_output_of_another_size_is_resized_before_scoring(evaluated):
    report, out = evaluated
    wide = next(c for c in report.cases if c.id == "wide").turns[0]
    assert wide.resized and report.resized == 1
    output, target = Image.open(out / "wide.png"), Image.open(out / "wide_target.png")
    assert (output.size, target.size) == ((80, 48), (64, 48))
    expected = np.asarray(output.resize((64, 48), Image.Resampling.LANCZOS))
    assert wide.psnr == pytest.approx(psnr(expected, np.asarray(target)))


def test_saved_files_and_their_sizes(evaluated):
    _, out = evaluated
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}{s}.png" for n in ("same", "offset", "masked", "wide", "gen",
                                                   "story_turn1", "story_turn2")
                           for s in ("", "_target"))
    assert Image.open(out / "gen.png").size == (64, 64)
    assert Image.open(out / "story_turn2.png").size == (64, 64)
    assert Image.open(out / "story_turn1.png").info.get("Seed") == "3"


def test_groups(evaluated):
    report, _ = evaluated
    cats = report.by_category()
    assert {k: v.count for k, v in cats.items()} == {
        "noop": 1, "brighten": 2, "edit": 1, "generation": 1, "all edits": 4}
    assert cats["generation"].identity_psnr_median is None
    assert {k: v.count for k, v in report.by_split().items()} == {"heldout": 1, "train": 1}
    assert {k: v.count for k, v in report.by_turn().items()} == {1: 1, 2: 1}


def test_the_json_report_returns_what_it_wrote(evaluated, tmp_path):
    report, _ = evaluated
    data = report.write_json(tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(data))
    assert data["summary"]["categories"]["all edits"]["count"] == 4
    assert len(data["cases"]) == len(report.cases) == 6


def test_run_batch_matches_kontext_run(kontext):
    a, b = picture(5), picture(6)
    batch = run_batch(kontext, ["make it red", "make it blue"], [a, b], seed=7, steps=1,
                      guidance=1.0, preserve=False)
    one = kontext.run("make it blue", [Image.fromarray(b)],
                      Settings(seed=7, steps=1, preserve=False)).images[0]
    diff = np.abs(batch[1].astype(int) - np.asarray(one).astype(int))
    assert batch[1].shape == (64, 64, 3) and diff.max() <= 2


def test_the_score_is_the_models_own_unless_a_speed_is_asked(kontext, paired):
    """Every step is computed by default (the step cache's shortcuts are a serving trade-off);
    a speed that reuses every step after the first changes the pictures, so it reaches the
    pipeline; an unknown speed is refused before anything runs."""
    from openkontext.pipeline import Kontext

    shortcut = Kontext(kontext.model, speeds={"quality": None, "fast": math.inf})
    cases = load_cases(paired, limit=1)
    exact = evaluate(kontext, cases, steps=4, seed=2, preserve=False)
    also = evaluate(shortcut, cases, steps=4, seed=2, preserve=False, speed="quality")
    cached = evaluate(shortcut, cases, steps=4, seed=2, preserve=False, speed="fast")
    assert cached.settings["speed"] == "fast"
    psnrs = [r.cases[0].turns[0].psnr for r in (exact, also, cached)]
    assert psnrs[0] == psnrs[1] != psnrs[2]
    with pytest.raises(ValueError, match="unknown speed 'turbo'"):
        evaluate(kontext, cases, speed="turbo")


def test_a_world_dataset_with_scene_masks_and_chains(kontext, tmp_path):
    cases = load_cases(write_dataset(tmp_path / "e", count=2, seed=1, size=64,
                                     categories=["move", "night"]))
    cases += load_cases(write_dataset(tmp_path / "c", count=1, seed=1, size=64, chains=True,
                                      min_turns=3, max_turns=3, categories=["recolor"]))
    done = []
    report = evaluate(kontext, cases, steps=1, on_progress=lambda i, n: done.append((i, n)))
    move, night, chain = (c.turns for c in report.cases)
    assert move[0].preservation is not None and move[0].identity_preservation == PSNR_CAP
    assert night[0].preservation is None  # night changes every pixel: nothing to preserve
    assert len(chain) == 3 and chain[0].identity_preservation == PSNR_CAP
    # later turns: the original input against the previous target, outside this turn's mask
    c = cases[2]
    for k in (2, 3):
        expected = psnr(c.input.load(), c.start(k).load(), ~c.change_region(k))
        assert chain[k - 1].identity_preservation == pytest.approx(expected)
    assert done == [(1, 3), (2, 3), (3, 3)]


def test_bad_settings(kontext, paired):
    with pytest.raises(ValueError, match="steps must be 1..50"):
        evaluate(kontext, paired, steps=0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        evaluate(kontext, paired, batch_size=0)
    twice = load_cases(paired, limit=1) * 2
    with pytest.raises(ValueError, match="ids must be unique"):
        evaluate(kontext, twice, save_outputs=paired.parent / "never")


def test_references_reach_the_model_and_generations_take_their_target_ratio(kontext, tmp_path):
    refs = load_cases(write_dataset(tmp_path / "r", count=3, seed=2, size=64,
                                    categories=["ref_object", "ref_colour", "ref_background"]))
    assert [len(c.references) for c in refs] and all(c.references for c in refs)
    case = refs[0]
    inputs = [case.input.load()] + [r.load() for r in case.references]
    with_refs = run_batch(kontext, [case.turns[0].instruction], [inputs], seed=3, steps=1,
                          guidance=1.0, preserve=False)[0]
    alone = kontext.run(case.turns[0].instruction, [Image.fromarray(a) for a in inputs],
                        Settings(seed=3, steps=1, preserve=False)).images[0]
    without = run_batch(kontext, [case.turns[0].instruction], [inputs[0]], seed=3, steps=1,
                        guidance=1.0, preserve=False)[0]
    assert np.abs(with_refs.astype(int) - np.asarray(alone).astype(int)).max() <= 2
    assert np.abs(with_refs.astype(int) - without.astype(int)).max() > 2  # they were read
    gens = load_cases(write_dataset(tmp_path / "g", count=2, seed=2, size=[(88, 48), (48, 88)],
                                    categories=["generation"]))
    report = evaluate(kontext, gens, steps=1, save_outputs=tmp_path / "out")
    assert len(report.cases) == 2
    preset = kontext.model.preset  # "mini": its 16:9 is 96x48
    for gen, size in zip(gens, ((96, 48), (48, 96)), strict=True):
        assert resolve_size(preset, gen.turns[0].target.size) == size
        assert Image.open(tmp_path / "out" / f"{gen.id}.png").size == size
    assert len(evaluate(kontext, refs, steps=1).cases) == 3


def test_the_printed_report_names_its_speed_and_says_when_none_was_recorded(evaluated):
    import dataclasses

    from rich.console import Console

    from openkontext.eval.report import print_report

    report, _ = evaluated

    def header(settings: dict) -> str:
        console = Console(record=True, width=200)
        print_report(dataclasses.replace(report, settings=settings), console)
        return console.export_text().splitlines()[0]

    assert header(report.settings).endswith("speed quality")
    older = {k: v for k, v in report.settings.items() if k != "speed"}
    assert header(older).endswith("speed not recorded")
