"""Our transformer and whole edit against diffusers on this machine's CPU.

Both sides run the same weights, saved once as a diffusers checkpoint: diffusers loads it with
`from_pretrained`, we load it with `openkontext.weights`. fp32, no grad. Two sets of weights:

- `--weights random` (the default): random weights at a size small but not tiny: hidden 256,
  2 double + 4 single blocks, a 64x64 latent (1024 target tokens) with a 64x64 reference (1024
  more) and 64 text tokens; the autoencoder is FLUX-shaped (8x down, 16 latent channels) with
  narrow channels, so the edit decodes a real 512x512 image; 4 steps; one random edit.
- `--weights embedded`: the embedded mini model's transformer and autoencoder (trained
  weights), at its 64 px and 16 steps, on `--edits` Shapes World edits (the kinds in turn,
  training phrasings, the built-in suite's seed), each instruction encoded once by the mini's
  own text encoder. Its outputs are also scored against the edits' ground truth.

Text encoding is left out of both sides: diffusers gets the embeddings directly.

Times: medians of several runs (forwards after a warm-up), the two implementations
interleaved so background load hits both alike, both at 2 torch threads (or OMP_NUM_THREADS);
wall time, and the CPU time of the process (all threads). Memory: each implementation runs
alone in a child process that reads the kernel's resident-set high-water mark (VmHWM, reset
between phases through /proc/self/clear_refs), so a figure is the peak resident memory a phase
added over what the process held when it began.

Our whole edit also runs, in the same interleaved rounds, at each speed setting
(`openkontext.speed`: the step cache's thresholds) and at the thread count the thread policy
picks for this size (`openkontext.threads`), each against the same diffusers edits, with the
PSNR of its image against our quality output, against diffusers' and (embedded) against the
ground truth, and the steps the cache skipped.

Usage: python benchmarks/bench_transformer.py [--weights random|embedded] [--steps N]
           [--repeats 5] [--edit-repeats 3] [--edits 11]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import diffusers
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from openkontext.eval.dataset import load_cases
from openkontext.eval.metrics import psnr
from openkontext.imaging import image_to_tensor, tensor_to_uint8
from openkontext.model import AutoEncoderParams, Flux, FluxParams, LoadedModel, ModelPreset
from openkontext.model.presets import preset_from_dict
from openkontext.model.step_cache import StepCache
from openkontext.packing import image_ids
from openkontext.sampling import run_tensors
from openkontext.speed import DEFAULT_SPEED, SPEEDS
from openkontext.threads import env_threads, step_work, threads_for_work
from openkontext.weights import (
    EMBEDDED_DIR,
    ae_params_to_diffusers_config,
    flux_params_to_diffusers_config,
    load_autoencoder,
    load_mini,
    load_transformer,
    save_model,
)
from openkontext.world.dataset import write_dataset
from openkontext.world.edits import KINDS

SEED = 0
WORLD_SEED = 5101  # the built-in suite's training-phrasing part, as benchmarks/step_cache.py
THREADS = env_threads() or 2  # both sides; OMP_NUM_THREADS wins
MIB = 2**20


@dataclass(frozen=True)
class Setup:
    """What both sides run: the models' shapes and the edit's size, steps and guidance."""

    weights: str  # "random" or "embedded"
    flux: FluxParams
    ae: AutoEncoderParams
    size: int
    steps: int
    guidance: float
    text_tokens: int


RANDOM = Setup(
    "random",
    FluxParams(in_channels=64, out_channels=64, vec_in_dim=256, context_in_dim=512,
               hidden_size=256, num_heads=4, depth=2, depth_single_blocks=4, axes_dim=(8, 28, 28)),
    AutoEncoderParams(ch=8, ch_mult=(1, 2, 4, 4), num_res_blocks=1, norm_groups=8),
    size=512, steps=4, guidance=2.5, text_tokens=64,
)


def embedded_setup() -> Setup:
    """The embedded model's shapes, size, steps and guidance, read from its config alone."""
    preset = preset_from_dict(json.loads((EMBEDDED_DIR / "mini.json").read_text())["preset"])
    return Setup("embedded", preset.flux, preset.ae, preset.native_size, preset.default_steps,
                 preset.default_guidance, preset.text.max_tokens)


def setup_for(weights: str, steps: int | None) -> Setup:
    setup = embedded_setup() if weights == "embedded" else RANDOM
    return setup if steps is None else replace(setup, steps=steps)


@dataclass
class Case:
    """One edit's inputs, the same on both sides, and its ground truth where known."""

    label: str
    image: Image.Image
    txt: Tensor  # (1, text tokens, context_in_dim)
    vec: Tensor  # (1, vec_in_dim)
    target: np.ndarray | None = None  # (H, W, 3) uint8


# 1. The shared checkpoint and inputs.


def write_checkpoint(root: Path, setup: Setup, mini: LoadedModel | None) -> None:
    """The embedded model's transformer and autoencoder (`mini`), or random ones, as diffusers
    folders root/transformer and root/vae."""
    if mini is not None:
        save_model(mini.flux, root / "transformer", layout="diffusers")
        save_model(mini.ae, root / "vae", layout="diffusers")
        return
    torch.manual_seed(0)
    for name, cls, config in (
        ("transformer", diffusers.FluxTransformer2DModel,
         flux_params_to_diffusers_config(setup.flux)),
        ("vae", diffusers.AutoencoderKL, ae_params_to_diffusers_config(setup.ae)),
    ):
        model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        with torch.no_grad():  # no zero-initialised layers, so outputs are not trivial
            for p in model.parameters():
                p.normal_(0, 0.02)
        model.save_pretrained(root / name)


def tokens(setup: Setup) -> int:
    """Packed tokens of one image at the setup's size (target and reference alike)."""
    return (setup.size // (2 * setup.ae.downsample)) ** 2


def inputs(setup: Setup) -> dict:
    """Random transformer inputs of the setup's shapes, and a random edit ("case")."""
    gen = torch.Generator().manual_seed(1)
    side, flux = setup.size // (2 * setup.ae.downsample), setup.flux
    rgb = (torch.rand(setup.size, setup.size, 3, generator=gen) * 255).to(torch.uint8).numpy()
    txt = torch.randn(1, setup.text_tokens, flux.context_in_dim, generator=gen)
    vec = torch.randn(1, flux.vec_in_dim, generator=gen)
    return {
        "tokens": torch.randn(1, 2 * tokens(setup), flux.in_channels, generator=gen),
        "img_ids": torch.cat((image_ids(1, 2 * side, 2 * side),
                              image_ids(1, 2 * side, 2 * side, index=1)), dim=1),
        "txt": txt,
        "vec": vec,
        "t": torch.tensor([0.6]),
        "guidance": torch.tensor([setup.guidance]),
        "case": Case("random", Image.fromarray(np.asarray(rgb)), txt, vec),
    }


def world_cases(mini: LoadedModel, count: int) -> list[Case]:
    """`count` Shapes World edits at the mini's size, the kinds in turn, each instruction
    encoded once by the mini's text encoder."""
    size = mini.preset.native_size
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = write_dataset(Path(tmp), count=count, seed=WORLD_SEED, size=size,
                             categories=KINDS)
        cases = []
        for case in load_cases(path, size):
            turn = case.turns[0]
            txt, vec = mini.text.encode([turn.instruction])
            cases.append(Case(case.category, Image.fromarray(case.input.load(), "RGB"), txt, vec,
                              turn.target.load()))
    return cases


class FixedText:
    """Stands in for the text encoder: the case's embeddings, which diffusers gets directly."""

    case: Case

    def encode(self, prompts):
        return self.case.txt, self.case.vec


# 2. The two implementations, as (forward, edit) closures over loaded models.


def ours(root: Path, setup: Setup):
    flux, ae = load_transformer(root / "transformer"), load_autoencoder(root / "vae")
    preset = ModelPreset("bench", setup.flux, setup.ae, None, setup.size, setup.steps,
                         setup.guidance)
    text = FixedText()
    model = LoadedModel(preset, flux, ae, text, torch.device("cpu"), torch.float32)

    def forward(x: dict):
        return flux(img=x["tokens"], img_ids=x["img_ids"], txt=x["txt"],
                    txt_ids=torch.zeros(1, setup.text_tokens, 3), timesteps=x["t"], y=x["vec"],
                    guidance=x["guidance"] if setup.flux.guidance_embed else None)

    def edit(case: Case, threshold: float | None = None, threads: int | None = None,
             skipped=None):
        """The whole edit, through a step cache with `threshold` (its skipped steps appended
        to `skipped`), at `threads` torch threads for its duration -> (1, 3, H, W) in [0, 1]."""
        text.case = case
        cache = None if threshold is None else StepCache(threshold)
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            out = run_tensors(model, ["edit"], [SEED], setup.size, setup.size, setup.steps,
                              setup.guidance, [image_to_tensor(case.image)], step_cache=cache)
        finally:
            torch.set_num_threads(before)
        if skipped is not None:
            skipped.append(0 if cache is None else cache.skipped)
        return out / 2 + 0.5

    edit.model = model
    return forward, edit


def theirs(root: Path, setup: Setup):
    transformer = diffusers.FluxTransformer2DModel.from_pretrained(root / "transformer")
    vae = diffusers.AutoencoderKL.from_pretrained(root / "vae")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    pipe = diffusers.FluxKontextPipeline(scheduler, vae, None, None, None, None, transformer)
    pipe.set_progress_bar_config(disable=True)

    def forward(x: dict):
        return transformer(hidden_states=x["tokens"], encoder_hidden_states=x["txt"],
                           pooled_projections=x["vec"], timestep=x["t"], img_ids=x["img_ids"][0],
                           txt_ids=torch.zeros(setup.text_tokens, 3),
                           guidance=x["guidance"] if setup.flux.guidance_embed else None,
                           return_dict=False)[0]

    def edit(case: Case):
        size = setup.size
        return pipe(image=case.image, prompt_embeds=case.txt, pooled_prompt_embeds=case.vec,
                    height=size, width=size, max_area=size * size, _auto_resize=False,
                    num_inference_steps=setup.steps, guidance_scale=setup.guidance,
                    output_type="pt", generator=torch.Generator("cpu").manual_seed(SEED)).images

    return forward, edit


IMPLEMENTATIONS = {"openkontext": ours, "diffusers": theirs}


# 3. Measuring.


def memory_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_added(fn) -> float | None:
    """MiB of resident memory at the peak of fn() above the resident memory before it. Freed
    heap is first handed back to the kernel (glibc malloc_trim), so the starting point is what
    the process really holds, not what an earlier phase left cached in the allocator."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    except OSError:
        return None
    before = memory_kib("VmRSS")
    fn()
    return (memory_kib("VmHWM") - before) * 1024 / MIB


def child(name: str, root: Path, setup: Setup) -> None:
    """Runs in its own process: prints peak memory added by loading, a forward and an edit
    (the random edit: memory does not depend on the pixels)."""
    torch.set_num_threads(THREADS)
    x = inputs(setup)
    loaded = {}
    out = {"load": peak_added(lambda: loaded.update(fns=IMPLEMENTATIONS[name](root, setup)))}
    forward, edit = loaded["fns"]
    with torch.inference_mode():
        out["forward"] = peak_added(lambda: forward(x))
        out["edit"] = peak_added(lambda: edit(x["case"]))
    print(json.dumps(out))


def timed(fns: dict, repeats: int, warm_up: bool, cases: list) -> tuple[dict, dict, dict]:
    """Wall and process CPU seconds (all threads) of every run, and each implementation's last
    output per case: `repeats` rounds, each running every case through every implementation in
    turn, so background load hits them alike; run i of one implementation and run i of another
    are the same case in the same round. An optional untimed warm-up runs the first case."""
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    outputs = {name: [None] * len(cases) for name in fns}
    with torch.inference_mode():
        for fn in fns.values() if warm_up else ():
            fn(cases[0])
        for _ in range(repeats):
            for i, case in enumerate(cases):
                for name, fn in fns.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    outputs[name][i] = fn(case)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu, outputs


def _medians(runs: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(r) for name, r in runs.items()}


def float_psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) of two images in [0, 1], capped at 99 (identical to ~1e-10)."""
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse == 0 else min(99.0, 10 * math.log10(1 / mse))


def truth_psnr(image: Tensor, case: Case) -> float | None:
    """PSNR (dB) of an image in [0, 1] against the case's ground truth, as 8-bit pixels."""
    if case.target is None:
        return None
    return psnr(tensor_to_uint8(image * 2 - 1)[0], case.target)


# 4. The report.


def paired(times: dict[str, list[float]], key: str) -> float:
    """The median of each run of `key` over diffusers' run of the same case and round."""
    return statistics.median(a / b for a, b in zip(times[key], times["diffusers"], strict=True))


def speed_rows(wall, cpu, outputs, skipped, cases, setup, policy) -> list[list[str]]:
    """Per speed setting (and the thread policy, and diffusers): medians over every run of
    every case, wall and CPU time over diffusers' (`paired`); PSNRs are means over the
    cases."""
    quality, base = outputs["openkontext"], outputs["diffusers"]
    rows = [("diffusers", "diffusers", None)]
    rows += [(f"speed {n}", "openkontext" if t is None else f"speed {n}", t)
             for n, t in SPEEDS.items()]
    rows += [(f"thread policy: {policy} thread(s)", f"policy {policy}t", None)]
    out = []
    for label, key, threshold in rows:
        ratio = paired(wall, key)
        name = key.removeprefix("speed ")
        skip = (f"{statistics.fmean(skipped[name]):.1f}/{setup.steps}" if skipped.get(name)
                else "-" if key == "diffusers" else f"0/{setup.steps}")
        mine = outputs[key]
        vs = [statistics.fmean(float_psnr(a, b) for a, b in zip(mine, other, strict=True))
              for other in (quality, base)]
        truth = [truth_psnr(image, case) for image, case in zip(mine, cases, strict=True)]
        truth_cell = "-" if None in truth else f"{statistics.fmean(truth):.2f}"
        out.append([label, "-" if threshold is None else f"{threshold:g}",
                    f"{statistics.median(wall[key]):.3f}", f"{ratio:.2f}", f"{1 / ratio:.2f}x",
                    f"{1 / paired(cpu, key):.2f}x", skip, f"{vs[0]:.1f}", f"{vs[1]:.1f}",
                    truth_cell])
    return out


def per_case_rows(wall, outputs, skipped, cases) -> list[list[str]]:
    """Per edit: steps skipped, speed-up over diffusers (median of its rounds) and PSNR
    against the ground truth, at each speed setting."""
    n, rows = len(cases), []
    for i, case in enumerate(cases):
        row = [case.label]
        for name, threshold in SPEEDS.items():
            key = "openkontext" if threshold is None else f"speed {name}"
            ratio = statistics.median(wall["diffusers"][j] / wall[key][j]
                                      for j in range(i, len(wall[key]), n))
            skip = skipped[name][i] if skipped.get(name) else 0
            row.append(f"{skip}/{ratio:.2f}x/{truth_psnr(outputs[key][i], case):.1f}")
        row.append(f"{truth_psnr(outputs['diffusers'][i], case):.1f}")
        rows.append(row)
    return rows


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(x.ljust(wd) if i == 0 else x.rjust(wd)
                        for i, (x, wd) in enumerate(zip(r, widths, strict=True))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", choices=("random", "embedded"), default="random",
                        help="random weights (FLUX-shaped, 512 px) or the embedded mini's")
    parser.add_argument("--steps", type=int, help="default: 4 (random), the mini's 16 (embedded)")
    parser.add_argument("--repeats", type=int, default=5, help="timed transformer forwards")
    parser.add_argument("--edit-repeats", type=int, default=3,
                        help="timed rounds of whole edits (each round runs every edit)")
    parser.add_argument("--edits", type=int, default=len(KINDS),
                        help="Shapes World edits, the kinds in turn (embedded only; default: "
                        "one of each kind)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.edits < 1:
        parser.error(f"--edits must be at least 1, got {args.edits}")
    setup = setup_for(args.weights, args.steps)
    if args.child:
        return child(args.child, args.root, setup)

    torch.set_num_threads(THREADS)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    mini = load_mini(EMBEDDED_DIR) if args.weights == "embedded" else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_checkpoint(root, setup, mini)
        memory = {}
        for name in IMPLEMENTATIONS:
            cmd = [sys.executable, __file__, "--child", name, "--root", str(root),
                   "--weights", args.weights, "--steps", str(setup.steps)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            memory[name] = json.loads(result.stdout.strip().splitlines()[-1])
        x = inputs(setup)
        cases = [x["case"]] if mini is None else world_cases(mini, args.edits)
        loaded = {name: build(root, setup) for name, build in IMPLEMENTATIONS.items()}
        forward, forward_cpu, forward_out = timed(
            {n: f[0] for n, f in loaded.items()}, args.repeats,
            warm_up=True, cases=[x])
        # Our edit at each speed and at the thread policy's count, beside diffusers' edit.
        ours_edit = loaded["openkontext"][1]
        policy = threads_for_work(step_work(ours_edit.model))
        skipped = {name: [] for name in SPEEDS}
        variants = {f"speed {name}": functools.partial(ours_edit, threshold=SPEEDS[name],
                                                       skipped=skipped[name])
                    for name in SPEEDS if name != "quality"}
        variants[f"policy {policy}t"] = functools.partial(ours_edit, threads=policy)
        edit, edit_cpu, edit_out = timed({n: f[1] for n, f in loaded.items()} | variants,
                                         args.edit_repeats, warm_up=mini is not None,
                                         cases=cases)
        weights = sum(p.stat().st_size for p in root.rglob("*.safetensors")) / MIB
    for name in skipped:  # the last round's count per case (the same in every round)
        skipped[name] = skipped[name][-len(cases):]

    with torch.device("meta"):
        params = sum(p.numel() for p in Flux(setup.flux).parameters())
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{torch.get_num_threads()} threads, fp32; load average at start {load_before:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}")
    print(f"transformer ({args.weights} weights): hidden {setup.flux.hidden_size}, "
          f"{setup.flux.depth} double + {setup.flux.depth_single_blocks} single blocks, "
          f"{params / 1e6:.1f}M params; {tokens(setup)} target + {tokens(setup)} reference + "
          f"{setup.text_tokens} text tokens")
    what = ", ".join(sorted({c.label for c in cases})) if mini is not None else "random"
    print(f"edit: {setup.size}x{setup.size} image, {setup.steps} steps; {len(cases)} edit(s) "
          f"({what}); checkpoint {weights:.1f} MiB")
    runs = args.edit_repeats * len(cases)
    rows = [(f"forward wall (s) x{args.repeats}", _medians(forward)),
            (f"forward CPU (s) x{args.repeats}", _medians(forward_cpu)),
            (f"edit wall (s) x{runs}", _medians(edit)),
            (f"edit CPU (s) x{runs}", _medians(edit_cpu))]
    rows += [(f"{phase} peak added (MiB)", {n: memory[n][phase] for n in memory})
             for phase in ("load", "forward", "edit")]
    print(f"{'':24}{'openkontext':>12}{'diffusers':>12}{'ratio':>8}")
    for label, values in rows:
        a, b = values["openkontext"], values["diffusers"]
        if a is None or b is None:
            print(f"{label:24}{'n/a':>12}{'n/a':>12}")
            continue
        print(f"{label:24}{a:12.3f}{b:12.3f}{a / b:8.2f}")
    forward_diff = (forward_out["openkontext"][0] - forward_out["diffusers"][0]).abs().max()
    edit_diff = max(float((a - b).abs().max()) for a, b in
                    zip(edit_out["openkontext"], edit_out["diffusers"], strict=True))
    print(f"same results: max abs difference {forward_diff:.1e} (forward), "
          f"{edit_diff:.1e} (edited image in [0, 1])")

    print(f"\nwhole edit by speed setting and thread count ({runs} runs each, in the same "
          f"rounds as the edit row, at {torch.get_num_threads()} threads; ratio: median of "
          f"each run over diffusers' run of the same edit and round; faster: 1 / ratio, of wall "
          f"and of process CPU time)")
    header = ["", "threshold", "wall (s)", "ratio", "faster", "CPU faster", "skipped",
              "PSNR vs quality", "vs diffusers", "vs truth"]
    table(header, speed_rows(edit, edit_cpu, edit_out, skipped, cases, setup, policy))
    if mini is not None:
        print(f"\nper edit, at each speed: steps skipped / faster than diffusers / PSNR vs "
              f"truth (dB); default {DEFAULT_SPEED}")
        table(["edit", *SPEEDS, "diffusers vs truth"],
              per_case_rows(edit, edit_out, skipped, cases))
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
