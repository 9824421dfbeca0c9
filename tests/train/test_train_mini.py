"""The mini training stages run, checkpoint, resume and export (a few steps each)."""

import json
import random
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from openkontext.cli import app
from openkontext.model import get_preset
from openkontext.train.autoencoder import AETrainConfig, train_autoencoder
from openkontext.train.transformer import FlowTrainConfig, train_transformer
from openkontext.weights import load_model
from openkontext.world.edits import KINDS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    preset = get_preset("mini")
    cfg = AETrainConfig(steps=2, batch_size=2, checkpoint_every=1)
    ae = train_autoencoder(preset.ae, out, cfg)
    flow_cfg = FlowTrainConfig(steps=2, edit_batch=2, generation_batch=1, checkpoint_every=1,
                               eval_every=2, eval_cases=2, eval_steps=1)
    stepper = train_transformer(preset, ae, out, flow_cfg)
    return out, ae, stepper


def test_autoencoder_stage_checkpoints_and_calibrates(run):
    out, ae, _ = run
    state = torch.load(out / "ae.pt", weights_only=False)
    assert state["done"] and state["step"] == 2
    assert state["params"]["scale_factor"] == ae.params.scale_factor > 0
    log = [json.loads(line) for line in (out / "ae_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and "psnr" in log[-1]
    # a finished stage is not trained again
    again = train_autoencoder(get_preset("mini").ae, out, AETrainConfig(steps=2))
    assert again.params == ae.params


def test_transformer_stage_logs_bands_evaluates_and_resumes(run):
    out, ae, stepper = run
    assert stepper.step == 2
    records = [json.loads(line) for line in (out / "flux_log.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in records if "eval" in r]
    assert evals and {"psnr_median", "identity_median", "success"} <= set(evals[0])
    cfg = FlowTrainConfig(steps=3, edit_batch=2, generation_batch=0, checkpoint_every=1,
                          eval_every=100)
    resumed = train_transformer(get_preset("mini"), ae, out, cfg)
    assert resumed.step == 3
    # a step reports its edit loss per kind; with one kind drawn, that is the edit loss itself
    from openkontext.train.transformer import Stepper, step_streams

    one = Stepper(get_preset("mini"), ae, FlowTrainConfig(
        edit_batch=3, generation_batch=0, kind_weights=dict.fromkeys(KINDS, 0) | {"swap": 1}))
    stats = one.train_step(*step_streams(0, 0))
    assert list(stats["kinds"]) == ["swap"]
    assert stats["kinds"]["swap"] == pytest.approx(stats["loss"], abs=1e-4)


def test_export_loads_as_weights(run, tmp_path):
    out, _, _ = run
    result = CliRunner().invoke(app, ["train", "export", "--run", str(out), "--out",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path)
    assert model.preset.name == "mini"
    info = json.loads((tmp_path / "mini.json").read_text())["info"]
    assert info["ae_steps"] == 2 and info["transformer_steps"] >= 2


def test_a_mini_fine_run_trains_exports_and_edits_on_its_finer_grid(tmp_path):
    """mini-fine's 4x autoencoder: 16 x 16 latents, 8 x 8 tokens per 64 px picture, through
    training, export, loading and an edit."""
    import io

    from openkontext.pipeline import Kontext
    from openkontext.world.render import render, to_pil
    from openkontext.world.scene import random_scene

    preset = get_preset("mini-fine")
    ae = train_autoencoder(preset.ae, tmp_path, AETrainConfig(steps=1, batch_size=2))
    assert ae.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 16, 16)
    cfg = FlowTrainConfig(steps=1, edit_batch=2, generation_batch=1, eval_every=100)
    train_transformer(preset, ae, tmp_path, cfg)
    result = CliRunner().invoke(app, ["train", "export", "--run", str(tmp_path), "--out",
                                      str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "export")
    assert model.preset.name == "mini-fine" and model.preset.latent_multiple == 8
    buf = io.BytesIO()
    to_pil(render(random_scene(random.Random(1)), 64)).save(buf, "PNG")
    edited = Kontext(model).edit(buf.getvalue(), "make it night", seed=1, steps=2)
    assert edited.images[0].size == (64, 64)
    # continuing from the export trains its preset without being told
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "more"),
                                      "--init-from", str(tmp_path / "export"), "--steps", "2",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "more" / "flux.pt", weights_only=False)
    assert state["preset"] == "mini-fine" and state["step"] == 2
    # a preset whose autoencoder has another shape cannot continue it
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "other"),
                                      "--init-from", str(tmp_path / "export"), "--preset", "mini"])
    assert result.exit_code == 2
    assert "holds a 'mini-fine' model, whose autoencoder does not fit 'mini'" in unboxed(
        result.output)
    assert not (tmp_path / "other" / "flux.pt").exists()
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "other"),
                                      "--init-from", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "holds no mini export (no mini.json)" in unboxed(
        result.output)


def test_training_continues_from_an_export_on_a_fresh_machine(run, tmp_path):
    out, _, _ = run
    export_dir, fresh = tmp_path / "export", tmp_path / "fresh"
    assert CliRunner().invoke(app, ["train", "export", "--run", str(out), "--out",
                                    str(export_dir)]).exit_code == 0
    from openkontext.train.cli import seed_run_from_export

    exported = load_model(export_dir)
    seed_run_from_export(export_dir, fresh, exported.preset)
    ae = train_autoencoder(exported.ae.params, fresh, AETrainConfig(steps=1))  # finished: loads
    assert torch.equal(ae.decoder.conv_out.weight, exported.ae.decoder.conv_out.weight)
    step = torch.load(fresh / "flux.pt", weights_only=False)["step"]
    cfg = FlowTrainConfig(steps=step + 1, edit_batch=2, generation_batch=0, eval_every=100)
    stepper = train_transformer(exported.preset, ae, fresh, cfg)
    assert stepper.step == step + 1
    with pytest.raises(Exception, match="already holds a run"):
        seed_run_from_export(export_dir, fresh, exported.preset)
    # the next export names where the run was seeded from: one entry per --init-from
    assert CliRunner().invoke(app, ["train", "export", "--run", str(fresh), "--out",
                                    str(tmp_path / "again")]).exit_code == 0
    info = json.loads((tmp_path / "again" / "mini.json").read_text())["info"]
    seeded = json.loads((export_dir / "mini.json").read_text())["info"]
    assert info["transformer_steps"] == step + 1
    assert info["init_from"] == [{"folder": str(export_dir), "ae_steps": seeded["ae_steps"],
                                  "transformer_steps": step}]


def test_seed_history_flattens_the_nested_form_of_older_exports():
    from openkontext.train.cli import seed_history

    nested = {"folder": "b", "transformer_steps": 20, "restarted": [],
              "init_from": {"folder": "a", "transformer_steps": 10, "restarted": ["txt_in.weight"]}}
    assert seed_history(nested) == [
        {"folder": "a", "transformer_steps": 10, "restarted": ["txt_in.weight"]},
        {"folder": "b", "transformer_steps": 20}]
    assert seed_history(None) == []
    assert seed_history(seed_history(nested)) == seed_history(nested)


def test_a_byte_text_export_seeds_a_sentence_text_run(tmp_path):
    """Switching text encoders keeps every transformer weight but the two input layers whose
    width changes, and counts steps from 0 (it is a new model)."""
    from openkontext.model import LoadedModel
    from openkontext.train.cli import seed_run_from_export
    from openkontext.weights import save_mini

    old = LoadedModel.random("mini-byte", seed=4)
    save_mini(tmp_path / "old", old.preset, old.flux, old.ae, old.text,
              info={"ae_steps": 7, "transformer_steps": 900})
    seed_run_from_export(tmp_path / "old", tmp_path / "run", get_preset("mini"))
    state = torch.load(tmp_path / "run" / "flux.pt", weights_only=False)
    assert state["step"] == 0 and state["preset"] == "mini"
    assert state["init_from"][-1]["restarted"] == ["txt_in.weight", "vector_in.in_layer.weight"]
    assert state["text"] == {} and state["ema_text"] == {}
    assert "optimizer" not in state  # the Stepper makes one over what it trains
    stored = load_model(tmp_path / "old").flux.state_dict()  # as exported (fp16)
    for key, value in state["flux"].items():
        if key in state["init_from"][-1]["restarted"]:
            assert value.shape[1] == 384 and stored[key].shape[1] == 256
        else:
            assert torch.equal(value, stored[key]), key
    # the run then trains under the new preset, and refuses to resume under the old one
    ae = train_autoencoder(old.ae.params, tmp_path / "run", AETrainConfig(steps=1))
    cfg = FlowTrainConfig(steps=1, edit_batch=2, generation_batch=1, eval_every=100)
    assert train_transformer(get_preset("mini"), ae, tmp_path / "run", cfg).step == 1
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "run"),
                                      "--preset", "mini-byte", "--steps", "1"])
    assert result.exit_code == 2 and "holds a 'mini' run" in unboxed(result.output)
    # the old byte-text preset still continues from its own export, text encoder included
    seed_run_from_export(tmp_path / "old", tmp_path / "byte", get_preset("mini-byte"))
    assert torch.load(tmp_path / "byte" / "flux.pt", weights_only=False)["step"] == 900
    cfg = FlowTrainConfig(steps=901, edit_batch=2, generation_batch=1, eval_every=100)
    stepper = train_transformer(get_preset("mini-byte"), ae, tmp_path / "byte", cfg)
    assert stepper.step == 901 and stepper.ema_text is not None
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "x"),
                                      "--preset", "huge"])
    assert result.exit_code == 2 and "unknown model preset 'huge'" in unboxed(result.output)
    # a real-model preset is refused before anything is built or written
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(tmp_path / "y"),
                                      "--preset", "kontext-dev"])
    assert result.exit_code == 2 and "'kontext-dev' is not a mini preset" in unboxed(result.output)
    assert not (tmp_path / "y").exists()


def test_the_preset_help_names_every_mini_preset():
    from openkontext.model.presets import MINI_PRESETS
    from openkontext.train.cli import DEFAULT_PRESET, PRESET_HELP

    listed = PRESET_HELP.split(" (")[0].replace(" or ", ", ").split(", ")
    assert sorted(listed) == sorted(MINI_PRESETS) and DEFAULT_PRESET in MINI_PRESETS
    assert "kontext-dev" not in MINI_PRESETS and len(MINI_PRESETS) == 5


def unboxed(output: str) -> str:
    """typer's error box as one line of words."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", output).split())


def test_decoder_fine_tuning_keeps_the_encoder_and_resumes(run, tmp_path):
    """`train decoder` changes the decoder alone (so latents, and a transformer trained on them,
    stay valid), resumes from ae.pt, and the export records its steps."""
    import shutil

    out, _, _ = run
    shutil.copytree(out, tmp_path / "run")
    run_dir = tmp_path / "run"
    before = torch.load(run_dir / "ae.pt", weights_only=False)
    result = CliRunner().invoke(app, ["train", "decoder", "--run", str(run_dir), "--steps", "2"])
    assert result.exit_code == 0, result.output
    after = torch.load(run_dir / "ae.pt", weights_only=False)
    assert after["decoder"]["step"] == 2 and after["params"] == before["params"]
    for key, value in before["model"].items():
        same = torch.equal(value.float(), after["model"][key])
        assert same == key.startswith("encoder."), key
    log = [json.loads(line) for line in (run_dir / "decoder_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and log[-1]["psnr"] > 0
    # resuming continues the count; a finished count trains nothing more
    assert CliRunner().invoke(app, ["train", "decoder", "--run", str(run_dir),
                                    "--steps", "3"]).exit_code == 0
    resumed = torch.load(run_dir / "ae.pt", weights_only=False)
    assert resumed["decoder"]["step"] == 3
    assert (resumed["decoder"]["cycle_start"], resumed["decoder"]["cycle_end"]) == (2, 3)
    result = CliRunner().invoke(app, ["train", "export", "--run", str(run_dir), "--out",
                                      str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "export" / "mini.json").read_text())["info"]
    assert info["decoder_steps"] == 3
    assert torch.equal(load_model(tmp_path / "export").ae.decoder.conv_out.weight.float(),
                       resumed["model"]["decoder.conv_out.weight"].half().float())
    # a run seeded from that export keeps the decoder's count, and so does its own export
    from openkontext.train.cli import seed_run_from_export

    seed_run_from_export(tmp_path / "export", tmp_path / "seeded", get_preset("mini"))
    assert torch.load(tmp_path / "seeded" / "ae.pt", weights_only=False)["decoder"]["step"] == 3
    result = CliRunner().invoke(app, ["train", "export", "--run", str(tmp_path / "seeded"),
                                      "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "mini.json").read_text())["info"]["decoder_steps"] == 3


def test_decoder_fine_tuning_needs_a_finished_autoencoder(tmp_path):
    result = CliRunner().invoke(app, ["train", "decoder", "--run", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no autoencoder checkpoint" in unboxed(result.output)
    (tmp_path / "half").mkdir()
    torch.save({"done": False, "step": 1}, tmp_path / "half" / "ae.pt")
    result = CliRunner().invoke(app, ["train", "decoder", "--run", str(tmp_path / "half")])
    assert result.exit_code == 2 and "has not finished training" in unboxed(result.output)


def test_reconstruction_loss_weighs_object_pixels():
    from openkontext.train.autoencoder import object_mask, reconstruction_loss

    x = torch.full((1, 3, 16, 16), -1.0)
    x[:, :, 4:6, 4:6] = 1.0  # one small object on a plain background
    mask = object_mask(x)
    assert mask.sum() == 4 * 4 and mask[0, 0, 3:7, 3:7].all()  # 2x2 grown by a pixel
    on_object, on_background = x.clone(), x.clone()
    on_object[:, :, 4, 4] -= 0.5
    on_background[:, :, 12, 12] += 0.5
    plain = reconstruction_loss(on_object, x, 0.0)
    assert torch.isclose(plain, (on_object - x).abs().mean() + (on_object - x).pow(2).mean())
    assert torch.isclose(plain, reconstruction_loss(on_background, x, 0.0))
    weighted = reconstruction_loss(on_object, x, 4.0) / reconstruction_loss(on_background, x, 4.0)
    assert weighted.item() == pytest.approx(5.0)


def test_cooldown_lowers_the_learning_rate_linearly_to_the_last_step(run):
    import random

    from openkontext.train.transformer import Stepper

    _, ae, _ = run
    cfg = FlowTrainConfig(steps=10, cooldown=4, warmup=1, lr=1e-3, edit_batch=1,
                          generation_batch=0)
    stepper = Stepper(get_preset("mini"), ae, cfg)
    rates = []
    for step in (5, 6, 8, 9):
        stepper.step = step
        rates.append(stepper.train_step(random.Random(0), torch.Generator())["lr"])
    assert rates == pytest.approx([1e-3, 1e-3, 0.5e-3, 0.25e-3])
    result = CliRunner().invoke(app, ["train", "mini", "--out", "unused", "--steps", "5",
                                      "--cooldown", "6"])
    assert result.exit_code == 2 and "between 0 and --steps (5)" in unboxed(result.output)


def test_warm_up_repeats_only_for_a_fresh_optimiser(run):
    import random

    from openkontext.train.transformer import Stepper

    _, ae, _ = run
    cfg = FlowTrainConfig(steps=1000, warmup=100, lr=1e-3, edit_batch=1, generation_batch=0)
    first = Stepper(get_preset("mini"), ae, cfg)
    first.step = 500  # as if it had trained 500 steps
    state = first.state_dict()
    resumed = Stepper(get_preset("mini"), ae, cfg)
    resumed.load_state_dict(state)  # optimiser moments come along: no second warm-up
    assert resumed.train_step(random.Random(0), torch.Generator())["lr"] == pytest.approx(1e-3)
    del state["optimizer"]  # as a run seeded from an export: fresh moments
    seeded = Stepper(get_preset("mini"), ae, cfg)
    seeded.load_state_dict(state)
    assert seeded.train_step(random.Random(0), torch.Generator())["lr"] == pytest.approx(1e-5)


@pytest.mark.parametrize("shallow,deeper", [("mini", "mini-deep"),
                                            ("mini-fine", "mini-fine-deep")])
def test_a_mini_export_seeds_a_deeper_run_that_starts_where_it_was(tmp_path, shallow, deeper):
    """Growing mini into mini-deep (mini-fine into mini-fine-deep): the two added single-stream
    blocks start as the identity, so the seeded model predicts exactly what the export does, and
    the step count goes on."""
    from openkontext.model import Flux, LoadedModel
    from openkontext.train.cli import seed_run_from_export
    from openkontext.weights import save_mini

    small = LoadedModel.random(shallow, seed=5)
    save_mini(tmp_path / "small", small.preset, small.flux, small.ae, small.text,
              info={"ae_steps": 7, "transformer_steps": 900})
    exported = load_model(tmp_path / "small").flux.float()
    seed_run_from_export(tmp_path / "small", tmp_path / "run", get_preset(deeper))
    state = torch.load(tmp_path / "run" / "flux.pt", weights_only=False)
    assert state["step"] == 900 and state["preset"] == deeper
    assert {k.split(".")[1] for k in state["init_from"][-1]["restarted"]} == {"4", "5"}
    deep = Flux(get_preset(deeper).flux)
    deep.load_state_dict(state["ema_flux"])
    assert len(deep.single_blocks) == len(exported.single_blocks) + 2
    gen = torch.Generator().manual_seed(0)
    inputs = dict(img=torch.randn(2, 32, 64, generator=gen),
                  img_ids=torch.randint(0, 4, (2, 32, 3)).float(),
                  txt=torch.randn(2, 8, 384, generator=gen), txt_ids=torch.zeros(2, 8, 3),
                  timesteps=torch.tensor([0.3, 0.9]), y=torch.randn(2, 384, generator=gen))
    with torch.no_grad():
        torch.testing.assert_close(deep(**inputs), exported(**inputs), rtol=0, atol=1e-6)


def test_a_resumed_run_ends_exactly_where_an_unbroken_one_does(run, tmp_path):
    """Each step's samples and noise depend on the seed and the step alone, and the checkpoint
    holds the optimiser and EMA: stopping and resuming changes no bit of the result."""
    _, ae, _ = run
    preset = get_preset("mini")
    cfg = dict(edit_batch=2, generation_batch=1, checkpoint_every=1, eval_every=100)
    whole = train_transformer(preset, ae, tmp_path / "whole", FlowTrainConfig(steps=3, **cfg))
    train_transformer(preset, ae, tmp_path / "parts", FlowTrainConfig(steps=1, **cfg))
    parts = train_transformer(preset, ae, tmp_path / "parts", FlowTrainConfig(steps=3, **cfg))
    assert parts.step == whole.step == 3
    for name, state in (("flux", whole.flux.state_dict()), ("ema", whole.ema_flux.state_dict())):
        other = parts.flux.state_dict() if name == "flux" else parts.ema_flux.state_dict()
        for key, value in state.items():
            assert torch.equal(value, other[key]), (name, key)
    # and a step's batch is not the next step's
    from openkontext.train.transformer import step_streams

    assert step_streams(0, 5)[0].random() != step_streams(0, 6)[0].random()
    assert step_streams(0, 5)[0].random() == step_streams(0, 5)[0].random()


def test_kind_weights_t_mean_and_loss_weights_are_kept_by_a_resumed_run(run, tmp_path):
    """--kind-weights, --t-mean, --object-weight, --change-weight, --weighted-kinds,
    --text-drop, --contrast, --colour-contrast, --alike-twins, --lr and --seed go into the
    checkpoint's config, and a resume without them keeps the run's own (a restart to extend a
    run must not quietly change its data mix or its loss); so are the batch sizes and the rest
    that no option sets."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    held = torch.load(out / "flux.pt", weights_only=False)
    step = held["step"]
    # the fixture's run was trained from Python with small batches and evals, which the calls
    # below do not set: a resume keeps them rather than falling back to the defaults
    no_option = ("warmup", "weight_decay", "ema_decay", "t_std", "checkpoint_every",
                 "eval_every", "eval_cases", "eval_steps")
    own = {k: held["config"][k] for k in no_option
           if held["config"][k] != getattr(FlowTrainConfig, k)}
    assert own["checkpoint_every"] == 1 and held["config"]["edit_batch"] == 2

    def train(*options: str, steps: int) -> dict:
        result = CliRunner().invoke(app, ["train", "mini", "--out", str(out), "--threads", "1",
                                          "--steps", str(steps), *options])
        assert result.exit_code == 0, result.output
        kept = ", ".join(f"{k} {v}" for k, v in own.items())
        assert f"kept from the run: {kept}\n" in result.output
        state = torch.load(out / "flux.pt", weights_only=False)
        assert state["step"] == steps
        return state["config"]

    first = train("--kind-weights", "recolor=3, background=2.5", "--t-mean", "1.5",
                  "--object-weight", "4", "--change-weight", "3", "--text-drop", "0.1",
                  "--contrast", "0.5", "--colour-contrast", "0.25", "--seed", "7", "--lr", "3e-4",
                  "--weighted-kinds", "recolor, remove", "--alike-twins", steps=step + 1)
    assert first["kind_weights"] == {"recolor": 3.0, "background": 2.5}
    assert first["t_mean"] == 1.5 and first["object_weight"] == 4.0
    assert first["change_weight"] == 3.0 and first["text_drop"] == 0.1
    assert first["contrast"] == 0.5 and first["seed"] == 7
    assert first["colour_contrast"] == 0.25 and first["weighted_kinds"] == ["recolor", "remove"]
    assert first["alike_twins"] is True
    assert {k: first[k] for k in own} == own
    assert first["lr"] == 3e-4 and first["t_std"] == FlowTrainConfig.t_std
    kept = train(steps=step + 2)
    assert kept["kind_weights"] == first["kind_weights"] and kept["t_mean"] == 1.5
    assert kept["object_weight"] == 4.0 and kept["text_drop"] == 0.1
    assert kept["change_weight"] == 3.0 and kept["contrast"] == 0.5 and kept["seed"] == 7
    assert kept["colour_contrast"] == 0.25 and kept["weighted_kinds"] == ["recolor", "remove"]
    assert kept["alike_twins"] is True and kept["lr"] == 3e-4
    changed = train("--kind-weights", "swap=2", "--object-weight", "0", "--text-drop", "0",
                    "--change-weight", "0", "--contrast", "0", "--seed", "0",
                    "--colour-contrast", "0", "--weighted-kinds", "swap", "--any-twins",
                    steps=step + 3)
    assert changed["kind_weights"] == {"swap": 2.0} and changed["t_mean"] == 1.5
    assert changed["object_weight"] == 0.0 and changed["text_drop"] == 0.0
    assert changed["change_weight"] == 0.0 and changed["contrast"] == 0.0
    assert changed["seed"] == 0 and changed["colour_contrast"] == 0.0
    assert changed["weighted_kinds"] == ["swap"] and changed["alike_twins"] is False
    bad = [("--kind-weights", "recolor", "expected KIND=WEIGHT, got 'recolor'"),
           ("--kind-weights", "recolor=lots", "weight of 'recolor' is not a number"),
           ("--kind-weights", "rotate=2", "unknown edit kind 'rotate'"),
           ("--kind-weights", "recolor=-1", "must be a number >= 0"),
           *[("--object-weight", v, "must be a finite number >= 0") for v in ("-1", "nan", "inf")],
           *[("--change-weight", v, "must be a finite number >= 0") for v in ("-2", "nan")],
           *[("--text-drop", v, "must be a fraction in [0, 1)") for v in ("-0.1", "1", "nan")],
           *[("--contrast", v, "must be a fraction in [0, 1]") for v in ("-0.1", "1.5", "nan")],
           *[("--colour-contrast", v, "must be a fraction in [0, 1]") for v in ("-1", "2")],
           ("--weighted-kinds", "recolour", "unknown edit kind 'recolour'"),
           ("--weighted-kinds", " , ", "no edit kinds given"),
           *[("--lr", v, "must be a learning rate in (0, 0.01]") for v in ("0", "-1e-4", "0.5",
                                                                          "nan")],
           ("--seed", "-1", "greater than or equal to 0"), ("--seed", "one", "valid integer")]
    for option, value, message in bad:
        result = CliRunner().invoke(app, ["train", "mini", "--out", str(out), "--steps",
                                          str(step + 9), option, value])
        assert result.exit_code == 2, (option, value)
        assert option in unboxed(result.output) and message in unboxed(result.output), value
    assert torch.load(out / "flux.pt", weights_only=False)["step"] == step + 3  # untouched
    # a checkpoint older than a field holds its default; names FlowTrainConfig no longer has, and
    # the schedule's length and the machine's bf16, are not handed on
    from openkontext.train.transformer import held_settings

    old = held_settings({"contrast": 0.5, "steps": 9, "autocast_bf16": True, "retired": 1})
    assert old["contrast"] == 0.5 and old["colour_contrast"] == 0.0 and old["edit_batch"] == 24
    assert old["weighted_kinds"] is None and old["alike_twins"] is False
    assert not {"steps", "cooldown", "autocast_bf16", "retired"} & set(old)
    FlowTrainConfig(steps=3, **old)
    with pytest.raises(ValueError, match="unknown edit kind 'rotate'"):
        FlowTrainConfig(kind_weights={"rotate": 1})
    with pytest.raises(ValueError, match="must be a finite number >= 0, got -0.5"):
        FlowTrainConfig(object_weight=-0.5)
    with pytest.raises(ValueError, match="must be a finite number >= 0, got inf"):
        FlowTrainConfig(change_weight=float("inf"))


def test_object_tokens_mark_every_token_an_object_touches_in_any_image():
    from openkontext.train.transformer import object_tokens

    target = torch.full((1, 3, 32, 32), -1.0)
    target[:, :, 20:22, 3:5] = 1.0  # one object in the token at row 1, column 0
    source = torch.full((1, 3, 32, 32), -1.0)
    source[:, 0, 1:3, 29:31] = 0.5  # one in row 0, column 1
    assert object_tokens([target], 16).tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert object_tokens([target, source], 16).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    # an object pixel on a token's edge reaches the next token through the one-pixel border
    edge = torch.full((1, 3, 32, 32), -1.0)
    edge[:, :, 15, 5] = 1.0
    assert object_tokens([edge], 16).tolist() == [[1.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize("option", ["object_weight", "change_weight"])
def test_token_weighting_trains_on_the_weighted_loss_and_logs_the_plain_one(run, option):
    """Two steppers from the same seed on the same batch: the logged loss is the unweighted
    one in both (runs compare on one measure); only the weighted one trains differently."""
    from openkontext.train.transformer import Stepper, step_streams

    _, ae, _ = run
    cfg = dict(edit_batch=3, generation_batch=1, autocast_bf16=False)
    plain = Stepper(get_preset("mini"), ae, FlowTrainConfig(**cfg))
    weighted = Stepper(get_preset("mini"), ae, FlowTrainConfig(**{option: 4.0}, **cfg))
    a, b = plain.train_step(*step_streams(0, 0)), weighted.train_step(*step_streams(0, 0))
    assert a["loss"] == b["loss"] and a["kinds"] == b["kinds"] and a["bands"] == b["bands"]
    assert "loss_weighted" not in a and b["loss_weighted"] != b["loss"]
    moved = [not torch.equal(p, q) for p, q in zip(plain.flux.parameters(),
                                                  weighted.flux.parameters(), strict=True)]
    assert any(moved)


def test_changed_tokens_weigh_more_in_edits_and_not_in_generations(run):
    """token_mask marks each token holding a changed pixel; with change_weight 3 those
    weigh 4 and the rest 1, added to the object weight; a generation (no change mask) is not
    weighted by it."""
    from openkontext.train.transformer import Stepper, token_mask

    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 20, 3] = mask[0, 0, 31] = True  # tokens (row 1, col 0) and (row 0, col 1)
    assert token_mask(mask, 16).tolist() == [[0.0, 1.0, 1.0, 0.0]]
    _, ae, _ = run
    preset = get_preset("mini")
    size, patch = preset.native_size, preset.latent_multiple
    plain = torch.full((1, 3, size, size), -1.0)  # no objects: object weighting adds nothing
    changed = torch.zeros(1, size, size, dtype=torch.bool)
    changed[0, :patch, :patch] = True  # exactly the first token
    stepper = Stepper(preset, ae, FlowTrainConfig(change_weight=3.0, object_weight=2.0))
    weight = stepper.token_weight(plain, plain, changed)
    assert weight[0, 0].item() == 4.0 and weight[0, 1:].eq(1.0).all()
    assert stepper.token_weight(plain, None, None).eq(1.0).all()  # a generation
    assert Stepper(preset, ae, FlowTrainConfig()).token_weight(plain, plain, changed) is None


def test_weighted_kinds_limit_token_weights_to_the_samples_of_those_kinds(run):
    """With weighted_kinds ['recolor'] a recolour's changed and object tokens weigh more, a
    remove's and a generation's weigh 1 each; unknown or no kinds are refused."""
    from openkontext.train.transformer import Stepper, check_weighted_kinds

    _, ae, _ = run
    preset = get_preset("mini")
    size, patch = preset.native_size, preset.latent_multiple
    target = torch.full((2, 3, size, size), -1.0)  # plain background...
    inside = slice(2 * patch + 2, 3 * patch - 2)  # object_mask's one-pixel border stays inside
    target[:, :, inside, inside] = 1.0  # ...and one white object in token (2, 2)
    changed = torch.zeros(2, size, size, dtype=torch.bool)
    changed[:, :patch, :patch] = True  # the first token changed
    cfg = FlowTrainConfig(change_weight=3.0, object_weight=1.0, weighted_kinds=["recolor"])
    stepper = Stepper(preset, ae, cfg)
    weight = stepper.token_weight(target, target, changed, ["recolor", "remove"])
    assert weight[0, 0].item() == 4.0 and weight[0, 2 * size // patch + 2].item() == 2.0
    assert weight[0].sum().item() == weight.shape[1] + 3.0 + 1.0
    assert weight[1].eq(1.0).all()  # a remove
    assert stepper.token_weight(target, target, changed, ["remove", "remove"]) is None
    assert stepper.token_weight(target, None, None, None) is None  # generations
    assert check_weighted_kinds(["recolor", "remove", "recolor"]) == ["recolor", "remove"]
    with pytest.raises(ValueError, match="unknown edit kind 'recolour'"):
        check_weighted_kinds(["recolour"])
    with pytest.raises(ValueError, match="no edit kinds given"):
        check_weighted_kinds([])
    with pytest.raises(ValueError, match="unknown edit kind"):
        FlowTrainConfig(weighted_kinds=["paint"])


def test_dropped_texts_come_from_their_own_stream_at_the_asked_rate():
    from openkontext.train.transformer import drop_texts

    texts = [f"make object {i} red" for i in range(2000)]
    dropped = drop_texts(texts, 0.1, random.Random(4))
    assert dropped == drop_texts(texts, 0.1, random.Random(4))
    empty = [i for i, t in enumerate(dropped) if t == ""]
    assert 150 < len(empty) < 250  # binomial(2000, 0.1): 200 +- 13.4
    assert all(dropped[i] == texts[i] for i in range(2000) if i not in set(empty))
    assert drop_texts(texts, 0.0, random.Random(4)) == texts


def test_a_text_drop_run_exports_classifier_free_guidance(run, tmp_path):
    """A run trained with --text-drop exports a preset marked classifier_free, with the scale
    `--guidance` names as its default; a run without cannot be given one."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    step = torch.load(out / "flux.pt", weights_only=False)["step"]

    def export(folder, *options):
        return CliRunner().invoke(app, ["train", "export", "--run", str(out), "--out",
                                        str(folder), *options])

    result = export(tmp_path / "plain", "--guidance", "2")
    assert result.exit_code == 2 and "not trained with --text-drop" in unboxed(result.output)
    assert not (tmp_path / "plain").exists()
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(out), "--threads", "1",
                                      "--steps", str(step + 1), "--text-drop", "0.2"])
    assert result.exit_code == 0, result.output
    assert "instructions dropped 20%" in result.output
    result = export(tmp_path / "bad", "--guidance", "25")
    assert result.exit_code == 2 and "must be 1..20, got 25.0" in unboxed(result.output)
    assert export(tmp_path / "default").exit_code == 0
    model = load_model(tmp_path / "default")
    assert model.preset.classifier_free and model.preset.default_guidance == 1.0
    assert export(tmp_path / "guided", "--guidance", "2.5").exit_code == 0
    model = load_model(tmp_path / "guided")
    assert model.preset.classifier_free and model.preset.default_guidance == 2.5
    older = json.loads((tmp_path / "guided" / "mini.json").read_text())
    del older["preset"]["classifier_free"]  # an export written before 8,800 steps
    (tmp_path / "guided" / "mini.json").write_text(json.dumps(older))
    assert not load_model(tmp_path / "guided").preset.classifier_free


def test_a_mini_fine_deep_export_fits_under_the_package_cap(tmp_path):
    """The deeper preset is the largest the package can ship: its fp16 export (transformer and
    autoencoder; the sentence encoder comes from its own package) stays under 25 MB."""
    from openkontext.model import LoadedModel
    from openkontext.weights import save_mini

    model = LoadedModel.random("mini-fine-deep", seed=1)
    folder = save_mini(tmp_path / "deep", model.preset, model.flux, model.ae, model.text,
                       info={"ae_steps": 1, "transformer_steps": 1})
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert 24_000_000 < size < 25_000_000
    assert load_model(folder).preset.name == "mini-fine-deep"


def test_compare_runs_says_whether_two_runs_draw_the_same_batches(run, tmp_path):
    """benchmarks/mini/compare_runs.py pairs two runs' losses step by step only when their seed and
    data mix agree; another --seed (or contrast) makes it say the losses are not paired. And the
    seed reaches what a step draws: one step from one checkpoint under two seeds lands apart."""
    import shutil
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "benchmarks" / "mini" / "compare_runs.py"
    ae = run[1]  # the module-wide run folder is trained further by other tests: start afresh

    def train(folder: Path, steps: int, **changes) -> dict:
        cfg = FlowTrainConfig(steps=steps, edit_batch=2, generation_batch=1,
                              eval_every=10 ** 6, **changes)
        trained = train_transformer(get_preset("mini"), ae, folder, cfg)
        assert trained.step == steps
        return trained.flux.state_dict()

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(a, 1)
    # a one-step run logs no loss (a record every 20 steps): give the log one to share
    with (a / "flux_log.jsonl").open("a") as log:
        log.write(json.dumps({"step": 1, "loss": 0.5, "sec_per_step": 1.0}) + "\n")
    shutil.copytree(a, b)
    shutil.copytree(a, c)

    def compare(other: Path = b, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(a), str(other), "--window", "1",
                               *options], capture_output=True, text=True, timeout=120)

    def first_line(other: Path = b) -> str:
        done = compare(other)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[0]

    assert first_line().endswith("the same batches at the same step, so B - A is paired")
    seeded = train(b, 2, seed=7, contrast=0.5)
    unseeded = train(c, 2, contrast=0.5, alike_twins=True)
    assert any(not torch.equal(seeded[k], unseeded[k]) for k in seeded)
    assert first_line().endswith("their seed, contrast differ, so their batches do and B - A is "
                                 "not paired")
    assert "their contrast, alike_twins differ" in first_line(c)
    # --kind compares one kind's logged loss, where both runs logged it
    for folder, recolour in ((a, 0.25), (c, 0.2)):
        with (folder / "flux_log.jsonl").open("a") as log:
            for step, kinds in ((40, {"recolor": recolour, "swap": 0.4}), (60, {"swap": 0.3})):
                log.write(json.dumps({"step": step, "loss": 0.1, "sec_per_step": 1.0,
                                      "kinds": kinds}) + "\n")
    done = compare(c, "--kind", "recolor")
    assert done.returncode == 0, done.stderr
    assert "recolor loss where both logged one" in done.stdout
    assert "| all 1 steps | 0.25000 | 0.20000 | -0.05000 | 100% | 1.00 | 1.00 |" in done.stdout
    assert "| all 2 steps | 0.35000 |" in compare(c, "--kind", "swap").stdout
    missing = compare(c, "--kind", "remove")
    assert missing.returncode != 0 and "no logged step with a remove loss" in missing.stderr


def test_steps_train_on_other_ratios_and_reference_edits(run):
    from openkontext.resolution import preferred_resolutions
    from openkontext.train.transformer import Stepper, step_streams

    _, ae, _ = run
    preset = get_preset("mini")
    cfg = FlowTrainConfig(edit_batch=2, generation_batch=1, reference_batch=2, non_square=1.0)
    stepper = Stepper(preset, ae, cfg)
    canvases = set()
    for step in range(6):
        stepper.step = step
        canvases.add(stepper.canvas())
    assert all(c[0] != c[1] and c in preferred_resolutions(preset) for c in canvases)
    assert len(canvases) > 1
    stats = stepper.train_step(*step_streams(0, 0))
    assert {"ref_object", "ref_colour", "ref_background"} & set(stats["kinds"])
    assert torch.isfinite(torch.tensor(stats["loss"]))
    # without them a step draws exactly the batches it drew before they existed
    plain = Stepper(preset, ae, FlowTrainConfig(edit_batch=2, generation_batch=1))
    assert plain.canvas() == preset.native_size
    with pytest.raises(ValueError, match="reference_batch must be >= 0"):
        FlowTrainConfig(reference_batch=-1)
    with pytest.raises(ValueError, match="fraction"):
        FlowTrainConfig(non_square=1.5)


def test_square_generations_train_on_the_native_square_beside_a_non_square_step(run):
    from openkontext.train.transformer import Stepper, step_streams

    _, ae, _ = run
    preset = get_preset("mini")

    def sizes_trained(**settings) -> list[tuple[int, int]]:
        cfg = FlowTrainConfig(edit_batch=1, generation_batch=2, **settings)
        stepper = Stepper(preset, ae, cfg)
        sizes, loss = [], stepper.loss

        def recording(target, *rest):
            sizes.append((target.shape[0], *target.shape[-2:]))
            return loss(target, *rest)

        stepper.loss = recording
        stats = stepper.train_step(*step_streams(0, 0))
        assert torch.isfinite(torch.tensor(stats["loss"]))
        return sizes

    square = preset.native_size
    wide = sizes_trained(non_square=1.0, square_generations=True)
    assert len(wide) == 3 and wide[0][1:] != (square, square)
    assert wide[1] == (2, *wide[0][1:]) and wide[2] == (2, square, square)
    # the step's own samples are those a run without draws; a square step trains nothing extra
    assert sizes_trained(non_square=1.0) == wide[:2]
    assert sizes_trained(square_generations=True) == [(1, square, square), (2, square, square)]


def test_a_fitted_positions_run_exports_them_and_its_seeds_keep_them(run, tmp_path):
    """--fit-positions goes into the run's config and its export's preset; a run seeded from
    that export trains with them unless --token-positions says otherwise; an export written
    before the option reads as token positions."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    step = torch.load(out / "flux.pt", weights_only=False)["step"]
    result = CliRunner().invoke(app, ["train", "mini", "--out", str(out), "--threads", "1",
                                      "--steps", str(step + 1), "--fit-positions"])
    assert result.exit_code == 0, result.output
    assert "fitted positions" in result.output
    assert torch.load(out / "flux.pt", weights_only=False)["config"]["fit_positions"] is True
    assert CliRunner().invoke(app, ["train", "export", "--run", str(out), "--out",
                                    str(tmp_path / "fitted")]).exit_code == 0
    model = load_model(tmp_path / "fitted")
    assert model.preset.fit_positions and model.preset.position_span == 64 // 16
    assert not get_preset("mini").fit_positions and get_preset("mini").position_span is None

    def seeded(name, *options):
        result = CliRunner().invoke(app, [
            "train", "mini", "--out", str(tmp_path / name), "--init-from",
            str(tmp_path / "fitted"), "--threads", "1", "--steps", str(step + 2), *options])
        assert result.exit_code == 0, result.output
        return torch.load(tmp_path / name / "flux.pt", weights_only=False)["config"]

    assert seeded("goes-on")["fit_positions"] is True
    assert seeded("back", "--token-positions")["fit_positions"] is False
    older = json.loads((tmp_path / "fitted" / "mini.json").read_text())
    del older["preset"]["fit_positions"]  # an export written before 56,800 steps
    (tmp_path / "fitted" / "mini.json").write_text(json.dumps(older))
    assert not load_model(tmp_path / "fitted").preset.fit_positions
