"""`openkontext train lora`: a LoRA from a folder of edit pairs (see `train.pairs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TARGETS_HELP = "layer groups to adapt, comma-separated: qkv, proj, mlp, linear1, linear2, mod"


def train_lora_command(
    pairs: Annotated[Path, typer.Option(
        help="folder of NAME.png + NAME_after.png + NAME.txt, or with a pairs.jsonl")],
    out: Annotated[Path, typer.Option(help="the LoRA file to write (.safetensors)")],
    weights: Annotated[str | None, typer.Option(
        help="base model (default: embedded mini; kontext-dev, a folder or a file)")] = None,
    rank: Annotated[int, typer.Option(min=1, help="adapter rank")] = 8,
    alpha: Annotated[float, typer.Option(help="adapter scale numerator: alpha / rank")] = 8.0,
    steps: Annotated[int, typer.Option(min=1, help="steps (total, including resumed)")] = 500,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-3,
    batch: Annotated[int, typer.Option(min=1, help="pairs per step (of one size)")] = 8,
    targets: Annotated[str, typer.Option(help=TARGETS_HELP)] = "qkv,proj,mlp,linear1,linear2,mod",
    seed: Annotated[int, typer.Option(min=0, help="draws the adapters, batches, noise and t")] = 0,
    checkpoint_every: Annotated[int, typer.Option(
        min=1, help="write OUT.ckpt every N steps")] = 100,
    resume: Annotated[bool, typer.Option(help="continue from OUT.ckpt when there is one")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default)")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, mps (default: the best)")] = None,
    weights_dtype: Annotated[str | None, typer.Option(
        help="fp8 keeps the frozen base in fp8 (kontext-dev on a small GPU)")] = None,
) -> None:
    """Train a LoRA on edit pairs: the base model frozen, adapters written in the diffusers /
    PEFT layout (diffusers' load_lora_weights and `--lora` both read it)."""
    import torch

    from openkontext.devices import choose_device, choose_storage
    from openkontext.train.lora import LoraTrainConfig, ResumeError, check_targets, train_lora
    from openkontext.train.pairs import PairsError, read_pairs
    from openkontext.weights import WeightsError, load_model

    # 1. Options, the model and every pair, all checked before training starts.
    if out.suffix != ".safetensors":
        raise typer.BadParameter(f"{out}: expected a .safetensors file name", param_hint="--out")
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder", param_hint="--out")
    try:
        groups = check_targets([t.strip() for t in targets.split(",") if t.strip()])
        cfg = LoraTrainConfig(rank=rank, alpha=alpha, steps=steps, lr=lr, batch=batch,
                              targets=groups, seed=seed, checkpoint_every=checkpoint_every)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        read_pairs(pairs, None)  # every file checked before a large model loads
    except PairsError as e:
        raise typer.BadParameter(str(e), param_hint="--pairs") from None
    if threads:
        torch.set_num_threads(threads)
    try:
        dev = choose_device(device)
        dtype, fp8 = choose_storage(dev, None, weights_dtype)
        model = load_model(weights, dev, dtype, fp8=fp8)
    except (ValueError, WeightsError) as e:
        raise typer.BadParameter(str(e), param_hint="--weights") from None
    training = read_pairs(pairs, model.preset)
    sizes = sorted({p.size for p in training})
    typer.echo(f"{len(training)} pairs in {len(sizes)} size(s) "
               f"({', '.join(f'{w}x{h}' for w, h in sizes)}); {model.preset.name} frozen")
    out.parent.mkdir(parents=True, exist_ok=True)
    # 2. Train, checkpointing beside --out.
    try:
        run = train_lora(model, training, out, cfg, resume)
    except ResumeError as e:
        raise typer.BadParameter(str(e), param_hint="--resume") from None
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, rank {rank}, "
               f"{len(run.lora.deltas)} layers) after {run.steps} steps")
