"""Our transformer and whole edit against diffusers on this machine's CPU.

Both sides run the same random weights, saved once as a diffusers checkpoint: diffusers loads it
with `from_pretrained`, we load it with `openkontext.weights`. The size is small but not tiny:
hidden 256, 2 double + 4 single blocks, a 64x64 latent (1024 target tokens) with a 64x64
reference (1024 more) and 64 text tokens; the autoencoder is FLUX-shaped (8x down, 16 latent
channels) with narrow channels, so the edit decodes a real 512x512 image. fp32, no grad.

Times: medians of several runs (forwards after a warm-up), the two implementations
interleaved so background load hits both alike; wall time, and the CPU time of the process
(all threads). Memory: each implementation runs alone in a child process that reads the
kernel's resident-set high-water mark (VmHWM, reset between phases through
/proc/self/clear_refs), so a figure is the peak resident memory a phase added over what the
process held when it began.

Usage: python benchmarks/bench_transformer.py [--steps 4] [--repeats 5] [--edit-repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
from PIL import Image

from openkontext.imaging import image_to_tensor
from openkontext.model import AutoEncoderParams, Flux, FluxParams, LoadedModel, ModelPreset
from openkontext.packing import image_ids
from openkontext.sampling import run_tensors
from openkontext.weights import (
    ae_params_to_diffusers_config,
    flux_params_to_diffusers_config,
    load_autoencoder,
    load_transformer,
)

FLUX = FluxParams(
    in_channels=64, out_channels=64, vec_in_dim=256, context_in_dim=512, hidden_size=256,
    num_heads=4, depth=2, depth_single_blocks=4, axes_dim=(8, 28, 28),
)
AE = AutoEncoderParams(ch=8, ch_mult=(1, 2, 4, 4), num_res_blocks=1, norm_groups=8)
SIZE, TEXT_TOKENS, SEED, GUIDANCE = 512, 64, 0, 2.5
MIB = 2**20


# 1. The shared checkpoint and inputs.


def write_checkpoint(root: Path) -> None:
    torch.manual_seed(0)
    for name, cls, config in (
        ("transformer", diffusers.FluxTransformer2DModel, flux_params_to_diffusers_config(FLUX)),
        ("vae", diffusers.AutoencoderKL, ae_params_to_diffusers_config(AE)),
    ):
        model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        with torch.no_grad():  # no zero-initialised layers, so outputs are not trivial
            for p in model.parameters():
                p.normal_(0, 0.02)
        model.save_pretrained(root / name)


def inputs() -> dict:
    gen = torch.Generator().manual_seed(1)
    n = (SIZE // 16) ** 2
    rgb = (torch.rand(SIZE, SIZE, 3, generator=gen) * 255).to(torch.uint8).numpy()
    return {
        "tokens": torch.randn(1, 2 * n, FLUX.in_channels, generator=gen),
        "img_ids": torch.cat((image_ids(1, SIZE // 8, SIZE // 8),
                              image_ids(1, SIZE // 8, SIZE // 8, index=1)), dim=1),
        "txt": torch.randn(1, TEXT_TOKENS, FLUX.context_in_dim, generator=gen),
        "vec": torch.randn(1, FLUX.vec_in_dim, generator=gen),
        "t": torch.tensor([0.6]),
        "guidance": torch.tensor([GUIDANCE]),
        "image": Image.fromarray(np.asarray(rgb)),
    }


class FixedText:
    """Text encoding is left out of both sides: diffusers gets the embeddings directly."""

    def __init__(self, txt, vec):
        self.txt, self.vec = txt, vec

    def encode(self, prompts):
        return self.txt, self.vec


# 2. The two implementations, as (forward, edit) closures over loaded models.


def ours(root: Path, x: dict, steps: int):
    flux, ae = load_transformer(root / "transformer"), load_autoencoder(root / "vae")
    preset = ModelPreset("bench", FLUX, AE, None, SIZE, steps, GUIDANCE)
    model = LoadedModel(preset, flux, ae, FixedText(x["txt"], x["vec"]), torch.device("cpu"),
                        torch.float32)
    reference = image_to_tensor(x["image"])

    def forward():
        return flux(img=x["tokens"], img_ids=x["img_ids"], txt=x["txt"],
                    txt_ids=torch.zeros(1, TEXT_TOKENS, 3), timesteps=x["t"], y=x["vec"],
                    guidance=x["guidance"])

    def edit():
        return run_tensors(model, ["edit"], [SEED], SIZE, SIZE, steps, GUIDANCE, [reference])

    return forward, edit


def theirs(root: Path, x: dict, steps: int):
    transformer = diffusers.FluxTransformer2DModel.from_pretrained(root / "transformer")
    vae = diffusers.AutoencoderKL.from_pretrained(root / "vae")
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096)
    pipe = diffusers.FluxKontextPipeline(scheduler, vae, None, None, None, None, transformer)
    pipe.set_progress_bar_config(disable=True)

    def forward():
        return transformer(hidden_states=x["tokens"], encoder_hidden_states=x["txt"],
                           pooled_projections=x["vec"], timestep=x["t"], img_ids=x["img_ids"][0],
                           txt_ids=torch.zeros(TEXT_TOKENS, 3), guidance=x["guidance"],
                           return_dict=False)[0]

    def edit():
        return pipe(image=x["image"], prompt_embeds=x["txt"], pooled_prompt_embeds=x["vec"],
                    height=SIZE, width=SIZE, max_area=SIZE * SIZE, _auto_resize=False,
                    num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="pt",
                    generator=torch.Generator("cpu").manual_seed(SEED)).images

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


def child(name: str, root: Path, steps: int) -> None:
    """Runs in its own process: prints peak memory added by loading, a forward and an edit."""
    torch.set_num_threads(2)
    x = inputs()
    loaded = {}
    out = {"load": peak_added(lambda: loaded.update(fns=IMPLEMENTATIONS[name](root, x, steps)))}
    forward, edit = loaded["fns"]
    with torch.inference_mode():
        out["forward"] = peak_added(forward)
        out["edit"] = peak_added(edit)
    print(json.dumps(out))


def timed(fns: dict, repeats: int, warm_up: bool) -> tuple[dict, dict, dict]:
    """Median wall seconds and median process CPU seconds (all threads) per implementation,
    over alternating runs after an optional untimed warm-up; and each implementation's output.
    (A median of 3 or more already discounts a slow first run.)"""
    wall, cpu, outputs = {name: [] for name in fns}, {name: [] for name in fns}, {}
    with torch.inference_mode():
        for fn in fns.values() if warm_up else ():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                outputs[name] = fn()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return _medians(wall), _medians(cpu), outputs


def _medians(runs: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed transformer forwards")
    parser.add_argument("--edit-repeats", type=int, default=3, help="timed whole edits")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.root, args.steps)

    torch.set_num_threads(2)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_checkpoint(root)
        memory = {}
        for name in IMPLEMENTATIONS:
            cmd = [sys.executable, __file__, "--child", name, "--root", str(root),
                   "--steps", str(args.steps)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            memory[name] = json.loads(result.stdout.strip().splitlines()[-1])
        x = inputs()
        loaded = {name: build(root, x, args.steps) for name, build in IMPLEMENTATIONS.items()}
        forward, forward_cpu, forward_out = timed({n: f[0] for n, f in loaded.items()},
                                                  args.repeats, warm_up=True)
        edit, edit_cpu, edit_out = timed({n: f[1] for n, f in loaded.items()}, args.edit_repeats,
                                         warm_up=False)
        weights = sum(p.stat().st_size for p in root.rglob("*.safetensors")) / MIB

    with torch.device("meta"):
        params = sum(p.numel() for p in Flux(FLUX).parameters())
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{torch.get_num_threads()} threads, fp32; load average at start {load_before:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}")
    print(f"transformer: hidden {FLUX.hidden_size}, {FLUX.depth} double + "
          f"{FLUX.depth_single_blocks} single blocks, {params / 1e6:.1f}M params; "
          f"{(SIZE // 16) ** 2} target + {(SIZE // 16) ** 2} reference + {TEXT_TOKENS} text tokens")
    print(f"edit: {SIZE}x{SIZE} image, {args.steps} steps; checkpoint {weights:.1f} MiB")
    print(f"{'':24}{'openkontext':>12}{'diffusers':>12}{'ratio':>8}")
    rows = [(f"forward wall (s) x{args.repeats}", forward),
            (f"forward CPU (s) x{args.repeats}", forward_cpu),
            (f"edit wall (s) x{args.edit_repeats}", edit),
            (f"edit CPU (s) x{args.edit_repeats}", edit_cpu)]
    rows += [(f"{phase} peak added (MiB)", {n: memory[n][phase] for n in memory})
             for phase in ("load", "forward", "edit")]
    for label, values in rows:
        a, b = values["openkontext"], values["diffusers"]
        if a is None or b is None:
            print(f"{label:24}{'n/a':>12}{'n/a':>12}")
            continue
        print(f"{label:24}{a:12.3f}{b:12.3f}{a / b:8.2f}")
    forward_diff = (forward_out["openkontext"] - forward_out["diffusers"]).abs().max()
    edit_diff = (edit_out["openkontext"] / 2 + 0.5 - edit_out["diffusers"]).abs().max()
    print(f"same results: max abs difference {forward_diff:.1e} (forward), "
          f"{edit_diff:.1e} (edited image in [0, 1])")
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
