"""What a training step's edits are made of: each kind's share of the edits and the share that
are contrast twins (`train mini --contrast P`), drawn as `train mini` draws them (the same
`step_streams` and `edit_samples`), for given kind weights and contrast, with and without; with
`--colour-contrast K`, a third column adds colour twins (`train mini --colour-contrast K`). It
also says how many contrast twins name an object of a shape alike the named one's, as drawn now
and with `train mini --alike-twins`.

    .venv/bin/python benchmarks/mini/batch_mix.py [--kind-weights recolor=3,...] [--contrast 0.5]
        [--colour-contrast 1] [--steps 300]
"""

from __future__ import annotations

import argparse
from collections import Counter

from openkontext.train.cli import parse_kind_weights
from openkontext.train.transformer import FlowTrainConfig, step_streams
from openkontext.world.sampling import edit_samples
from openkontext.world.scene import alike_shapes

STANDING = "recolor=3,background=3,grayscale=2,invert=2,remove=2"  # in use since 2026-11-30


def batches(steps: int, weights: dict[str, float], contrast: float,
            colour_contrast: float = 0.0, alike_twins: bool = False):
    """The edits of each of the first `steps` steps' batches, drawn as `train mini` draws them."""
    for step in range(steps):
        rng, _ = step_streams(0, step)
        yield edit_samples(rng, FlowTrainConfig.edit_batch, kind_weights=weights,
                           contrast=contrast, colour_contrast=colour_contrast,
                           alike_twins=alike_twins)


def mix(steps: int, weights: dict[str, float], contrast: float,
        colour_contrast: float = 0.0) -> tuple[Counter, int, int, int]:
    """(edits per kind, other-object twins, colour twins, edits) over the first `steps` steps'
    batches (EditSample.twin names each twin's kind)."""
    kinds: Counter = Counter()
    twins: Counter = Counter()
    total = 0
    for samples in batches(steps, weights, contrast, colour_contrast):
        kinds.update(s.kind for s in samples)
        twins.update(s.twin for s in samples)
        total += len(samples)
    return kinds, twins["object"], twins["colour"], total


def alike_share(steps: int, weights: dict[str, float], contrast: float,
                alike_twins: bool) -> float:
    """The share of the other-object twins of the first `steps` steps' batches that name an
    object of a shape alike the one their edit names (`alike_shapes`)."""
    alike = twins = 0
    for samples in batches(steps, weights, contrast, alike_twins=alike_twins):
        for first, twin in zip(samples, samples[1:], strict=False):  # each after its edit
            if twin.twin == "object":
                twins += 1
                alike += alike_shapes(first.source.at(first.edit.cell).shape,
                                      twin.source.at(twin.edit.cell).shape)
    return alike / twins if twins else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind-weights", default=STANDING)
    parser.add_argument("--contrast", type=float, default=0.5)
    parser.add_argument("--colour-contrast", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    weights = parse_kind_weights(args.kind_weights)
    plain, _, _, n0 = mix(args.steps, weights, 0.0)
    paired, twins, _, n1 = mix(args.steps, weights, args.contrast)
    print(f"{args.steps} steps of {FlowTrainConfig.edit_batch} edits, kind weights "
          f"{args.kind_weights}; twins are {twins / n1:.1%} of the edits at --contrast "
          f"{args.contrast}")
    if args.contrast:
        print(f"contrast twins naming a shape alike the named one's: "
              f"{alike_share(args.steps, weights, args.contrast, False):.0%}, "
              f"{alike_share(args.steps, weights, args.contrast, True):.0%} with --alike-twins")
    columns = [("no twins", plain, n0), (f"--contrast {args.contrast}", paired, n1)]
    if args.colour_contrast:
        both, twins2, colour, n2 = mix(args.steps, weights, args.contrast, args.colour_contrast)
        print(f"with --colour-contrast {args.colour_contrast} too: other-object twins "
              f"{twins2 / n2:.1%}, colour twins {colour / n2:.1%} of the edits")
        columns.append((f"--contrast {args.contrast} --colour-contrast {args.colour_contrast}",
                        both, n2))
    print("| kind | " + " | ".join(f"share, {name}" for name, _, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for kind in sorted(set().union(*(counts for _, counts, _ in columns))):
        print(f"| {kind} | " + " | ".join(f"{c[kind] / n:.1%}" for _, c, n in columns) + " |")


if __name__ == "__main__":
    main()
