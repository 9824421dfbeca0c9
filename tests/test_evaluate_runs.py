"""benchmarks/mini/evaluate_runs.py: the floor verdict, and a whole run of the script on a small
random-weight export and a run folder it exports itself."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from openkontext.eval.report import ALL_EDITS, GENERATION
from openkontext.model import get_preset
from openkontext.train.autoencoder import AETrainConfig, train_autoencoder
from openkontext.train.transformer import FlowTrainConfig, train_transformer
from openkontext.world.edits import KINDS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "evaluate_runs.py"


def _module():
    spec = importlib.util.spec_from_file_location("evaluate_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(success: float, psnr: float, identity: float) -> dict:
    stats = {"psnr_median": psnr, "success_rate": success, "identity_psnr_median": identity,
             "preservation_median": 30.0}
    cats = {kind: dict(stats) for kind in KINDS}
    cats[ALL_EDITS] = dict(stats)
    cats[GENERATION] = {"psnr_median": 20.0, "success_rate": 0.25}
    return {"categories": cats, "splits": {"train": {"psnr_median": psnr}}}


def test_the_floor_needs_every_floor_kind_and_the_gain_over_identity():
    column = _module().column
    assert column(_summary(0.70, 28.0, 20.0))["floor met"] == "yes"
    assert column(_summary(0.70, 27.9, 20.0))["floor met"] == "no"  # +7.9 dB
    short = _summary(0.70, 28.0, 20.0)
    short["categories"]["remove"]["success_rate"] = 0.65
    cells = column(short)
    assert cells["floor met"] == "no" and cells["remove"] == "65%"
    assert cells["over identity dB"] == "+8.0" and cells[GENERATION] == "20.0 dB 25%"
    # kinds outside the floor do not decide it
    other = _summary(0.70, 28.0, 20.0)
    other["categories"]["swap"]["success_rate"] = 0.0
    assert column(other)["floor met"] == "yes"


def test_failed_edits_that_left_the_picture_as_it_was_are_counted():
    def case(psnr, identity, success, chain=False):
        turn = {"psnr": psnr, "identity_psnr": identity, "success": success, "preservation": 40.0}
        return {"category": "recolor", "chain": chain, "turns": [turn]}

    cases = [case(18.3, 18.5, False), case(20.0, 23.0, False), case(30.0, 29.8, True),
             case(18.0, 18.0, False, chain=True), case(20.0, None, False)]  # chain, generation
    assert _module().left_as_input(cases) == (1, 2)
    assert _module().column(_summary(0.7, 28.0, 20.0), cases)["failed, left as input"] == "1/2"


def test_a_kinds_failures_split_into_left_as_input_part_wrong_and_rest_damaged():
    def case(category, psnr, identity, preservation, chain=False):
        turn = {"psnr": psnr, "identity_psnr": identity, "preservation": preservation,
                "success": psnr >= 25.0}
        return {"category": category, "chain": chain, "turns": [turn]}

    cases = [
        case("recolor", 21.0, 21.2, 45.0),  # within 0.5 dB of the input
        case("recolor", 22.0, 20.0, 36.0),  # kept the rest, got the object wrong
        case("recolor", 22.0, 20.0, 24.0),  # damaged the rest too
        case("recolor", 21.0, 20.0, 29.9),
        case("recolor", 31.0, 20.0, 40.0),  # a success is no failure
        case("remove", 18.0, 18.1, 50.0),  # another kind
        case("recolor", 18.0, 18.0, 20.0, chain=True),  # chains are left out
    ]
    module = _module()
    assert module.failures(cases, "recolor") == (1, 1, 2)
    assert module.failures(cases, "remove") == (1, 0, 0)
    assert module.failures(cases, "invert") == (0, 0, 0)
    cells = module.column(_summary(0.7, 28.0, 20.0), cases)
    assert cells["recolor failed: input/part/rest"] == "1/1/2"
    assert cells["remove failed: input/part/rest"] == "1/0/0"


def test_the_plus_columns_split_ratios_generations_and_references_by_words():
    def case(case_id, category, success, layout=None, turns=1):
        turn = {"success": success, "layout": layout}
        return {"id": case_id, "category": category, "chain": turns > 1,
                "turns": [dict(turn, success=False)] * (turns - 1) + [turn]}

    cases = [case("wide-00000", "recolor", True, True), case("wide-00001", "add", False, False),
             case("wide-generation-00000", "generation", True, True),
             case("wide-generation-00001", "generation", False, True),
             case("wide-chain-00000", "chain", True, False, turns=5),
             case("reference-train-00000", "ref_object", True, True),
             case("reference-train-00001", "ref_object", False, False),
             case("reference-heldout-00000", "ref_colour", True, None)]
    cells = _module().plus_column(cases)
    assert cells["non-square recolor"] == "100% / 100%" and cells["non-square add"] == "0% / 0%"
    assert cells["non-square background"] == "-" and cells["non-square 4 kinds"] == "50% / 50%"
    assert cells["generation 16:9"] == "100% / 100%" and cells["generation 9:16"] == "0% / 100%"
    assert cells["non-square chain, turn 5"] == "100% / 0%"
    assert cells["ref_object, train words"] == "50% / 50%"
    assert cells["ref_colour, heldout words"] == "100% / n/a"


def test_the_script_scores_an_export_and_a_run_folder_side_by_side(tmp_path):
    from openkontext.model import LoadedModel
    from openkontext.weights import save_mini

    model = LoadedModel.random("mini", seed=3)
    save_mini(tmp_path / "rand", model.preset, model.flux, model.ae, model.text,
              info={"ae_steps": 1, "transformer_steps": 1})
    preset = get_preset("mini")
    run = tmp_path / "run"
    ae = train_autoencoder(preset.ae, run, AETrainConfig(steps=1, batch_size=2))
    train_transformer(preset, ae, run, FlowTrainConfig(steps=1, edit_batch=2,
                                                       generation_batch=1, eval_every=100))
    command = [sys.executable, str(SCRIPT), str(tmp_path / "rand"), str(run), "--out",
               str(tmp_path / "out"), "--seeds", "0", "--suite-size", "1", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rand", "s0", "run", "s0"]
    info = json.loads((tmp_path / "out" / "run" / "mini.json").read_text())["info"]
    assert info["transformer_steps"] == 1  # the run folder was exported
    assert not (tmp_path / "out" / "rand" / "mini.json").exists()  # the export used as it is
    assert any(line.split()[:2] == ["floor", "met"] and line.split()[-1] == "no"
               for line in lines)
    split = next(line.split() for line in lines if line.startswith("recolor failed:"))
    assert len(split) == 5 and all(len(cell.split("/")) == 3 for cell in split[3:])
    report = json.loads((tmp_path / "out" / "rand" / "suite_seed0.json").read_text())
    assert report["settings"]["dataset"] == "suite:shapes:1"
    assert report["summary"]["categories"][ALL_EDITS]["count"] == 2 * len(KINDS)
    # without paste-back, beside the report with it
    no_paste = command[:2] + [str(tmp_path / "rand")] + command[4:] + ["--no-preserve"]
    result = subprocess.run(no_paste, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    raw = json.loads((tmp_path / "out" / "rand" / "suite_seed0_nopreserve.json").read_text())
    assert raw["settings"]["preserve"] is False and report["settings"]["preserve"] is True
    # with fitted positions, whatever the model was trained with: on the square suite they
    # are the token counts, so the figures are the same (test_pipeline checks they differ on
    # other canvases)
    result = subprocess.run(command[:2] + [str(tmp_path / "rand")] + command[4:]
                            + ["--fit-positions"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fitted = json.loads((tmp_path / "out" / "rand" / "suite_seed0_fit.json").read_text())
    assert [c["turns"] for c in fitted["cases"]] == [c["turns"] for c in report["cases"]]
    # two sources of one folder name would write over each other's reports
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rand").mkdir()
    command[2:4] = [str(tmp_path / "rand"), str(tmp_path / "b" / "rand")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "different folder names" in result.stderr


@pytest.mark.parametrize("bad", ["missing", "empty"])
def test_a_source_that_is_neither_a_run_nor_an_export_is_refused(tmp_path, bad):
    if bad == "empty":
        (tmp_path / bad).mkdir()
    command = [sys.executable, str(SCRIPT), str(tmp_path / bad), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "neither a mini export" in result.stderr
    assert str(tmp_path / bad) in result.stderr


def test_a_run_without_its_autoencoder_or_a_zero_suite_is_refused_in_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "flux.pt").write_bytes(b"")
    command = [sys.executable, str(SCRIPT), str(tmp_path / "run"), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot export {tmp_path / 'run'}" in result.stderr
    result = subprocess.run(command + ["--suite-size", "0"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and "--suite-size must be at least 1" in result.stderr
