"""Train a LoRA on edit pairs: the base model frozen, low-rank adapters on its linear layers.

The loss is the mini trainer's own (`transformer.encode_sample` and `transformer.noised_velocity`
under `flow.flow_loss`): the edited picture noised to a logit-normal t, the input as reference
1, the velocity regressed. Latents and instruction embeddings are computed once, since the
autoencoder and the text encoder are frozen; pairs are grouped by size (one bucket per training
resolution) and each step draws its batch from one bucket.

Adapters start as the identity (down small random, up zero) and are applied at runtime with
`model.lora.applied`, so the same code trains over float, bf16 or fp8-stored weights. A step's
batch, noise and t are a function of the seed and the step number alone (`step_streams`), so a
run resumed from its checkpoint (FILE.safetensors.ckpt: adapters, optimiser, step, config)
ends on the very tensors an uninterrupted one would. The result is written in the diffusers /
PEFT layout (`weights.lora.save_lora_peft`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from openkontext import flow, imaging
from openkontext.model import LoadedModel
from openkontext.model.fp8 import FP8Linear
from openkontext.model.lora import Lora, LoraDelta, applied
from openkontext.packing import References
from openkontext.train.common import JsonlLog, atomic_torch_save, native_bf16, progress_bar
from openkontext.train.pairs import Pair
from openkontext.train.transformer import encode_sample, noised_velocity, step_streams

# Layer groups --targets names, as patterns over our (BFL) module names.
TARGETS: dict[str, str] = {
    "qkv": r"double_blocks\.\d+\.(img|txt)_attn\.qkv",
    "proj": r"double_blocks\.\d+\.(img|txt)_attn\.proj",
    "mlp": r"double_blocks\.\d+\.(img|txt)_mlp\.[02]",
    "linear1": r"single_blocks\.\d+\.linear1",
    "linear2": r"single_blocks\.\d+\.linear2",
    "mod": r"(double_blocks\.\d+\.(img|txt)_mod|single_blocks\.\d+\.modulation)\.lin",
}


@dataclass(frozen=True)
class LoraTrainConfig:
    rank: int = 8
    alpha: float = 8.0  # the adapters' output is scaled by alpha / rank
    steps: int = 500
    lr: float = 1e-3
    batch: int = 8
    targets: tuple[str, ...] = tuple(TARGETS)
    weight_decay: float = 0.0
    t_mean: float = 1.0  # logit-normal t, as the mini trainer draws it (FlowTrainConfig)
    t_std: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0
    # bf16 autocast on a CPU with bf16 hardware (see native_bf16); models held in bf16 always
    autocast_bf16: bool = dataclasses.field(default_factory=native_bf16)

    def __post_init__(self) -> None:
        check_targets(self.targets)
        for name in ("rank", "steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {self.alpha}")


class ResumeError(ValueError):
    """A checkpoint made with other settings or pairs than the run asked to continue it."""


# What a checkpoint must agree on to be resumed (the step count may grow).
HELD = ("rank", "alpha", "lr", "batch", "targets", "weight_decay", "t_mean", "t_std", "seed")


def check_targets(targets: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"unknown layer group(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(TARGETS)}")
    return tuple(dict.fromkeys(targets))


def target_layers(flux: nn.Module, targets: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every linear layer the groups name, in model order."""
    pattern = re.compile("|".join(f"(?:{TARGETS[t]})" for t in targets))
    return [
        (name, m.in_features, m.out_features)
        for name, m in flux.named_modules()
        if isinstance(m, (nn.Linear, FP8Linear)) and pattern.fullmatch(name)
    ]


def new_lora(name: str, flux: nn.Module, cfg: LoraTrainConfig, device) -> Lora:
    """Adapters that start as the identity: down uniform in +-1/sqrt(in) (PEFT's kaiming
    start), up zero, scale alpha / rank; float32 leaves that require grad."""
    gen = torch.Generator().manual_seed(cfg.seed)
    lora = Lora(name)
    for layer, fan_in, fan_out in target_layers(flux, cfg.targets):
        down = (torch.rand(cfg.rank, fan_in, generator=gen) * 2 - 1) / math.sqrt(fan_in)
        up = torch.zeros(fan_out, cfg.rank)
        lora.add(layer, LoraDelta(down.to(device).requires_grad_(), up.to(device).requires_grad_(),
                                  cfg.alpha / cfg.rank))
    return lora


def lora_tensors(lora: Lora) -> list[Tensor]:
    return [t for deltas in lora.deltas.values() for d in deltas for t in (d.down, d.up)]


def detached(lora: Lora, name: str | None = None) -> Lora:
    """A CPU copy of the adapters, no longer part of any graph."""
    out = Lora(name or lora.name)
    for layer, deltas in lora.deltas.items():
        for d in deltas:
            out.add(layer, LoraDelta(d.down.detach().cpu().clone(), d.up.detach().cpu().clone(),
                                     d.scale, d.rows))
    return out


# -- the pairs as tensors ----------------------------------------------------------------------


@dataclass
class Bucket:
    """The pairs of one training size, encoded once."""

    size: tuple[int, int]  # (width, height) in pixels
    names: list[str]
    data: Tensor  # (n, N, C) packed latents of the edited pictures, float32, on the device
    refs: References  # the inputs' tokens, (n, N, C) and their ids
    txt: Tensor  # (n, L, D) instruction embeddings
    vec: Tensor  # (n, D) pooled embeddings

    def latent_size(self, downsample: int) -> tuple[int, int]:
        return self.size[1] // downsample, self.size[0] // downsample


@torch.no_grad()
def encode_pairs(model: LoadedModel, pairs: list[Pair], bf16: bool) -> list[Bucket]:
    """Group the pairs by size and encode them: latents with `encode_sample`, instructions with
    the model's text encoder (each bucket in one batch)."""
    groups: dict[tuple[int, int], list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(pair.size, []).append(pair)
    buckets = []
    for size, members in groups.items():
        sources, targets = (
            imaging.image_to_tensor(images, model.dtype, model.device)
            for images in ([p.source for p in members], [p.target for p in members])
        )
        with model.using(model.ae) as ae:
            data, refs = encode_sample(ae, targets, sources, bf16, model.preset.position_span)
        with model.using(model.text) as text, torch.autocast(model.device.type, torch.bfloat16,
                                                             enabled=bf16):
            txt, vec = text.encode([p.instruction for p in members])
        buckets.append(Bucket(size, [p.name for p in members], data, refs,
                              txt.to(model.device), vec.to(model.device)))
    return buckets


def pairs_digest(pairs: list[Pair]) -> str:
    """What a checkpoint remembers of the pairs it was trained on: names, instructions, sizes."""
    text = "\n".join(f"{p.name}\t{p.instruction}\t{p.size}" for p in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- one step ----------------------------------------------------------------------------------


def draw_batch(buckets: list[Bucket], batch: int, rng) -> tuple[Bucket, list[int]]:
    """A bucket (by its share of the pairs) and up to `batch` distinct pairs of it."""
    bucket = rng.choices(buckets, weights=[len(b.names) for b in buckets])[0]
    return bucket, sorted(rng.sample(range(len(bucket.names)), min(batch, len(bucket.names))))


def guidance_for(model: LoadedModel, batch: int) -> Tensor | None:
    """The distilled guidance a model that embeds it trains at (its default), else None."""
    if not model.flux.params.guidance_embed:
        return None
    return torch.full((batch,), model.preset.default_guidance, device=model.device)


def batch_loss(model: LoadedModel, bucket: Bucket, index: list[int], gen: torch.Generator,
               cfg: LoraTrainConfig, bf16: bool) -> Tensor:
    """Per-pair flow losses (B,) of the pairs `index` of `bucket`, with whatever adapters
    the transformer wears."""
    data = bucket.data[index]
    refs = References(bucket.refs.tokens[index], bucket.refs.ids[index])
    pred, noise, _ = noised_velocity(
        model.flux, data, refs, bucket.latent_size(model.ae.params.downsample),
        bucket.txt[index], bucket.vec[index], gen, cfg.t_mean, cfg.t_std, bf16,
        guidance_for(model, len(index)), model.preset.position_span,
    )
    return flow.flow_loss(pred, data, noise)


def uses_bf16(model: LoadedModel, cfg: LoraTrainConfig) -> bool:
    return model.dtype != torch.float32 or (model.device.type == "cpu" and cfg.autocast_bf16)


@torch.no_grad()
def pairs_loss(model: LoadedModel, buckets: list[Bucket], lora: Lora | None,
               cfg: LoraTrainConfig, draws: int = 4, seed: int = 12345) -> float:
    """Mean flow loss over every pair, `draws` fixed (noise, t) draws each, in batches of
    `cfg.batch`: the same numbers before and after training, so the two compare."""
    bf16, total, count = uses_bf16(model, cfg), 0.0, 0
    with applied(model.flux, [(lora, 1.0)] if lora is not None else []):
        for k, bucket in enumerate(buckets):
            for at in range(0, len(bucket.names), cfg.batch):
                index = list(range(at, min(at + cfg.batch, len(bucket.names))))
                for d in range(draws):
                    gen = torch.Generator().manual_seed(seed + 100_000 * k + 100 * at + d)
                    losses = batch_loss(model, bucket, index, gen, cfg, bf16)
                    total, count = total + losses.sum().item(), count + len(losses)
    return total / count


# -- the run -----------------------------------------------------------------------------------


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _load_checkpoint(path: Path, cfg: LoraTrainConfig, digest: str, lora: Lora,
                     opt: torch.optim.Optimizer) -> int:
    """Load adapters and optimiser from `path` into `lora` and `opt` -> the step it reached;
    ResumeError when it was made with other settings or pairs."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    def shown(value) -> str:
        return ",".join(value) if isinstance(value, (list, tuple)) else str(value)

    held, asked = state["config"], dataclasses.asdict(cfg)
    differ = [k for k in HELD if shown(held.get(k)) != shown(asked[k])]
    if differ:
        raise ResumeError(f"{path} was trained with other settings ("
                          + ", ".join(f"{k} {shown(held.get(k))}, not {shown(asked[k])}"
                                      for k in differ)
                          + "); pass those, or --no-resume to start again")
    if state["pairs"] != digest:
        raise ResumeError(f"{path} was trained on other pairs; use --no-resume to start again")
    with torch.no_grad():
        for layer, deltas in lora.deltas.items():
            for d, (down, up) in zip(deltas, state["lora"][layer], strict=True):
                d.down.copy_(down)
                d.up.copy_(up)
    opt.load_state_dict(state["optimizer"])
    return state["step"]


@dataclass
class LoraRun:
    lora: Lora  # the trained adapters (CPU, detached)
    steps: int  # steps trained in all, resumed ones included
    seconds: float  # this call's training time
    losses: list[float]  # this call's per-step batch losses


StepHook = Callable[[int, float], None]  # (step done, its loss); may raise to stop a run


def train_lora(
    model: LoadedModel,
    pairs: list[Pair],
    out: str | Path,
    cfg: LoraTrainConfig = LoraTrainConfig(),
    resume: bool = True,
    on_step: StepHook | None = None,
) -> LoraRun:
    """Train adapters on `pairs` and write them to `out` (PEFT layout). Checkpoints go to
    `out`.ckpt every `cfg.checkpoint_every` steps and at the end; with `resume`, a checkpoint
    found there is continued (ResumeError if it was made with other settings or pairs)."""
    from openkontext.weights.lora import save_lora_peft

    out = Path(out)
    ckpt = checkpoint_path(out)
    log = JsonlLog(out.with_name(out.name + ".log.jsonl"))
    bf16, digest = uses_bf16(model, cfg), pairs_digest(pairs)
    # 1. The frozen base, the pairs encoded once, fresh adapters and their optimiser.
    model.flux.requires_grad_(False)
    buckets = encode_pairs(model, pairs, bf16)
    lora = new_lora(out.stem, model.flux, cfg, model.device)
    params = lora_tensors(lora)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    step = 0
    if resume and ckpt.exists():
        step = _load_checkpoint(ckpt, cfg, digest, lora, opt)

    def save() -> None:
        atomic_torch_save({
            "step": step,
            "lora": {k: [(d.down.detach().cpu(), d.up.detach().cpu()) for d in v]
                     for k, v in lora.deltas.items()},
            "optimizer": opt.state_dict(),
            "config": dataclasses.asdict(cfg),
            "preset": model.preset.name,
            "pairs": digest,
            # a step's batch, noise and t come from step_streams(seed, step): nothing else to keep
            "rng": {"streams": "step_streams", "seed": cfg.seed},
        }, ckpt)

    # 2. Steps: a batch from one bucket, the flow loss, AdamW on the adapters alone.
    losses: list[float] = []
    started = time.perf_counter()
    with applied(model.flux, [(lora, 1.0)]), progress_bar("lora") as bar:
        task = bar.add_task("lora", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            rng, gen = step_streams(cfg.seed, step)
            bucket, index = draw_batch(buckets, cfg.batch, rng)
            loss = batch_loss(model, bucket, index, gen, cfg, bf16).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            losses.append(loss.item())
            if step % 10 == 0 or step == cfg.steps:
                recent = losses[-10:]
                log.write(step=step, loss=round(sum(recent) / len(recent), 5))
                bar.update(task, completed=step, info=f"loss {sum(recent) / len(recent):.4f}")
            if step % cfg.checkpoint_every == 0:
                save()
            if on_step is not None:
                on_step(step, losses[-1])
    # 3. The checkpoint (to go on from later) and the LoRA file.
    save()
    trained = detached(lora)
    save_lora_peft(trained, out)
    return LoraRun(trained, step, time.perf_counter() - started, losses)
