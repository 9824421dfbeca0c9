"""Stage 1: the mini autoencoder, trained on Shapes World renders (with and without filters).

Loss: L1 + MSE reconstruction on a sample of the posterior (object pixels weighted up, see
`reconstruction_loss`), plus a small KL term that keeps the latent smooth enough to be a good
space for the flow model. Afterwards the latent's mean and standard deviation over fresh scenes
set `shift_factor` and `scale_factor`, so normalised latents have zero mean and unit variance,
as the FLUX autoencoder's do on photographs.

`train_decoder` fine-tunes the decoder of a finished autoencoder alone, leaving the latents (and
a transformer trained on them) as they are.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from openkontext.model import AutoEncoder, AutoEncoderParams
from openkontext.train.common import JsonlLog, atomic_torch_save, native_bf16, progress_bar
from openkontext.world.render import apply_filter, render_batch, to_tensor
from openkontext.world.scene import FILTERS, random_scene


@dataclass(frozen=True)
class AETrainConfig:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-4
    filter_prob: float = 0.3
    object_weight: float = 4.0  # see reconstruction_loss (since 2026-11-22; the shipped run used 0)
    # bf16 autocast where the CPU has bf16 hardware (see native_bf16), fp32 elsewhere
    autocast_bf16: bool = dataclasses.field(default_factory=native_bf16)
    checkpoint_every: int = 250
    seed: int = 0


def ae_batch(rng: random.Random, batch: int, size: int, filter_prob: float) -> torch.Tensor:
    """Random scenes, some passed through a global filter: (B, 3, size, size) in [-1, 1]."""
    images = render_batch([random_scene(rng) for _ in range(batch)], size)
    for i in range(batch):
        if rng.random() < filter_prob:
            images[i] = apply_filter(images[i], rng.choice(sorted(FILTERS)))
    return to_tensor(images)


def object_mask(x: torch.Tensor, tolerance: float = 0.1) -> torch.Tensor:
    """(B, 1, H, W) float, 1 where a pixel differs from its image's median colour (the
    background, which covers most of every Shapes World picture) or borders such a pixel."""
    median = x.flatten(2).median(dim=2).values[..., None, None]
    away = ((x - median).abs() > tolerance).any(dim=1, keepdim=True).float()
    return F.max_pool2d(away, 3, stride=1, padding=1)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, object_weight: float) -> torch.Tensor:
    """L1 + squared error, with object pixels (`object_mask`) weighing 1 + object_weight: they
    are a few percent of a picture, but they are what an edit is about and where nearly all the
    reconstruction error is. Normalised by the mean weight, so 0 gives plain L1 + MSE."""
    weight = 1 + object_weight * object_mask(x)
    err = recon - x
    return ((err.abs() + err.pow(2)) * weight).mean() / weight.mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1], measured on the 0..255 scale."""
    a = ((a.clamp(-1, 1) + 1) * 127.5).round()
    b = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


@torch.no_grad()
def calibrate(ae: AutoEncoder, size: int, n: int = 512, seed: int = 12345) -> AutoEncoderParams:
    """Params with shift/scale set so that normalised latents have mean 0 and std 1."""
    rng = random.Random(seed)
    means = [ae.encode_moments(ae_batch(rng, 64, size, 0.3))[0] for _ in range(n // 64)]
    z = torch.cat(means)
    shift, std = z.mean().item(), z.std().item()
    return dataclasses.replace(
        ae.params, shift_factor=round(shift, 4), scale_factor=round(1 / std, 4)
    )


def train_autoencoder(
    params: AutoEncoderParams, out: Path, cfg: AETrainConfig, resume: bool = True
) -> AutoEncoder:
    """Train (or resume) and return the calibrated autoencoder; checkpoints in out/ae.pt."""
    ckpt_path = out / "ae.pt"
    log = JsonlLog(out / "ae_log.jsonl")
    torch.manual_seed(cfg.seed)
    ae = AutoEncoder(params)
    # Start with a narrow posterior (std ~0.05): with the default std ~1 the decoder first sees
    # mostly noise and reconstruction stalls near the mean colour for hundreds of steps.
    with torch.no_grad():
        ae.encoder.conv_out.bias[params.z_channels :].fill_(-6.0)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    step = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        ae = AutoEncoder(AutoEncoderParams.from_dict(state["params"]))
        ae.load_state_dict(state["model"])
        opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        if state.get("done"):
            return ae.eval()
    rng = random.Random(cfg.seed * 1_000_003 + step)
    size = params.resolution

    def save(done: bool = False) -> None:
        atomic_torch_save(
            {
                "params": ae.params.to_dict(),
                "model": ae.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "done": done,
                "config": dataclasses.asdict(cfg),
            },
            ckpt_path,
        )

    with progress_bar("autoencoder") as bar:
        task = bar.add_task("ae", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for group in opt.param_groups:
                group["lr"] = lr
            x = ae_batch(rng, cfg.batch_size, size, cfg.filter_prob)
            with torch.autocast("cpu", torch.bfloat16, enabled=cfg.autocast_bf16):
                mean, logvar = ae.encode_moments(x)
                mean, logvar = mean.float(), logvar.float().clamp(-30, 20)
                z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
                recon = ae.decoder(z).float()
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
            loss = reconstruction_loss(recon, x, cfg.object_weight) + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 25 == 0 or step == cfg.steps:
                with torch.no_grad():
                    p = psnr(ae.decoder(mean), x).median().item()
                log.write(
                    step=step,
                    loss=round(loss.item(), 5),
                    kl=round(kl.item(), 4),
                    psnr=round(p, 2),
                    lr=lr,
                )
                bar.update(task, completed=step, info=f"loss {loss.item():.4f} psnr {p:.1f} dB")
            if step % cfg.checkpoint_every == 0:
                save()
    ae.eval()
    ae.params = calibrate(ae, size)
    ae.scale_factor, ae.shift_factor = ae.params.scale_factor, ae.params.shift_factor
    step = cfg.steps
    save(done=True)
    return ae


def load_finished_autoencoder(path: Path) -> tuple[AutoEncoder, dict]:
    """A run's ae.pt whose stage 1 has finished: (the autoencoder, the checkpoint dict)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no autoencoder checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not state.get("done"):
        raise ValueError(f"{path}: the autoencoder has not finished training")
    ae = AutoEncoder(AutoEncoderParams.from_dict(state["params"]))
    ae.load_state_dict(state["model"])
    return ae, state


@dataclass(frozen=True)
class DecoderTrainConfig:
    steps: int = 5000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    filter_prob: float = 0.3
    object_weight: float = 4.0  # see reconstruction_loss
    # bf16 autocast where the CPU has bf16 hardware (see native_bf16), fp32 elsewhere
    autocast_bf16: bool = dataclasses.field(default_factory=native_bf16)
    checkpoint_every: int = 100
    seed: int = 1


def train_decoder(out: Path, cfg: DecoderTrainConfig) -> AutoEncoder:
    """Fine-tune only the decoder of a finished autoencoder (out/ae.pt), on the posterior mean.

    The encoder, and with it the latent space and its shift/scale, stays exactly as it was, so a
    transformer trained on these latents stays valid and can keep training at the same time.
    The decoder's own step count and optimiser live in ae.pt under "decoder"; each checkpoint
    rewrites ae.pt atomically, so `train export` always sees a consistent autoencoder.
    """
    ckpt_path = out / "ae.pt"
    ae, state = load_finished_autoencoder(ckpt_path)
    ae.encoder.requires_grad_(False).eval()
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=cfg.lr, weight_decay=0.0)
    held = state.get("decoder", {})
    step = held.get("step", 0)
    if "optimizer" in held:
        opt.load_state_dict(held["optimizer"])
    # One warm-up and cosine per cycle: a run resumed towards the same total continues its
    # cycle; a larger total starts a new one from the current step.
    start = held.get("cycle_start", 0) if held.get("cycle_end") == cfg.steps else step
    log = JsonlLog(out / "decoder_log.jsonl")
    rng = random.Random(cfg.seed * 1_000_003 + step)
    size = ae.params.resolution

    def save() -> None:
        state["model"] = ae.state_dict()
        state["decoder"] = {
            "step": step,
            "optimizer": opt.state_dict(),
            "cycle_start": start,
            "cycle_end": cfg.steps,
            "config": dataclasses.asdict(cfg),
        }
        atomic_torch_save(state, ckpt_path)

    with progress_bar("decoder") as bar:
        task = bar.add_task("decoder", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            done = (step - start) / (cfg.steps - start)
            warm = min(1.0, (step - start + 1) / cfg.warmup)
            lr = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * done))
            for group in opt.param_groups:
                group["lr"] = lr
            x = ae_batch(rng, cfg.batch_size, size, cfg.filter_prob)
            with torch.autocast("cpu", torch.bfloat16, enabled=cfg.autocast_bf16):
                with torch.no_grad():
                    mean, _ = ae.encode_moments(x)
                recon = ae.decoder(mean).float()
            loss = reconstruction_loss(recon, x, cfg.object_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.decoder.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 25 == 0 or step == cfg.steps:
                p = psnr(recon.detach(), x).median().item()
                log.write(step=step, loss=round(loss.item(), 5), psnr=round(p, 2), lr=lr)
                bar.update(task, completed=step, info=f"loss {loss.item():.4f} psnr {p:.1f} dB")
            if step % cfg.checkpoint_every == 0:
                save()
    save()
    return ae.eval()
