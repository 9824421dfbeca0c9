"""Which objects come out in the wrong colour? Per edit kind, every object of the target is
judged by the palette colour most of its interior pixels take in the model's output (as the
layout check does), split into the objects the edit changed and those it left alone.

For recolor it also says what became of the object that was to be recoloured: the asked colour,
still its old colour, or some third colour. This separates "which object" errors (untouched
objects recoloured) from "which colour" errors (the right object, the wrong colour). Filters
are left out: they move every colour. Of the untouched objects a recolour gets wrong it says how
many took the asked colour (the edit landed on them), how many share the named object's shape or
old colour (what the words may have been read as) or sit in a cell next to it, beside the same
shares over all untouched objects, how often the named object took the asked colour too, and
whether they are larger than the named object, come first in reading order, had the colour
nearest the asked one or a shape like its own; and which shapes were painted for which named
shape.
Raw model output, no paste-back.

    .venv/bin/python benchmarks/mini/object_colours.py [--weights DIR] [--cases 64] [--steps 16]
        [--kinds recolor,remove,...]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

import numpy as np

from openkontext.imaging import tensor_to_uint8
from openkontext.sampling import round_trip, run_tensors
from openkontext.weights import load_model
from openkontext.world.edits import KINDS
from openkontext.world.layout import nearest_colours, region_map
from openkontext.world.sampling import edit_batch
from openkontext.world.scene import CELLS, COLORS, FILTERS, SIZES, alike_shapes, cell_row_col

COLOR_NAMES = list(COLORS)


def majority_colours(output: np.ndarray, regions: np.ndarray, count: int) -> list[str | None]:
    """The palette colour most interior pixels of each object take (None: no interior pixel)."""
    nearest = nearest_colours(output)
    colours: list[str | None] = []
    for j in range(count):
        pixels = nearest[regions == j]
        colours.append(COLOR_NAMES[np.bincount(pixels).argmax()] if pixels.size else None)
    return colours


def judge(model, kind: str, cases: int, steps: int, seed: int) -> tuple[Counter, Counter]:
    """Tallies by (role, "total"/"right") and, for recolor, those of `_tally_recolour`: of the
    model's outputs, and of the autoencoder's round trips of the same targets."""
    size = model.preset.native_size
    batch = edit_batch(random.Random(f"{seed}:{kind}"), cases, size, kinds=[kind])
    outputs = run_tensors(model, batch.instructions, list(range(cases)), size, size, steps,
                          None, [batch.source])
    return tuple(_tally(kind, batch.samples, tensor_to_uint8(images), size)
                 for images in (outputs, round_trip(model, batch.target)))


def _tally(kind: str, samples, pixels: np.ndarray, size: int) -> Counter:
    tally: Counter = Counter()
    for sample, image in zip(samples, pixels, strict=True):
        objects = sample.target.scene.objects
        got = majority_colours(image, region_map(sample.target, (size, size)), len(objects))
        before = set(sample.source.objects)
        for obj, colour in zip(objects, got, strict=True):
            if colour is None:
                continue
            role = "untouched" if obj in before else "edited"
            tally[role, "total"] += 1
            tally[role, "right"] += colour == obj.color
        if kind == "recolor":
            _tally_recolour(tally, sample, objects, got, before)
    return tally


def _tally_recolour(tally: Counter, sample, objects, got: list[str | None], before: set) -> None:
    """("recolor", verdict): the named object came out in the asked colour, its old one or
    another. Then, for the untouched objects, ("all", trait) over every judged one and ("wrong",
    trait) over those in a wrong colour. Traits: "count"; "asked colour" (it took the colour the
    named object was to get); "same shape" and "same old colour" (as the named object's, what
    the words may have been read as); "next cell" (one of the eight cells around the named
    object's); "named asked" (the named object came out in the asked colour too, so the edit
    landed on both); "larger" and "same size" (than / as the named object); "read first" (its
    cell comes before the named object's in reading order); "closest colour" (its own colour is,
    of the untouched objects', the nearest in RGB to the asked one, ties included); "alike
    shape" (another shape of the named one's group in ALIKE_SHAPES; the grouping came from the
    painted pairs of --seed 7 on the 49,400-step export, and --seed 8 tested it). And
    ("beside", named shape, its shape) for each judged untouched object, ("painted", ...) for
    each that took the asked colour."""
    index = next(i for i, o in enumerate(objects) if o not in before)
    named, named_got = objects[index], got[index]
    old = sample.source.at(named.cell).color
    if named_got is not None:
        verdict = "asked" if named_got == named.color else "old" if named_got == old else "other"
        tally["recolor", verdict] += 1
    others = [o for o in objects if o is not named]
    closest = min(_distance(o.color, named.color) for o in others) if others else None
    for obj, colour in zip(objects, got, strict=True):
        if obj is named or colour is None:
            continue
        wrong = colour != obj.color
        for group in ("all", "wrong") if wrong else ("all",):
            tally[group, "count"] += 1
            tally[group, "asked colour"] += colour == named.color
            tally[group, "same shape"] += obj.shape == named.shape
            tally[group, "same old colour"] += obj.color == old
            tally[group, "next cell"] += _next_to(obj.cell, named.cell)
            tally[group, "named asked"] += named_got == named.color
            tally[group, "larger"] += SIZES[obj.size] > SIZES[named.size]
            tally[group, "same size"] += obj.size == named.size
            tally[group, "read first"] += CELLS.index(obj.cell) < CELLS.index(named.cell)
            tally[group, "closest colour"] += _distance(obj.color, named.color) == closest
            tally[group, "alike shape"] += alike_shapes(obj.shape, named.shape)
        tally["beside", named.shape, obj.shape] += 1
        if wrong and colour == named.color:
            tally["painted", named.shape, obj.shape] += 1


def painted_by_likeness(tally: Counter) -> dict[bool, tuple[int, int]]:
    """{alike: (untouched objects painted the asked colour, untouched objects)}, split by
    whether their shape is alike the named one's, from `_tally_recolour`'s pairs."""
    counts = {True: [0, 0], False: [0, 0]}
    for key, n in tally.items():
        if key[0] == "beside":
            row = counts[alike_shapes(key[1], key[2])]
            row[0] += tally["painted", key[1], key[2]]
            row[1] += n
    return {alike: (got, n) for alike, (got, n) in counts.items()}


def _distance(a: str, b: str) -> int:
    """Squared RGB distance between two palette colours."""
    return sum((x - y) ** 2 for x, y in zip(COLORS[a], COLORS[b], strict=True))


def _next_to(a: str, b: str) -> bool:
    (ra, ca), (rb, cb) = cell_row_col(a), cell_row_col(b)
    return max(abs(ra - rb), abs(ca - cb)) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped)")
    parser.add_argument("--cases", type=int, default=64, help="edits per kind")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kinds", default=",".join(k for k in KINDS if k not in FILTERS),
                        help="comma-separated edit kinds to judge (filters have no objects)")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS or k in FILTERS]
    if bad or not kinds:
        parser.error(f"--kinds: {', '.join(bad) or 'none given'}: give edit kinds with objects, "
                     f"from {', '.join(k for k in KINDS if k not in FILTERS)}")
    model = load_model(args.weights)
    print(f"objects in their target colour, {args.cases} edits a kind, {args.steps} steps; "
          "in brackets the same judged on the autoencoder's round trip of the target")
    print("| kind | untouched objects | edited objects |")
    print("|---|---|---|")
    recolor = None
    for kind in kinds:
        t, c = judge(model, kind, args.cases, args.steps, args.seed)
        cells = []
        for role in ("untouched", "edited"):
            n = t[role, "total"]
            cells.append(f"{t[role, 'right'] / n:.0%} ({c[role, 'right'] / n:.0%}) of {n}"
                         if n else "n/a")
        print(f"| {kind} | {cells[0]} | {cells[1]} |")
        if kind == "recolor":
            recolor = t
    if recolor is not None:
        verdicts = ("asked", "old", "other")
        n = sum(recolor["recolor", v] for v in verdicts)
        shares = ", ".join(f"{v} {recolor['recolor', v] / n:.0%}" for v in verdicts)
        print(f"\nthe object to recolour came out in: {shares} (of {n})")
        print("\nuntouched objects of a recolour (shape and old colour: as the named object's; "
              "named asked: the named object in the asked colour too)")
        traits = ("asked colour", "same shape", "same old colour", "next cell", "named asked",
                  "larger", "same size", "read first", "closest colour", "alike shape")
        print(f"| | count | {' | '.join(traits)} |")
        print("|---" * (len(traits) + 2) + "|")
        for group, label in (("wrong", "in a wrong colour"), ("all", "all")):
            n = recolor[group, "count"]
            cells = " | ".join(f"{recolor[group, v] / n:.0%}" if n else "n/a" for v in traits)
            print(f"| {label} | {n} | {cells} |")
        beside = [(key[1], key[2], n) for key, n in recolor.items() if key[0] == "beside"]
        pairs = sorted(((recolor["painted", a, b] / n, n, a, b) for a, b, n in beside),
                       reverse=True)
        print("\nthe asked colour on another object, by shape (named -> painted: times, of the "
              "times such an object was beside it): "
              + ", ".join(f"{a} -> {b} {recolor['painted', a, b]} of {n}"
                          for _, n, a, b in pairs))
        painted = painted_by_likeness(recolor)
        for label, alike in (("of an alike shape", True), ("of any other shape", False)):
            got, n = painted[alike]
            print(f"untouched objects {label} took the asked colour: {got} of {n}"
                  + (f" ({got / n:.0%})" if n else ""))


if __name__ == "__main__":
    main()
