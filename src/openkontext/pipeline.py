"""The one place that runs an edit or a generation: `Kontext`, the user-facing API.

Front ends (CLI, HTTP worker, web page, evaluation) call into this module; nobody else runs a
request. `Kontext` takes images and settings, picks the sizes, runs the tensor-level core
(`openkontext.sampling.run_tensors`) as one batch and pastes back unedited pixels; `run_many`
does the same for several requests in one batch (the HTTP worker's batching).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from openkontext import flow, imaging
from openkontext import threads as cpu_threads
from openkontext.devices import check_offload, choose_device, choose_storage
from openkontext.loras import MAX_LORAS, LoraLibrary, check_strength
from openkontext.model import LoadedModel
from openkontext.model.lora import applied as lora_adapters
from openkontext.model.lora import check_fits, linear_shapes
from openkontext.model.step_cache import StepCache
from openkontext.preserve import paste_back
from openkontext.resolution import resolve_size
from openkontext.sampling import round_trip, run_tensors
from openkontext.speed import DEFAULT_SPEED, SPEEDS, check_speed
from openkontext.weights import load_model
from openkontext.world.likeness import NOTICE as SHAPES_WORLD_NOTICE
from openkontext.world.likeness import looks_like_shapes_world

# Named style presets: each extends the instruction. Configurable by passing `style_presets`.
STYLE_PRESETS: dict[str, str] = {
    "photographic": "as a realistic photograph",
    "cinematic": "as a cinematic film still, dramatic lighting",
    "anime": "in anime style",
    "manga": "as a black and white manga drawing",
    "digital-art": "as digital art",
    "comic-book": "in comic book style",
    "fantasy-art": "as fantasy art",
    "line-art": "as clean line art",
    "analog-film": "as an analog film photograph",
    "neon-punk": "in neon punk style",
    "isometric": "as an isometric illustration",
    "low-poly": "as a low-poly 3D render",
    "origami": "as paper origami",
    "modeling-compound": "as a clay model",
    "3d-model": "as a 3D model render",
    "pixel-art": "as pixel art",
    "watercolor": "as a watercolor painting",
}

MAX_REFERENCES = 4
MAX_IMAGES = 4


def check_guidance(guidance: float) -> float:
    if not 1.0 <= guidance <= 20.0:
        raise ValueError(f"guidance must be 1..20, got {guidance}")
    return guidance


@dataclass(frozen=True)
class Settings:
    """Per-request knobs; None means the model's default."""

    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    aspect_ratio: str | None = None
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    style_preset: str | None = None
    preserve: bool = True  # paste back pixels the edit did not change
    # LoRAs for this request: (path, or a name in the server's LoRA folder; strength).
    loras: Sequence[tuple[str, float]] = ()
    speed: str | None = None  # quality | balanced | fast (openkontext.speed); None: the default


@dataclass
class Result:
    images: list[Image.Image]
    seeds: list[int]
    width: int
    height: int
    prompt: str  # the instruction as run (style preset applied)
    steps: int
    guidance: float | None
    seconds: float
    model: str
    changed: list[np.ndarray] = field(default_factory=list)  # per image, when preserved
    notice: str | None = None  # something the user should know about this result
    speed: str = DEFAULT_SPEED
    skipped_steps: int = 0  # steps of the batch that ran only the transformer's first block

    def encode(
        self,
        fmt: str = "png",
        quality: int = 95,
        progressive: bool = False,
        include_prompt: bool = True,
    ) -> list[bytes]:
        """Each image as file bytes, with AI-generated metadata (model, seed, prompt)."""
        return [
            imaging.encode_image(
                img,
                fmt,
                imaging.OutputMetadata(
                    model=self.model, seed=seed, prompt=self.prompt, include_prompt=include_prompt
                ),
                quality=quality,
                progressive=progressive,
            )
            for img, seed in zip(self.images, self.seeds, strict=True)
        ]


@dataclass
class Plan:
    """A request read, validated and sized (steps 1-2 of a run), ready to join a batch."""

    prompt: str  # style preset applied
    seeds: list[int]  # one per output image
    width: int
    height: int
    steps: int
    guidance: float
    ref_images: list[Image.Image]  # the inputs, each resized to its preferred size
    preserve: bool
    notice: str | None = None  # passed on to the result (see Result.notice)
    loras: tuple[tuple[str, float], ...] = ()  # (name or path, strength), checked
    speed: str = DEFAULT_SPEED

    @property
    def batch_key(self) -> tuple:
        """Plans with equal keys can share one batch through the model (LoRAs and speed
        included)."""
        refs = tuple(img.size for img in self.ref_images)
        return (self.steps, self.guidance, self.width, self.height, refs, self.loras, self.speed)

    @property
    def megapixel_steps(self) -> float:
        return megapixel_steps(self.steps, len(self.seeds), (self.width, self.height),
                               [img.size for img in self.ref_images])


def megapixel_steps(steps: int, images: int, output: tuple[int, int],
                    references: Sequence[tuple[int, int]]) -> float:
    """A run's work in megapixel-steps: every step of every output image passes the output's
    tokens and its references' through the transformer."""
    pixels = output[0] * output[1] + sum(w * h for w, h in references)
    return steps * images * pixels / 1e6


class Kontext:
    """Edit and generate images. `Kontext.load()` gives the embedded mini model."""

    def __init__(
        self,
        model: LoadedModel,
        style_presets: dict[str, str] | None = None,
        limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
        loras: LoraLibrary | None = None,
        speeds: dict[str, float | None] | None = None,
    ):
        self.model = model
        self.style_presets = STYLE_PRESETS if style_presets is None else style_presets
        # Speed name -> step-cache threshold (None: every block of every step).
        self.speeds = SPEEDS if speeds is None else speeds
        self.limits = limits
        self.loras = LoraLibrary() if loras is None else loras  # default: any path

    @classmethod
    def load(
        cls,
        weights: str | Path | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        text_encoders: str | Path | None = None,
        offload: str | bool = "none",
        threads: int | None = None,
        *,
        tokenizers: str | Path | None = None,
        weights_dtype: str | None = None,
        compile_transformer: bool = False,
        **kwargs,
    ) -> Kontext:
        """The embedded mini model (weights=None), a mini export folder, or real FLUX.1 Kontext
        [dev] weights: a BFL file or folder, a diffusers folder, a Hugging Face snapshot folder,
        or `kontext-dev` for the snapshot in the Hugging Face cache (`openkontext.weights.parts`).
        `text_encoders` and `tokenizers` name folders with T5/CLIP (diffusers folders or
        ComfyUI single files) and their tokenizers when the weights lack them.

        `weights_dtype` "fp8" stores the transformer's blocks and T5's linears in fp8 (half of
        bf16's memory); other values must agree with `dtype`, the compute dtype. `offload`:
        "none", "model" (weights on the CPU, one part at a time on the device) or "blocks"
        (the transformer's blocks streamed to the device a group at a time).

        Sets torch's CPU thread count on the calling thread: `threads`, else OMP_NUM_THREADS,
        else by the model's size (`openkontext.threads`: one thread for the mini models).

        `compile_transformer`: `torch.compile` the transformer (the same bytes; on the embedded
        model 0.87x the edit time after about 40 s of compiling on the first edit, see
        docs/benchmarks.md, "CPU inference paths"): for a server, not for one edit."""
        cpu_threads.check(threads)  # before any weights load
        offload = check_offload(offload)
        dev = choose_device(device)
        dtype, fp8 = choose_storage(dev, dtype, weights_dtype)
        home = dev if offload == "none" else torch.device("cpu")
        model = load_model(weights, home, dtype, text_encoders, tokenizers=tokenizers, fp8=fp8)
        if offload != "none":  # each part (or block group) visits `dev` only while it runs
            model = dataclasses.replace(model, device=dev, offload=offload)
        cpu_threads.apply(threads, model)
        if compile_transformer:
            model.flux.compile()
        return cls(model, **kwargs)

    # -- front doors ---------------------------------------------------------------------------

    def edit(self, image, prompt: str, *, references: Sequence = (), **settings) -> Result:
        """Edit `image` (PIL image, path or bytes) following `prompt`; up to 3 extra references."""
        return self.run(prompt, [image, *references], Settings(**settings))

    def generate(self, prompt: str, **settings) -> Result:
        """A new image from text alone."""
        return self.run(prompt, [], Settings(**settings))

    def session(self, image=None, **settings):
        """A multi-turn editing session starting from `image`."""
        from openkontext.session import Session  # a front end over Kontext: it imports this module

        return Session(self, image, Settings(**settings))

    # -- the one path ---------------------------------------------------------------------------

    def run(
        self,
        prompt: str,
        images: Sequence = (),
        settings: Settings = Settings(),
        on_step: flow.StepCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Result:
        """Edit (1..4 images) or generate (no image) as one batch of `num_images`."""
        started = time.perf_counter()
        plan = self.plan(prompt, images, settings)
        return self._run_plans([plan], started, on_step, cancelled)[0]

    def run_many(
        self,
        requests: Sequence[tuple[str, Sequence, Settings]],
        on_step: flow.StepCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Result]:
        """Several (prompt, images, settings) requests as one batch through the model.

        Each request is read, validated and sized exactly as `run` does, and its results equal
        a `run` of it alone (to float rounding). The requests must agree on `Plan.batch_key`
        (steps, guidance, output size, number and sizes of references, LoRAs, speed); else
        ValueError.
        Every Result's `seconds` is the time of the whole batch.
        """
        started = time.perf_counter()
        plans = [self.plan(prompt, images, s) for prompt, images, s in requests]
        return self._run_plans(plans, started, on_step, cancelled)

    def plan(self, prompt: str, images: Sequence = (), settings: Settings = Settings()) -> Plan:
        """Steps 1-2 of a run: validate and read the inputs, pick the seeds and sizes, resize
        the references. Raises ValueError (or ImageError) for a request that cannot run."""
        preset = self.model.preset
        # 1. Validate and read inputs.
        prompt = self._apply_style(prompt, settings.style_preset)
        if not 1 <= settings.num_images <= MAX_IMAGES:
            raise ValueError(f"num_images must be 1..{MAX_IMAGES}, got {settings.num_images}")
        if len(images) > MAX_REFERENCES:
            raise ValueError(f"at most {MAX_REFERENCES} input images, got {len(images)}")
        pil = [imaging.load_image(img, self.limits) for img in images]
        steps = preset.default_steps if settings.steps is None else settings.steps
        guidance = preset.default_guidance if settings.guidance is None else settings.guidance
        if not 1 <= steps <= 50:
            raise ValueError(f"steps must be 1..50, got {steps}")
        check_guidance(guidance)
        speed = check_speed(settings.speed, self.speeds)
        seed = secrets.randbelow(2**32) if settings.seed is None else settings.seed
        seeds = [seed + i for i in range(settings.num_images)]
        # 2. Sizes: the output, and each reference at its own preferred size.
        width, height = resolve_size(
            preset,
            pil[0].size if pil else None,
            settings.aspect_ratio,
            settings.width,
            settings.height,
            max_side=preset.max_side,
        )
        loras = self._check_loras(settings.loras)
        ref_sizes = [resolve_size(preset, img.size) for img in pil]
        ref_images = [imaging.resize_image(img, s) for img, s in zip(pil, ref_sizes, strict=True)]
        notice = None
        if preset.shapes_world_only and not all(looks_like_shapes_world(img) for img in pil):
            notice = SHAPES_WORLD_NOTICE
        return Plan(prompt, seeds, width, height, steps, guidance, ref_images, settings.preserve,
                    notice, loras, speed)

    def _check_loras(self, requested: Sequence[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
        """Each LoRA read (once per file) and checked against this model."""
        if len(requested) > MAX_LORAS:
            raise ValueError(f"at most {MAX_LORAS} LoRAs a request, got {len(requested)}")
        checked, layers = [], linear_shapes(self.model.flux) if requested else {}
        for ref, strength in requested:
            check_fits(layers, self.loras.get(ref))
            checked.append((str(ref), check_strength(float(strength))))
        return tuple(checked)

    def _run_plans(
        self,
        plans: list[Plan],
        started: float,
        on_step: flow.StepCallback | None,
        cancelled: Callable[[], bool] | None,
    ) -> list[Result]:
        """Steps 3-4 of a run, for plans that share a batch key."""
        first = plans[0]
        if any(p.batch_key != first.batch_key for p in plans):
            keys = sorted({str(p.batch_key) for p in plans})
            raise ValueError(
                f"requests of one batch must share steps, guidance, sizes, LoRAs and speed: {keys}"
            )
        # 3. One batch through the model. One request shares its references across its images;
        # several give each output row its own request's references.
        prompts = [p.prompt for p in plans for _ in p.seeds]
        seeds = [s for p in plans for s in p.seeds]
        per_ref = [[imaging.image_to_tensor(img) for img in p.ref_images] for p in plans]
        if len(plans) == 1:
            references = per_ref[0] or None
        else:
            references = [
                torch.cat(
                    [
                        refs[k].expand(len(p.seeds), -1, -1, -1)
                        for p, refs in zip(plans, per_ref, strict=True)
                    ]
                )
                for k in range(len(first.ref_images))
            ] or None
        loras = [(self.loras.get(ref), strength) for ref, strength in first.loras]
        threshold = self.speeds[first.speed]
        cache = None if threshold is None else StepCache(threshold)
        with lora_adapters(self.model.flux, loras):
            out = run_tensors(
                self.model,
                prompts,
                seeds,
                first.height,
                first.width,
                first.steps,
                first.guidance,
                references,
                on_step,
                cancelled,
                cache,
            )
        arrays = list(imaging.tensor_to_uint8(out))
        # 4. Per request: paste back unedited pixels when the output has the first input's size.
        results, row = [], 0
        for p, refs in zip(plans, per_ref, strict=True):
            mine, row = arrays[row : row + len(p.seeds)], row + len(p.seeds)
            changed: list[np.ndarray] = []
            if p.preserve and p.ref_images and p.ref_images[0].size == (p.width, p.height):
                original = imaging.image_to_array(p.ref_images[0])
                baseline = imaging.tensor_to_uint8(round_trip(self.model, refs[0]))[0]
                pasted = [paste_back(original, a, baseline) for a in mine]
                mine, changed = [x[0] for x in pasted], [x[1] for x in pasted]
            results.append(
                Result(
                    images=[Image.fromarray(a) for a in mine],
                    seeds=p.seeds,
                    width=p.width,
                    height=p.height,
                    prompt=p.prompt,
                    steps=p.steps,
                    guidance=p.guidance,
                    model=self.model.preset.name,
                    seconds=time.perf_counter() - started,
                    changed=changed,
                    notice=p.notice,
                    speed=p.speed,
                    skipped_steps=0 if cache is None else cache.skipped,
                )
            )
        return results

    def _apply_style(self, prompt: str, style: str | None) -> str:
        if not prompt or not prompt.strip():
            raise ValueError("prompt must not be empty")
        if style is None:
            return prompt
        if style not in self.style_presets:
            raise ValueError(
                f"unknown style_preset {style!r}; choose one of "
                f"{', '.join(sorted(self.style_presets))}"
            )
        return f"{prompt.rstrip('. ')}, {self.style_presets[style]}"

    def info(self) -> dict:
        m = self.model
        count = sum(t.numel() for t in (*m.flux.parameters(), *m.flux.buffers()))
        stored = {str(p.dtype).removeprefix("torch.") for p in m.flux.double_blocks.buffers()}
        return {
            "model": m.preset.name,
            "device": str(m.device),
            "dtype": str(m.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "transformer_parameters": count,
            "weights_dtype": "fp8" if "float8_e4m3fn" in stored else str(m.dtype).removeprefix(
                "torch."),
            "offload": m.offload,
            "native_size": m.preset.native_size,
            "default_steps": m.preset.default_steps,
            "default_guidance": m.preset.default_guidance,
        }
