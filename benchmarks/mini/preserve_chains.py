"""What pasting back unedited pixels does over long multi-turn chains.

Runs Shapes World chains of --turns edits twice, with preservation on and off, feeding each
output back as the next input, and prints per turn (medians over chains):

- preservation PSNR: the output against the ORIGINAL input, over the pixels no edit so far was
  meant to change (the complement of the union of the ground-truth change masks) — drift shows
  here as a falling figure;
- PSNR to the ground-truth target of that turn.

Chains use object edits only (recolor, remove, add, move, resize, reshape, swap): background
changes and filters change every pixel and leave nothing to preserve.

    .venv/bin/python benchmarks/mini/preserve_chains.py [--weights W] [--chains 12] [--turns 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from openkontext.eval.metrics import psnr
from openkontext.pipeline import Kontext, Settings
from openkontext.world.render import change_mask, render, render_target, to_pil
from openkontext.world.sampling import sample_chain

KINDS = ["recolor", "remove", "add", "move", "resize", "reshape", "swap"]


def run_chain(kontext: Kontext, chain, size: int, preserve: bool, steps: int | None, seed: int):
    """Per turn: (preservation PSNR vs the original, PSNR to the turn's target)."""
    original = render(chain.source, size)
    image, unchanged, rows = original, np.ones(original.shape[:2], bool), []
    for k, turn in enumerate(chain.turns):
        source = render(turn.source, size)
        target = render_target(turn.target, size)
        unchanged &= ~change_mask(source, target)
        settings = Settings(seed=seed + k, steps=steps, preserve=preserve)
        result = kontext.run(turn.instruction, [to_pil(image)], settings)
        image = np.asarray(result.images[0])
        rows.append((psnr(image, original, unchanged), psnr(image, target)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--chains", type=int, default=12)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    kontext = Kontext.load(args.weights)
    size = kontext.model.preset.native_size
    rng = random.Random(args.seed)
    chains = [sample_chain(rng, turns=args.turns, kinds=KINDS) for _ in range(args.chains)]
    started = time.perf_counter()
    per_mode = {}
    for preserve in (True, False):
        per_mode[preserve] = [run_chain(kontext, c, size, preserve, args.steps, args.seed + i)
                              for i, c in enumerate(chains)]

    def median(mode: bool, turn: int, column: int) -> float:
        values = [rows[turn][column] for rows in per_mode[mode]]
        return statistics.median(v for v in values if v is not None)

    print(f"{args.chains} chains of {args.turns} object edits at {size} px, "
          f"model {kontext.model.preset.name}; medians over chains")
    print(f"{'turn':>4}  {'preservation on':>15}  {'off':>6}  {'to target on':>12}  {'off':>6}")
    for t in range(args.turns):
        print(f"{t + 1:>4}  {median(True, t, 0):>15.2f}  {median(False, t, 0):>6.2f}  "
              f"{median(True, t, 1):>12.2f}  {median(False, t, 1):>6.2f}")
    print(f"({time.perf_counter() - started:.0f} s; preservation PSNR is capped at 99 dB = "
          "bit-identical)")


if __name__ == "__main__":
    main()
