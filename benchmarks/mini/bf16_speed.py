"""Is bf16 autocast worth it on this CPU? Matmuls and a 3x3 convolution timed side by side in
fp32 and bf16, and what `native_bf16()` (the training default) decides here.

On CPUs with AMX (Intel Sapphire Rapids) bf16 matmuls ran 3-6x faster than fp32; on an AVX2-only
AMD EPYC torch emulates bf16 and the same matmul ran ~150x slower. Training therefore uses bf16
autocast only where `native_bf16()` finds bf16 hardware.

    .venv/bin/python benchmarks/mini/bf16_speed.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from openkontext.train.common import native_bf16


def rate(fn, seconds: float) -> float:
    """Calls per second of fn (at least one call, after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = ap.parse_args()
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}; "
          f"native_bf16() = {native_bf16()}; threads {torch.get_num_threads()}")
    print("| op | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---|---|---|---|")
    for n in (256, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        flops = 2 * n**3
        r32 = rate(lambda a=a, b=b: a @ b, args.seconds) * flops
        a16, b16 = a.bfloat16(), b.bfloat16()
        r16 = rate(lambda a=a16, b=b16: a @ b, args.seconds) * flops
        print(f"| matmul {n} | {r32 / 1e9:.1f} | {r16 / 1e9:.1f} | {r16 / r32:.3f} |")
    # the autoencoder's typical layer: 64 channels at 32 x 32, batch 16
    x, w = torch.randn(16, 64, 32, 32), torch.randn(64, 64, 3, 3)
    flops = 2 * 16 * 64 * 64 * 9 * 32 * 32
    r32 = rate(lambda: F.conv2d(x, w, padding=1), args.seconds) * flops
    x16, w16 = x.bfloat16(), w.bfloat16()
    r16 = rate(lambda: F.conv2d(x16, w16, padding=1), args.seconds) * flops
    print(f"| conv3x3 64ch 32px b16 | {r32 / 1e9:.1f} | {r16 / 1e9:.1f} | {r16 / r32:.3f} |")


if __name__ == "__main__":
    main()
