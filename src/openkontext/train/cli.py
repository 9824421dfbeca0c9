"""`openkontext train ...`: train the embedded mini model (resumable, runs for hours on a CPU), or a
LoRA on edit pairs (`train lora`, in `lora_cli`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from openkontext.train.lora_cli import train_lora_command

app = typer.Typer(help="Train the embedded mini model on Shapes World, or a LoRA on edit pairs.",
                  no_args_is_help=True)

# What a new run trains when --preset is not given (the finer token grid, since 2026-11-30).
DEFAULT_PRESET = "mini-fine"
# Written out rather than built from model.presets.MINI_PRESETS, which would import torch for
# every `openkontext` command; a test checks the two name the same presets.
PRESET_HELP = (
    "mini-fine, mini-fine-deep, mini, mini-deep or mini-byte (default: the run's own, else the "
    "--init-from export's, else mini-fine)"
)


@app.command("mini")
def train_mini(
    out: Annotated[Path, typer.Option(help="run folder for checkpoints and logs")] = Path(
        "runs/mini"
    ),
    resume: Annotated[bool, typer.Option(help="continue from the checkpoints in --out")] = True,
    ae_steps: Annotated[int, typer.Option(help="autoencoder steps")] = 2500,
    steps: Annotated[
        int, typer.Option(help="transformer steps (total, including resumed)")
    ] = 40_000,
    cooldown: Annotated[
        int, typer.Option(help="lower the learning rate linearly to 0 over the last N steps")
    ] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
    init_from: Annotated[
        Path | None,
        typer.Option(help="start an empty run folder from a mini export (e.g. the shipped one)"),
    ] = None,
    preset_name: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help=PRESET_HELP,
        ),
    ] = None,
    kind_weights: Annotated[
        str | None,
        typer.Option(
            help="weights for drawing edit kinds, e.g. 'recolor=3,background=2' "
            "(unlisted kinds weigh 1; default: the run's own, else uniform)"
        ),
    ] = None,
    t_mean: Annotated[
        float | None,
        typer.Option(help="centre of the logit-normal t (default: the run's own, else 1.0)"),
    ] = None,
    object_weight: Annotated[
        float | None,
        typer.Option(
            help="extra loss weight of tokens holding an object: they weigh 1 + this "
            "(default: the run's own, else 0)"
        ),
    ] = None,
    change_weight: Annotated[
        float | None,
        typer.Option(
            help="extra loss weight of the tokens an edit changes: they weigh 1 + this "
            "(default: the run's own, else 0)"
        ),
    ] = None,
    weighted_kinds: Annotated[
        str | None,
        typer.Option(
            help="the edit kinds, comma-separated (e.g. 'recolor'), whose samples "
            "--object-weight and --change-weight act on (default: the run's own, else every "
            "edit and, for --object-weight, the generations)"
        ),
    ] = None,
    text_drop: Annotated[
        float | None,
        typer.Option(
            help="fraction of samples trained with an empty instruction, for classifier-free "
            "guidance (default: the run's own, else 0)"
        ),
    ] = None,
    contrast: Annotated[
        float | None,
        typer.Option(
            help="fraction of one-object edits (recolor, remove, move, resize, reshape) "
            "followed in the batch by the same edit on the same picture naming another object "
            "(default: the run's own, else 0)"
        ),
    ] = None,
    colour_contrast: Annotated[
        float | None,
        typer.Option(
            help="fraction of recolor edits followed in the batch by a recolour of the same "
            "object to another colour (default: the run's own, else 0)"
        ),
    ] = None,
    alike_twins: Annotated[
        bool | None,
        typer.Option(
            "--alike-twins/--any-twins",
            help="contrast twins name an object of a shape alike the named one's where the "
            "picture has one, or any other object (default: the run's own, else any)",
        ),
    ] = None,
    edit_batch: Annotated[
        int | None,
        typer.Option(min=1, help="edits per step (default: the run's own, else 24)"),
    ] = None,
    generation_batch: Annotated[
        int | None,
        typer.Option(min=0, help="generations per step (default: the run's own, else 8)"),
    ] = None,
    non_square: Annotated[
        float | None,
        typer.Option(
            help="fraction of steps trained on a non-square canvas, one of the preset's "
            "preferred resolutions (default: the run's own, else 0)"
        ),
    ] = None,
    square_generations: Annotated[
        bool | None,
        typer.Option(
            "--square-generations/--step-generations",
            help="on a non-square step, train the generations on the native square as well as "
            "on the step's canvas, or on the step's canvas only (default: the run's own, else "
            "the step's canvas only)",
        ),
    ] = None,
    reference_batch: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="reference edits per step (an object or a background colour taken from "
            "image 2..4; default: the run's own, else 0)",
        ),
    ] = None,
    fit_positions: Annotated[
        bool | None,
        typer.Option(
            "--fit-positions/--token-positions",
            help="position ids that span the native square on every canvas, or plain token "
            "counts as Kontext's (default: the run's own, else the --init-from export's, else "
            "token counts)",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="the transformer's learning rate after the warm-up of a fresh optimiser "
            "(default: the run's own, else 4e-4)",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="the run's random seed, which draws its batches, noise and t (and a new "
            "transformer's first weights): another seed is another run of the same recipe "
            "(default: the run's own, else 0)",
        ),
    ] = None,
) -> None:
    """Train the autoencoder (stage 1), then the transformer (stage 2; with the text encoder
    when it is the byte-level one)."""
    import torch

    from openkontext.model import get_preset
    from openkontext.model.presets import MINI_PRESETS
    from openkontext.train.autoencoder import AETrainConfig, train_autoencoder
    from openkontext.train.transformer import (
        FlowTrainConfig,
        check_loss_weight,
        check_lr,
        check_text_drop,
        held_settings,
        train_transformer,
    )
    from openkontext.world.sampling import check_contrast

    if not 0 <= cooldown <= steps:
        raise typer.BadParameter(
            f"must be between 0 and --steps ({steps})", param_hint="--cooldown"
        )
    weights = _checked(kind_weights, parse_kind_weights, "--kind-weights")
    _checked(object_weight, check_loss_weight, "--object-weight")
    _checked(change_weight, check_loss_weight, "--change-weight")
    kinds_weighted = _checked(weighted_kinds, parse_kinds, "--weighted-kinds")
    _checked(text_drop, check_text_drop, "--text-drop")
    _checked(contrast, check_contrast, "--contrast")
    _checked(colour_contrast, check_contrast, "--colour-contrast")
    _checked(non_square, check_contrast, "--non-square")
    _checked(lr, check_lr, "--lr")
    if threads:
        torch.set_num_threads(threads)
    held_state = _held_run(out)
    if preset_name is None:
        if held_state:
            preset_name = _run_preset(held_state)
        elif init_from is not None:
            preset_name = _export_preset(init_from)["name"]
        else:
            preset_name = DEFAULT_PRESET
    try:
        preset = get_preset(preset_name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--preset") from None
    if preset.name not in MINI_PRESETS:
        raise typer.BadParameter(
            f"{preset.name!r} is not a mini preset; choose one of {list(MINI_PRESETS)}",
            param_hint="--preset",
        )
    out.mkdir(parents=True, exist_ok=True)
    _check_run_preset(held_state, out, preset.name)
    # A resumed run keeps every setting of its own (data mix, t, loss, seed, and those no option
    # sets, such as the batch sizes a run started from Python may have) unless told otherwise.
    defaults = held_settings({})
    settings = held_settings(held_state.get("config", {}) if resume else {})
    if init_from is not None and not held_state:
        settings["fit_positions"] = _export_preset(init_from).get("fit_positions", False)
    given = {
        "kind_weights": weights,
        "t_mean": t_mean,
        "object_weight": object_weight,
        "change_weight": change_weight,
        "weighted_kinds": kinds_weighted,
        "text_drop": text_drop,
        "contrast": contrast,
        "colour_contrast": colour_contrast,
        "alike_twins": alike_twins,
        "edit_batch": edit_batch,
        "generation_batch": generation_batch,
        "non_square": non_square,
        "square_generations": square_generations,
        "reference_batch": reference_batch,
        "lr": lr,
        "fit_positions": fit_positions,
        "seed": seed,
    }
    settings.update({name: value for name, value in given.items() if value is not None})
    kept = {
        name: value
        for name, value in settings.items()
        if name not in given and value != defaults[name]
    }
    if init_from is not None:
        seed_run_from_export(init_from, out, preset)
    ae = train_autoencoder(preset.ae, out, AETrainConfig(steps=ae_steps, batch_size=16), resume)
    typer.echo(f"autoencoder ready: scale {ae.params.scale_factor} shift {ae.params.shift_factor}")
    preset = dataclasses.replace(preset, ae=ae.params)
    cfg = FlowTrainConfig(steps=steps, cooldown=cooldown, **settings)
    if any(settings[name] != defaults[name] for name in given):
        typer.echo(
            f"edit kinds weighted {cfg.kind_weights or 'uniformly'}, t centred at {cfg.t_mean}, "
            f"object tokens weigh {1 + cfg.object_weight}, changed tokens "
            f"{1 + cfg.change_weight} (both in {', '.join(cfg.weighted_kinds or ['every kind'])}), "
            f"instructions dropped {cfg.text_drop:.0%}, "
            f"contrast twins {cfg.contrast:.0%}"
            f"{' (alike shapes)' if cfg.alike_twins else ''}, "
            f"colour twins {cfg.colour_contrast:.0%}, "
            f"{cfg.edit_batch} edits, {cfg.generation_batch} generations and "
            f"{cfg.reference_batch} reference edits a step, "
            f"non-square canvases {cfg.non_square:.0%}"
            f"{' (square generations on every step)' if cfg.square_generations else ''}, "
            f"{'fitted' if cfg.fit_positions else 'token'} positions, "
            f"learning rate {cfg.lr:g}, seed {cfg.seed}"
        )
    if kept:
        typer.echo("kept from the run: " + ", ".join(f"{k} {v}" for k, v in kept.items()))
    train_transformer(preset, ae, out, cfg, resume)


def _checked(value, check, option: str):
    """check(value) (None passes as None), its ValueError as a usage error naming `option`."""
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


def parse_kind_weights(text: str) -> dict[str, float]:
    """'recolor=3,background=2' -> {'recolor': 3.0, 'background': 2.0}, checked."""
    from openkontext.world.sampling import check_kind_weights

    weights: dict[str, float] = {}
    for part in text.split(","):
        kind, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"expected KIND=WEIGHT, got {part.strip()!r}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"the weight of {kind.strip()!r} is not a number: {value!r}") from None
    return check_kind_weights(weights)


def parse_kinds(text: str) -> list[str]:
    """'recolor, remove' -> ['recolor', 'remove'], checked."""
    from openkontext.train.transformer import check_weighted_kinds

    return check_weighted_kinds([k.strip() for k in text.split(",") if k.strip()])


def _export_preset(folder: Path) -> dict:
    """The preset a mini export records (`presets.preset_to_dict`)."""
    config = Path(folder) / "mini.json"
    if not config.exists():
        raise typer.BadParameter(
            f"{folder} holds no mini export (no mini.json)", param_hint="--init-from"
        )
    return json.loads(config.read_text())["preset"]


def _run_preset(state: dict) -> str:
    """The preset a transformer checkpoint was trained as (runs before 2026-11-30 did not record
    it: they were all mini)."""
    return state.get("preset", "mini")


def _held_run(out: Path) -> dict:
    """A run folder's transformer checkpoint, memory-mapped (its preset and config are read,
    not its tensors); {} if there is none."""
    import torch

    ckpt = out / "flux.pt"
    if not ckpt.exists():
        return {}
    return torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)


@app.command("decoder")
def train_decoder_cmd(
    run: Annotated[Path, typer.Option(help="run folder whose ae.pt has finished training")] = Path(
        "runs/mini"
    ),
    steps: Annotated[
        int,
        typer.Option(
            help="decoder steps (total, including resumed; a larger total than "
            "the last run's starts a new learning-rate cycle)"
        ),
    ] = 5000,
    lr: Annotated[float, typer.Option(help="peak learning rate (cosine to 0)")] = 1e-3,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 0,
) -> None:
    """Fine-tune the autoencoder's decoder alone (the encoder and its latents stay as they are),
    so it can run beside `train mini` on the same run folder and lift the reconstruction ceiling."""
    import torch

    from openkontext.train.autoencoder import DecoderTrainConfig, train_decoder

    if threads:
        torch.set_num_threads(threads)
    try:
        train_decoder(run, DecoderTrainConfig(steps=steps, lr=lr))
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--run") from None
    typer.echo(f"decoder fine-tuned to step {steps}: {run / 'ae.pt'}")


@app.command("export")
def export(
    run: Annotated[Path, typer.Option(help="run folder written by `train mini`")] = Path(
        "runs/mini"
    ),
    out: Annotated[Path, typer.Option(help="export folder (the package's embedded/ by default)")]
    | None = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            help="the export's default classifier-free guidance scale, for a run trained with "
            "--text-drop (default: 1, none)"
        ),
    ] = None,
) -> None:
    """Export the EMA weights of a run (autoencoder + transformer + a trained text encoder) as a
    mini export: fp16 safetensors plus a config JSON, loadable with --weights or as the default."""
    import torch

    from openkontext.model import (
        Flux,
        build_text_encoder,
        get_preset,
    )
    from openkontext.pipeline import check_guidance
    from openkontext.train.autoencoder import load_finished_autoencoder
    from openkontext.weights import EMBEDDED_DIR, save_mini

    _checked(guidance, check_guidance, "--guidance")
    try:
        ae, ae_state = load_finished_autoencoder(run / "ae.pt")
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--run") from None
    flux_state = torch.load(run / "flux.pt", map_location="cpu", weights_only=False)
    preset = dataclasses.replace(get_preset(_run_preset(flux_state)), ae=ae.params)
    if flux_state.get("config", {}).get("text_drop"):
        preset = dataclasses.replace(preset, classifier_free=True)
    if flux_state.get("config", {}).get("fit_positions"):
        preset = dataclasses.replace(preset, fit_positions=True)
    if guidance is not None:
        if not preset.classifier_free:
            raise typer.BadParameter(
                f"{run} was not trained with --text-drop, so it has no classifier-free guidance",
                param_hint="--guidance",
            )
        preset = dataclasses.replace(preset, default_guidance=guidance)
    flux, text = Flux(preset.flux), build_text_encoder(preset.text)
    flux.load_state_dict(flux_state["ema_flux"])
    text.load_state_dict(flux_state["ema_text"])
    info = {"ae_steps": ae_state["step"], "transformer_steps": flux_state["step"]}
    if "decoder" in ae_state:
        info["decoder_steps"] = ae_state["decoder"]["step"]
    if "init_from" in flux_state:
        info["init_from"] = seed_history(flux_state["init_from"])
    folder = save_mini(out or EMBEDDED_DIR, preset, flux, ae, text, info=info)
    typer.echo(f"exported {folder} ({info})")


@app.command("average")
def average(
    exports: Annotated[
        list[Path],
        typer.Argument(help="two or more mini exports of one preset and one autoencoder"),
    ],
    out: Annotated[Path, typer.Option(help="export folder to write (may be one of EXPORTS)")],
) -> None:
    """Write a mini export whose transformer and text encoder are the mean of the EXPORTS'
    (a weight average, or "model soup"). Meant for runs continued from one export with different
    recipes, which stay close enough in weight space for their mean to work: score it beside
    them (benchmarks/mini/evaluate_runs.py) before shipping it."""
    import torch

    from openkontext.model import preset_to_dict
    from openkontext.weights import WeightsError, load_mini, save_mini

    if len(exports) < 2:
        raise typer.BadParameter("give at least two exports to average", param_hint="EXPORTS")
    models, infos = [], []
    for folder in exports:
        try:
            models.append(load_mini(folder))
        except WeightsError as e:
            raise typer.BadParameter(str(e), param_hint="EXPORTS") from None
        infos.append(json.loads((folder / "mini.json").read_text()).get("info", {}))
    first = models[0]
    for folder, model in zip(exports[1:], models[1:], strict=True):
        if preset_to_dict(model.preset) != preset_to_dict(first.preset):
            raise typer.BadParameter(
                f"{folder} holds a {model.preset.name!r} model that differs from {exports[0]}'s "
                f"{first.preset.name!r}: only one preset's weights can be averaged",
                param_hint="EXPORTS",
            )
        ours, theirs = first.ae.state_dict(), model.ae.state_dict()
        if any(not torch.equal(ours[k], theirs[k]) for k in ours):
            raise typer.BadParameter(
                f"{folder} has another autoencoder than {exports[0]}: their transformers read "
                "different latents, so their mean means nothing",
                param_hint="EXPORTS",
            )
    for name in ("flux", "text"):
        states = [getattr(m, name).state_dict() for m in models]
        mean = {
            k: (torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v)
            for k, v in states[0].items()
        }
        getattr(first, name).load_state_dict(mean)
    info = {
        "ae_steps": infos[0].get("ae_steps", 0),
        "transformer_steps": max(i.get("transformer_steps", 0) for i in infos),
        "averaged": [
            {"folder": str(f), **{k: v for k, v in i.items() if k != "init_from"}}
            for f, i in zip(exports, infos, strict=True)
        ],
    }
    if "decoder_steps" in infos[0]:
        info["decoder_steps"] = infos[0]["decoder_steps"]
    # the exports all were seeded from (when they are runs continued from one export)
    shared = []
    for entries in zip(*(seed_history(i.get("init_from")) for i in infos), strict=False):
        if any(e != entries[0] for e in entries):
            break
        shared.append(entries[0])
    if shared:
        info["init_from"] = shared
    folder = save_mini(out, first.preset, first.flux, first.ae, first.text, info=info)
    typer.echo(f"averaged {len(exports)} exports into {folder}")


def _check_run_preset(state: dict, out: Path, name: str) -> None:
    """A run folder trains one preset: resuming it under another would mix shapes. state: its
    checkpoint ({} for a new folder)."""
    if state:
        held = _run_preset(state)
        if held != name:
            raise typer.BadParameter(
                f"{out} holds a {held!r} run; pass --preset {held} or use another --out"
            )


def seed_run_from_export(export_dir: Path, out: Path, preset) -> None:
    """Write run checkpoints (ae.pt, flux.pt) holding a mini export's weights, so that training
    continues from them on a machine that has no run folder. No optimiser state is written (the
    Stepper starts a fresh one); the export's EMA weights become both the live and the EMA
    weights. When `preset` reads text differently from the export (byte encoder -> sentence
    encoder), the transformer's text and pooled-vector input layers start fresh and everything
    else is kept."""
    import torch

    from openkontext.model import Flux, build_text_encoder
    from openkontext.train.common import atomic_torch_save
    from openkontext.weights import load_mini

    if (out / "ae.pt").exists() or (out / "flux.pt").exists():
        raise typer.BadParameter(f"{out} already holds a run; --init-from needs an empty folder")
    model = load_mini(export_dir)
    if _ae_shape(model.preset.ae) != _ae_shape(preset.ae):
        raise typer.BadParameter(
            f"{export_dir} holds a {model.preset.name!r} model, whose autoencoder does not fit "
            f"{preset.name!r}; pass --preset {model.preset.name}",
            param_hint="--init-from",
        )
    info = json.loads((Path(export_dir) / "mini.json").read_text()).get("info", {})
    fresh = torch.optim.AdamW(model.ae.parameters()).state_dict()
    atomic_torch_save(
        {
            "params": model.ae.params.to_dict(),
            "model": model.ae.state_dict(),
            "optimizer": fresh,
            "step": info.get("ae_steps", 0),
            "done": True,
            "config": {"init_from": str(export_dir)},
            # the decoder's fine-tuning count goes on (`train decoder --steps` is a total)
            **({"decoder": {"step": info["decoder_steps"]}} if "decoder_steps" in info else {}),
        },
        out / "ae.pt",
    )
    flux = Flux(preset.flux)
    flux.init_weights()
    state, kept = flux.state_dict(), model.flux.state_dict()
    restarted = sorted(k for k, v in state.items() if k not in kept or kept[k].shape != v.shape)
    flux.load_state_dict({k: (v if k in restarted else kept[k]) for k, v in state.items()})
    same_text = type(model.preset.text) is type(preset.text) and model.preset.text == preset.text
    text = model.text if same_text else build_text_encoder(preset.text)
    if restarted:
        typer.echo(f"from {export_dir}: kept the transformer but for {', '.join(restarted)}")
    seeded_from = {"folder": str(export_dir), **{k: v for k, v in info.items() if k != "init_from"}}
    if restarted:
        seeded_from["restarted"] = restarted
    atomic_torch_save(
        {
            # Another text encoder makes a new model: its steps count from 0. Blocks added to a
            # deeper preset start as the identity, so the count goes on.
            "step": info.get("transformer_steps", 0) if same_text else 0,
            "flux": flux.state_dict(),
            "text": text.state_dict(),
            "ema_flux": flux.state_dict(),
            "ema_text": text.state_dict(),
            # no "optimizer": the Stepper starts a fresh one, over what it trains
            "preset": preset.name,
            "init_from": seed_history(info.get("init_from")) + [seeded_from],
            # a model trained with fitted positions goes on with them unless told otherwise
            "config": {"init_from": str(export_dir),
                       **({"fit_positions": True} if model.preset.fit_positions else {})},
        },
        out / "flux.pt",
    )


def seed_history(init_from: dict | list | None) -> list[dict]:
    """The exports a run was seeded from, oldest first: one entry (folder, its step counts and
    the weights that restarted) per `--init-from`. Exports before this list nested each earlier
    entry in the next one's "init_from"; they are flattened here."""
    if init_from is None:
        return []
    if isinstance(init_from, list):
        return init_from
    entry = {k: v for k, v in init_from.items() if k != "init_from"}
    if not entry.get("restarted", True):
        del entry["restarted"]
    return seed_history(init_from.get("init_from")) + [entry]


def _ae_shape(params):
    """Autoencoder params without the calibration (scale and shift), which training sets."""
    return dataclasses.replace(params, scale_factor=1.0, shift_factor=0.0)


app.command("lora")(train_lora_command)
