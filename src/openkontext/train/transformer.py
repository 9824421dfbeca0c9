"""Stage 2: the mini transformer (and a byte-level text encoder, when the preset has one: the
sentence encoder of the current preset is frozen) on an endless Shapes World stream of edits
(the source image as reference 1) and generations (no reference).

The autoencoder from stage 1 is frozen. Each step draws fresh samples, encodes them, noises
the target latent along the rectified-flow path at t ~ logit-normal and regresses the velocity.
Loss is logged per band of t; every `eval_every` steps the EMA model samples a fixed set of
edits through the pipeline and its PSNR to ground truth is logged beside the identity baseline.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from openkontext import flow
from openkontext.model import AutoEncoder, Flux, LoadedModel, ModelPreset, build_text_encoder
from openkontext.packing import References, image_ids, pack, text_ids
from openkontext.resolution import preferred_resolutions
from openkontext.sampling import run_tensors
from openkontext.train.autoencoder import object_mask, psnr
from openkontext.train.common import EMA, JsonlLog, atomic_torch_save, native_bf16, progress_bar
from openkontext.world.references import MAX_REFERENCES, reference_batch
from openkontext.world.sampling import (
    check_contrast,
    check_kind_weights,
    check_kinds,
    edit_batch,
    edit_batch_from,
    generation_batch,
    sample_edit,
)

T_BANDS = (0.0, 0.25, 0.5, 0.75, 1.0)
# What a sample is edited from: one image (B, 3, H, W), image 1 and further references, or None
Sources = torch.Tensor | list[torch.Tensor] | None


@dataclass(frozen=True)
class FlowTrainConfig:
    steps: int = 40_000
    edit_batch: int = 24
    generation_batch: int = 8
    lr: float = 4e-4
    warmup: int = 300
    # The last `cooldown` steps before `steps` lower the learning rate linearly to 0 (constant
    # before: a run resumed towards a larger total goes back to the full rate).
    cooldown: int = 0
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    # logit-normal t: sigmoid(N(t_mean, t_std)). Centred at 0 (the runs to 6,000 steps) only 1.4% of
    # samples had t > 0.9, where the colour an instruction asks for and the untouched parts of
    # the reference are known from the text and reference alone (x_t still shows them at lower
    # t); the model never learnt to read colour words. 1.0 puts 12% there (docs/mini.md).
    t_mean: float = 1.0
    t_std: float = 1.0
    # {edit kind: weight} for drawing the kinds of a step's edits (unlisted kinds weigh 1);
    # None draws them uniformly
    kind_weights: dict[str, float] | None = None
    # Tokens that hold an object (or part of one) in the target or the reference weigh
    # 1 + object_weight in each sample's loss. Most tokens of a picture are plain background,
    # which the model gets right early; the errors left are in objects (docs/mini.md, `mini`
    # 17,900 to 30,000 steps).
    object_weight: float = 0.0
    # Tokens where an edit's target differs from its source (the change mask) weigh
    # 1 + change_weight in that sample's loss. A recolour changes about a tenth of the tokens,
    # so in a plain mean the words' one effect is nearly invisible next to copying the reference
    # (docs/mini.md, 8,800 to 10,600 steps). Generations have no source and are not weighted by it.
    change_weight: float = 0.0
    # The edit kinds whose samples object_weight and change_weight act on; None: every edit
    # (and the generations, for object_weight). Recolours are the floor's last miss: the model
    # paints the asked colour on another object (docs/mini.md, 44,600 to 49,400 steps), and
    # weighting every kind's changed tokens (8,800 to 17,000 steps) cost the other kinds what they
    # had learnt to copy. Objects and changed tokens 2x in recolours only did not change which
    # object gets painted in 2,600 steps (49,400 to 52,000 steps).
    weighted_kinds: list[str] | None = None
    # Each sample's instruction or description is replaced by "" with this probability, so the
    # model also learns the unconditional velocity that classifier-free guidance needs
    # (`guidance` > 1 on a model without a guidance embedding; docs/mini.md, 5,600 to 8,800
    # steps).
    text_drop: float = 0.0
    # This fraction of the edits that act on one named object (recolor, remove, move, resize,
    # reshape) come with a twin in the batch: the same kind on the same picture naming another
    # object. A third of the failed edits return the input: the model knows the kind of edit but
    # not where the named object is (docs/mini.md, 17,000 to 21,000 steps); a twin shows it two
    # answers that differ only by the object word (27,000 to 30,200 steps).
    contrast: float = 0.0
    # This fraction of the recolours come with a twin that recolours the same object to another
    # colour, so the two answers differ only in that object's colour. Where recolours failed at
    # 41,000 steps the named object mostly kept its old colour (docs/mini.md).
    colour_contrast: float = 0.0
    # Contrast twins name, where the picture has one, an object of a shape alike the named one's
    # (circle / square, triangle / star / diamond): more than half of the recolour misses paint
    # such an object (docs/mini.md, 49,400 to 52,000 steps). In 3,000 steps they did not make
    # those misses rarer (49,400 to 52,400 steps).
    alike_twins: bool = False
    # This fraction of the steps trains on a canvas of another aspect ratio than square: one of
    # the preset's preferred resolutions (`resolution.preferred_resolutions`), drawn uniformly;
    # the step's edits, generations and reference edits all take it, so a batch stays one size.
    # Trained on squares alone, the model recoloured 12% of 3:2..7:3 scenes right (docs/mini.md).
    non_square: float = 0.0
    # On a non-square step, the step's generations are drawn on the native square as well as on
    # its canvas, so the square generations keep their full share of practice. With half of the
    # steps non-square the square generations fell from 65% to 35-50% (docs/mini.md, 56,800 to
    # 58,800 steps): they have no input picture to copy from and got half the steps. With a
    # quarter of the steps non-square they held 60% with this, 50% without (58,600 steps).
    square_generations: bool = False
    # Position ids span the native square on every canvas (`ModelPreset.fit_positions`, which
    # the run's export then has). On the shipped export, trained on squares with plain token
    # counts, fitted ids alone took the non-square recolor/background/remove/add edits from 56%
    # to 84% (docs/mini.md, "Fitted positions").
    fit_positions: bool = False
    # Reference edits (`world.references`: an object or a background colour taken from image
    # 2..4) in each step, after the edits and generations; a step draws how many references
    # (1..3) all of its reference edits have.
    reference_batch: int = 0
    checkpoint_every: int = 200
    eval_every: int = 1000
    eval_cases: int = 48
    eval_steps: int = 16
    # bf16 autocast where the CPU has bf16 hardware (see native_bf16), fp32 elsewhere
    autocast_bf16: bool = dataclasses.field(default_factory=native_bf16)
    seed: int = 0

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        check_loss_weight(self.object_weight)
        check_loss_weight(self.change_weight)
        check_weighted_kinds(self.weighted_kinds)
        check_text_drop(self.text_drop)
        check_contrast(self.contrast)
        check_contrast(self.colour_contrast)
        check_contrast(self.non_square)
        if self.reference_batch < 0:
            raise ValueError(f"reference_batch must be >= 0, got {self.reference_batch}")


# Settings a checkpoint does not hand on: the length of the schedule is asked for anew, and bf16
# autocast follows the machine the run goes on, not the one it started on
NOT_HELD = ("steps", "cooldown", "autocast_bf16")


def held_settings(config: dict) -> dict:
    """The FlowTrainConfig settings a run's checkpoint `config` holds, as keyword arguments for
    FlowTrainConfig: every field but NOT_HELD, a field newer than the checkpoint at its default
    (so {} gives the defaults)."""
    return {
        f.name: config.get(f.name, f.default)
        for f in dataclasses.fields(FlowTrainConfig)
        if f.name not in NOT_HELD
    }


def check_loss_weight(weight: float) -> float:
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"must be a finite number >= 0, got {weight}")
    return weight


def check_weighted_kinds(kinds: list[str] | None) -> list[str] | None:
    """None, or a non-empty list of known edit kinds (as a new list, duplicates dropped)."""
    return None if kinds is None else list(dict.fromkeys(check_kinds(kinds)))


def check_lr(lr: float) -> float:
    if not (math.isfinite(lr) and 0 < lr <= 1e-2):
        raise ValueError(f"must be a learning rate in (0, 0.01], got {lr}")
    return lr


def check_text_drop(rate: float) -> float:
    if not (math.isfinite(rate) and 0 <= rate < 1):
        raise ValueError(f"must be a fraction in [0, 1), got {rate}")
    return rate


def drop_texts(texts: list[str], rate: float, rng: random.Random) -> list[str]:
    """`texts` with each replaced by "" with probability `rate`."""
    return [("" if rng.random() < rate else text) for text in texts] if rate else list(texts)


def token_mask(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, N) float: 1 for each packed token (a `patch` x `patch` pixel square, in packing
    order) holding a pixel of the (B, H, W) mask, else 0."""
    return F.max_pool2d(mask[:, None].float(), patch).flatten(1)


def object_tokens(images: list[torch.Tensor], patch: int) -> torch.Tensor:
    """(B, N) float: 1 for each packed token where any of the images has an object pixel
    (`object_mask`), else 0."""
    return torch.stack([token_mask(object_mask(x)[:, 0], patch) for x in images]).amax(dim=0)


def latent_size(ae: AutoEncoder, images: torch.Tensor) -> tuple[int, int]:
    """(height, width) of the latents of (B, 3, H, W) images."""
    return images.shape[-2] // ae.params.downsample, images.shape[-1] // ae.params.downsample


def encode_sample(
    ae: AutoEncoder, target: torch.Tensor, source: Sources, bf16: bool, span: int | None = None
) -> tuple[torch.Tensor, References | None]:
    """The frozen autoencoder's half of a training sample: target (B, 3, H, W) in [-1, 1] ->
    packed float latents (B, N, C); source (an edit's input, or a list: the input then the
    other reference images; None for a generation) -> their reference tokens (positions as
    `packing.image_ids` with `span`)."""
    sources = [source] if isinstance(source, torch.Tensor) else source
    # The frozen encoder runs in bf16 too where that is fast, and the latents' rounding error
    # (~0.4%) is far below the noise the flow adds.
    with torch.no_grad(), torch.autocast(target.device.type, torch.bfloat16, enabled=bf16):
        data = pack(ae.encode(target)).float()
        refs = (References.from_latents([ae.encode(s).float() for s in sources], span)
                if sources else None)
    return data, refs


def noised_velocity(
    flux: Flux,
    data: torch.Tensor,
    refs: References | None,
    size: tuple[int, int],
    txt: torch.Tensor,
    vec: torch.Tensor,
    gen: torch.Generator,
    t_mean: float,
    t_std: float,
    bf16: bool,
    guidance: torch.Tensor | None = None,
    span: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transformer's half: noise the packed latents `data` (B, N, C) of latent `size`
    (h, w) to a logit-normal t, drawn with `gen` (noise first, then t), and predict the
    velocity with the references after the target tokens -> (prediction (B, N, C), noise, t (B,)),
    for `flow.flow_loss(prediction, data, noise)`. `guidance` (B,): for a model that embeds it;
    `span`: as for `packing.image_ids` (the model's `ModelPreset.position_span`)."""
    b, n, _ = data.shape
    device = data.device
    noise = torch.randn(data.shape, generator=gen).to(device)
    t = flow.sample_t_logit_normal(b, t_mean, t_std, generator=gen).to(device)
    x = flow.interpolate(data, noise, t)
    ids = image_ids(b, *size, device=device, span=span)
    if refs is not None:
        x, ids = torch.cat((x, refs.tokens), 1), torch.cat((ids, refs.ids), 1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = flux(
            img=x, img_ids=ids, txt=txt, txt_ids=text_ids(b, txt.shape[1], device=device),
            timesteps=t, y=vec, guidance=guidance,
        )
    return pred[:, :n], noise, t


class Stepper:
    """Holds the trainable modules and runs one optimisation step."""

    def __init__(self, preset: ModelPreset, ae: AutoEncoder, cfg: FlowTrainConfig):
        self.preset, self.cfg, self.ae = preset, cfg, ae.eval().requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.flux = Flux(preset.flux)
        self.flux.init_weights()
        self.text = build_text_encoder(preset.text)
        self.params = [
            p for p in (*self.flux.parameters(), *self.text.parameters()) if p.requires_grad
        ]  # a frozen sentence encoder has none
        self.opt = torch.optim.AdamW(
            self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
        )
        self.ema_flux = EMA(self.flux, cfg.ema_decay)
        text_trained = any(p.requires_grad for p in self.text.parameters())
        self.ema_text = EMA(self.text, cfg.ema_decay) if text_trained else None
        self.step = self.warm_from = 0  # warm-up counts from a fresh optimiser's first step
        self.init_from: dict | None = None  # where a seeded run's weights came from

    def loss(
        self,
        target: torch.Tensor,
        prompts: list[str],
        source: Sources,
        gen: torch.Generator,
        changed: torch.Tensor | None = None,
        kinds: list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample losses (B,) to train on (object and changed tokens weighted, see
        `object_weight` and `change_weight`; `changed` is the edits' (B, H, W) change mask and
        `kinds` their kinds, None for generations), the same unweighted (B,) and their t (B,)
        for one sub-batch."""
        bf16 = self.cfg.autocast_bf16
        span = self.preset.position_span
        data, refs = encode_sample(self.ae, target, source, bf16, span)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            txt, vec = self.text.encode(prompts)
        pred, noise, t = noised_velocity(
            self.flux, data, refs, latent_size(self.ae, target), txt, vec, gen,
            self.cfg.t_mean, self.cfg.t_std, bf16, span=span,
        )
        plain = flow.flow_loss(pred, data, noise)
        first = source[0] if isinstance(source, list) else source
        weight = self.token_weight(target, first, changed, kinds)
        if weight is None:
            return plain, plain, t
        return flow.flow_loss(pred, data, noise, weight), plain, t

    def token_weight(
        self,
        target: torch.Tensor,
        source: torch.Tensor | None,
        changed: torch.Tensor | None,
        kinds: list[str] | None = None,
    ) -> torch.Tensor | None:
        """(B, N) loss weight of each token, or None when every token weighs the same (`kinds`
        as for `loss`: samples of a kind outside `weighted_kinds` weigh each token 1)."""
        cfg, patch = self.cfg, self.preset.latent_multiple  # a token's side in pixels
        use_changed = cfg.change_weight and changed is not None
        if not (cfg.object_weight or use_changed):
            return None
        weighted = None  # every sample
        if cfg.weighted_kinds is not None:
            if kinds is None:  # generations
                return None
            weighted = torch.tensor([kind in cfg.weighted_kinds for kind in kinds])
            if not weighted.any():
                return None
        tokens = (target.shape[-2] // patch) * (target.shape[-1] // patch)
        weight = torch.ones(target.shape[0], tokens)
        if cfg.object_weight:
            images = [target] if source is None else [target, source]
            weight = weight + cfg.object_weight * object_tokens(images, patch)
        if use_changed:
            weight = weight + cfg.change_weight * token_mask(changed, patch)
        if weighted is not None:
            weight = torch.where(weighted[:, None], weight, 1.0)
        return weight

    def canvas(self) -> int | tuple[int, int]:
        """This step's canvas: the native square, or with probability `non_square` one of the
        preset's other preferred (width, height), from a stream of its own so that runs with and
        without draw the same samples."""
        cfg = self.cfg
        draw = random.Random(f"{cfg.seed}:canvas:{self.step}")
        if not (cfg.non_square and draw.random() < cfg.non_square):
            return self.preset.native_size
        return draw.choice([s for s in preferred_resolutions(self.preset) if s[0] != s[1]])

    def train_step(self, rng: random.Random, gen: torch.Generator) -> dict:
        cfg, size = self.cfg, self.canvas()
        lr = cfg.lr * min(1.0, (self.step - self.warm_from + 1) / cfg.warmup)
        if cfg.cooldown:
            lr *= min(1.0, (cfg.steps - self.step) / cfg.cooldown)
        for group in self.opt.param_groups:
            group["lr"] = lr
        edits = edit_batch(
            rng, cfg.edit_batch, size, kind_weights=cfg.kind_weights, contrast=cfg.contrast,
            colour_contrast=cfg.colour_contrast, alike_twins=cfg.alike_twins,
        )
        # its own stream, so a run with and one without draw the same batches, noise and t
        drop = random.Random(f"{cfg.seed}:text-drop:{self.step}")
        prompts = drop_texts(edits.instructions, cfg.text_drop, drop)
        losses, plain, ts = self.loss(
            edits.target, prompts, edits.source, gen, edits.mask, edits.kinds
        )
        by_kind: dict[str, list[float]] = {}
        for kind, value in zip(edits.kinds, plain.tolist(), strict=True):
            by_kind.setdefault(kind, []).append(value)

        def generations(canvas, samples: random.Random, drops: random.Random,
                        noise: torch.Generator) -> None:
            nonlocal losses, plain, ts
            gens = generation_batch(samples, cfg.generation_batch, canvas)
            prompts = drop_texts(gens.descriptions, cfg.text_drop, drops)
            gl, gp, gt = self.loss(gens.target, prompts, None, noise)
            losses, plain, ts = torch.cat((losses, gl)), torch.cat((plain, gp)), torch.cat((ts, gt))

        if cfg.generation_batch:
            generations(size, rng, drop, gen)
            if cfg.square_generations and size != self.preset.native_size:
                # from streams of their own, so the step's other samples and noise stay those of
                # a run without
                extra = random.Random(f"{cfg.seed}:square-generations:{self.step}")
                noise = torch.Generator().manual_seed(extra.getrandbits(63))
                generations(self.preset.native_size, extra, extra, noise)
        if cfg.reference_batch:
            refs = reference_batch(rng, cfg.reference_batch, size, rng.randint(1, MAX_REFERENCES))
            prompts = drop_texts(refs.instructions, cfg.text_drop, drop)
            rl, rp, rt = self.loss(
                refs.target, prompts, [refs.source, *refs.references], gen, refs.mask, refs.kinds
            )
            for kind, value in zip(refs.kinds, rp.tolist(), strict=True):
                by_kind.setdefault(kind, []).append(value)
            losses, plain, ts = torch.cat((losses, rl)), torch.cat((plain, rp)), torch.cat((ts, rt))
        loss = losses.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.step += 1
        decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
        self.ema_flux.update(self.flux, decay)
        if self.ema_text is not None:
            self.ema_text.update(self.text, decay)
        bands = {}
        for lo, hi in zip(T_BANDS[:-1], T_BANDS[1:], strict=True):
            sel = (ts >= lo) & (ts < hi)
            if sel.any():
                bands[f"t{lo:.2f}"] = round(plain[sel].mean().item(), 5)
        weighted = (
            {"loss_weighted": round(loss.item(), 5)}
            if cfg.object_weight or cfg.change_weight
            else {}
        )
        # "loss" (and the bands and kinds) stay unweighted, so runs with and without object
        # weighting compare on one measure (benchmarks/mini/compare_runs.py)
        return {
            "loss": round(plain.mean().item(), 5),
            **weighted,
            "grad_norm": round(grad_norm.item(), 3),
            "lr": lr,
            "bands": bands,
            # this step's edit loss per kind (a few samples each: average over many steps)
            "kinds": {k: round(sum(v) / len(v), 5) for k, v in sorted(by_kind.items())},
        }

    def ema_model(self) -> LoadedModel:
        return LoadedModel(
            self.preset,
            self.ema_flux.shadow,
            self.ae,
            self.ema_text.shadow if self.ema_text is not None else self.text,
            torch.device("cpu"),
            torch.float32,
        )

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "flux": self.flux.state_dict(),
            "text": self.text.state_dict(),
            "ema_flux": self.ema_flux.state_dict(),
            "ema_text": self.ema_text.state_dict() if self.ema_text is not None else {},
            "optimizer": self.opt.state_dict(),
            "warm_from": self.warm_from,
            **({"init_from": self.init_from} if self.init_from else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.init_from = state.get("init_from")
        self.flux.load_state_dict(state["flux"])
        self.text.load_state_dict(state["text"])
        self.ema_flux.load_state_dict(state["ema_flux"])
        if self.ema_text is not None:
            self.ema_text.load_state_dict(state["ema_text"])
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
            # older checkpoints did not record it: their warm-up is long over
            self.warm_from = state.get("warm_from", self.step - self.cfg.warmup)
        else:  # a run seeded from an export has none: fresh moments, warmed up again
            self.warm_from = self.step


def quick_eval(model: LoadedModel, cases: int, steps: int, seed: int = 999) -> dict:
    """Median PSNR over a fixed set of edits (EMA weights) vs. the identity baseline."""
    rng = random.Random(seed)
    samples = [sample_edit(rng) for _ in range(cases)]
    batch = edit_batch_from(samples, model.preset.native_size)
    size = model.preset.native_size
    out = run_tensors(
        model,
        batch.instructions,
        list(range(cases)),
        size,
        size,
        steps,
        None,
        references=[batch.source],
    )
    scores = psnr(out, batch.target)
    identity = psnr(batch.source, batch.target)
    per_kind: dict[str, list[float]] = {}
    for kind, s in zip(batch.kinds, scores.tolist(), strict=True):
        per_kind.setdefault(kind, []).append(s)
    return {
        "psnr_median": round(scores.median().item(), 2),
        "identity_median": round(identity.median().item(), 2),
        "success": round((scores >= 25).float().mean().item(), 3),
        "per_kind": {k: round(sorted(v)[len(v) // 2], 1) for k, v in sorted(per_kind.items())},
    }


def step_streams(seed: int, step: int) -> tuple[random.Random, torch.Generator]:
    """The random streams of one training step (its samples, then its noise and t): a function
    of the run's seed and the step alone, so a resumed run sees exactly the batches it would
    have seen without stopping, and two runs from the same checkpoint see the same batches at
    the same step (benchmarks/mini/compare_runs.py pairs their losses)."""
    rng = random.Random(f"flux:{seed}:{step}")
    return rng, torch.Generator().manual_seed(rng.getrandbits(63))


def train_transformer(
    preset: ModelPreset, ae: AutoEncoder, out: Path, cfg: FlowTrainConfig, resume: bool = True
) -> Stepper:
    ckpt_path = out / "flux.pt"
    log = JsonlLog(out / "flux_log.jsonl")
    preset = dataclasses.replace(preset, fit_positions=cfg.fit_positions)
    stepper = Stepper(preset, ae, cfg)
    if resume and ckpt_path.exists():
        stepper.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False))

    def save() -> None:
        state = stepper.state_dict()
        state["config"] = dataclasses.asdict(cfg)
        state["preset"] = preset.name
        atomic_torch_save(state, ckpt_path)

    started = time.time()
    with progress_bar("transformer") as bar:
        task = bar.add_task("flux", total=cfg.steps, completed=stepper.step, info="")
        while stepper.step < cfg.steps:
            rng, gen = step_streams(cfg.seed, stepper.step)
            stats = stepper.train_step(rng, gen)
            step = stepper.step
            if step % 20 == 0:
                rate = (time.time() - started) / 20
                started = time.time()
                log.write(step=step, sec_per_step=round(rate, 3), **stats)
                bar.update(task, completed=step, info=f"loss {stats['loss']:.4f} {rate:.2f}s/it")
            if step % cfg.checkpoint_every == 0:
                save()
            if step % cfg.eval_every == 0:
                result = quick_eval(stepper.ema_model(), cfg.eval_cases, cfg.eval_steps)
                log.write(step=step, eval=result)
                bar.console.print(f"step {step}: eval {result}")
    save()
    return stepper
