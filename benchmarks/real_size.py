"""FLUX.1 Kontext [dev] at its real size, without the real weights: memory and time on this CPU.

1. Random weights with exactly [dev]'s shapes (12B transformer, 84M autoencoder) are written
   once in the BFL layout under --cache (the transformer as scaled fp8 for --storage fp8, as
   bf16 for --storage bf16: the files people download), a tensor at a time.
2. They load through the code users run (`openkontext.weights.load_transformer`, fp8 storage
   or bf16) with bf16 compute.
3. One edit with one reference runs for --steps steps at --size x --size. T5-XXL and CLIP are
   replaced by random embeddings of their output shapes ((1, 512, 4096) and (1, 768)): their
   cost is one forward per prompt, not per step, and T5's weights are not part of this figure.

The last line is `peak_rss_gib=X load_s=Y step_s=Z`. Where the weights cannot fit (bf16: 23.8
GB of transformer on a 24 GiB machine), the load stops before the machine runs out of memory
and says how far it got (`loaded=` share of the transformer's bytes) instead of a step time.

Usage: python benchmarks/real_size.py --storage fp8|bf16 [--size 512|1024] [--steps 1]
       [--cache DIR] [--threads N] [--headroom-gib 1.5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from pathlib import Path

import torch

from openkontext.model import AutoEncoder, AutoEncoderParams, FluxParams, LoadedModel, get_preset
from openkontext.sampling import run_tensors
from openkontext.weights import load_autoencoder, load_transformer, save_model
from openkontext.weights.convert import write_transformer
from openkontext.weights.safetensors_io import SafetensorsFile

GIB = 1024**3
DEFAULT_CACHE = Path.home() / ".cache" / "openkontext" / "real-size"


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 1024**2


def random_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Seeded by the tensor's name: norm scales near 1, biases small, weights by fan-in."""
    gen = torch.Generator().manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    noise = torch.randn(shape, generator=gen)
    if len(shape) == 1 and key.endswith("scale"):
        return 1 + 0.1 * noise
    if len(shape) == 1:
        return 0.02 * noise
    return noise / (noise[0].numel() ** 0.5)


def write_weights(cache: Path, storage: str) -> tuple[Path, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    flux_file = cache / f"flux1-kontext-dev-random-{storage}.safetensors"
    ae_file = cache / "ae.safetensors"
    if not flux_file.is_file():
        print(f"writing {flux_file} (once; about {12 if storage == 'fp8' else 24} GB)",
              flush=True)
        start = time.perf_counter()
        write_transformer(flux_file, FluxParams(), lambda k: random_tensor(k, _shape(k)),
                          fp8=storage == "fp8")
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    if not ae_file.is_file():
        ae = AutoEncoder(AutoEncoderParams())
        with torch.no_grad():
            for name, p in ae.named_parameters():
                p.copy_(random_tensor(name, tuple(p.shape)))
        save_model(ae.to(torch.bfloat16), ae_file)
    return flux_file, ae_file


_SHAPES: dict[str, tuple[int, ...]] = {}


def _shape(key: str) -> tuple[int, ...]:
    if not _SHAPES:
        from openkontext.model import Flux

        with torch.device("meta"):
            _SHAPES.update({k: tuple(v.shape) for k, v in Flux(FluxParams()).state_dict().items()})
    return _SHAPES[key]


def how_far(flux_file: Path, headroom: float) -> str | None:
    """None when the transformer's bytes fit in memory with `headroom` GiB to spare; else read
    its tensors until they would not and say how far that got."""
    with SafetensorsFile(flux_file) as f:
        total = sum(f.nbytes(k) for k in f) / GIB
        room = available_gib() - headroom
        if total < room:
            return None
        held, done = [], 0.0
        for key in f:
            if done + f.nbytes(key) / GIB > room:
                break
            held.append(f.read(key))
            done += f.nbytes(key) / GIB
        return (f"the transformer needs {total:.1f} GiB, {room + headroom:.1f} GiB was available: "
                f"stopped after {done:.1f} GiB, loaded={done / total:.0%}")


class RandomText:
    """T5-XXL's and CLIP-L's output shapes, random: (1, 512, 4096) tokens, (1, 768) pooled."""

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        n = len(prompts)
        return torch.randn(n, 512, 4096, generator=gen), torch.randn(n, 768, generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", choices=("fp8", "bf16"), required=True)
    parser.add_argument("--size", type=int, choices=(512, 1024), default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--headroom-gib", type=float, default=1.5)
    args = parser.parse_args()
    if not 1 <= args.steps <= 50:
        parser.error("--steps must be 1..50")
    torch.set_num_threads(args.threads)
    flux_file, ae_file = write_weights(args.cache, args.storage)
    print(f"weights: {flux_file} ({flux_file.stat().st_size / 1e9:.1f} GB)", flush=True)

    # 1. Load, as users do, unless it cannot fit.
    start = time.perf_counter()
    if (stopped := how_far(flux_file, args.headroom_gib)) is not None:
        print(stopped)
        print(f"peak_rss_gib={rss_gib():.2f} load_s={time.perf_counter() - start:.1f} "
              f"step_s=none {stopped.rsplit(', ', 1)[1]}")
        return
    flux = load_transformer(flux_file, torch.bfloat16, fp8=args.storage == "fp8")
    ae = load_autoencoder(ae_file, torch.bfloat16)
    load_s = time.perf_counter() - start
    print(f"loaded in {load_s:.1f} s, rss {current_rss_gib():.2f} GiB", flush=True)
    model = LoadedModel(get_preset("kontext-dev"), flux, ae, RandomText(), torch.device("cpu"),
                        torch.bfloat16)

    # 2. One edit with one reference; a step is one transformer forward, timed by hooks.
    began: list[float] = []
    steps: list[float] = []

    def finished(*_) -> None:  # a forward hook that returns nothing keeps the output
        steps.append(time.perf_counter() - began[-1])
        print(f"step {len(steps)}: {steps[-1]:.1f} s", flush=True)

    flux.register_forward_pre_hook(lambda *_: began.append(time.perf_counter()))
    flux.register_forward_hook(finished)
    reference = torch.rand(1, 3, args.size, args.size) * 2 - 1
    start = time.perf_counter()
    run_tensors(model, ["make it red"], [0], args.size, args.size, args.steps, 2.5, [reference])
    total = time.perf_counter() - start
    step_s = sum(steps) / len(steps)
    print(f"edit {total:.1f} s ({args.steps} steps, {args.size}x{args.size} + 1 reference, "
          f"{torch.get_num_threads()} threads, T5/CLIP replaced by random embeddings)")
    print(f"peak_rss_gib={rss_gib():.2f} load_s={load_s:.1f} step_s={step_s:.1f}")


if __name__ == "__main__":
    sys.exit(main())
