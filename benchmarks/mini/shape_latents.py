"""How far apart the autoencoder keeps the shapes: for one object drawn in each of the five
shapes (same colour, background, cell and size), the distance between each pair's pixels and
between their latents, the transformer's view of the picture. Recolours that miss paint the
asked colour mostly on an object whose shape looks like the named one's
(benchmarks/mini/object_colours.py); if the latent pulled those shapes closer together than their
pixels are, the autoencoder would be part of the confusion.

    .venv/bin/python benchmarks/mini/shape_latents.py [--weights DIR] [--pictures 64] [--seed 0]

Distances are root-mean-square over the whole picture (pixels in [-1, 1]) and over the whole
latent (after the autoencoder's scale and shift, as the transformer sees it); the ratio is the
share of a pair's pixel difference the latent keeps, relative to the mean over all pairs. Last,
each picture's round trip through the autoencoder is matched to the nearest of its set's five
pictures: whether the decoder draws the shape it was given.
"""

from __future__ import annotations

import argparse
import itertools
import random

import torch

from openkontext import imaging
from openkontext.weights import load_model
from openkontext.world.render import render_batch
from openkontext.world.scene import CELLS, COLORS, SHAPES, SIZES, Obj, Scene, alike_shapes


def shape_sets(pictures: int, seed: int) -> list[list[Scene]]:
    """`pictures` sets of five one-object scenes, one per shape in SHAPES order, alike in
    everything else."""
    rng = random.Random(seed)
    sets = []
    for _ in range(pictures):
        color = rng.choice(list(COLORS))
        background = rng.choice([c for c in COLORS if c != color])
        cell, size = rng.choice(CELLS), rng.choice(list(SIZES))
        sets.append([Scene(background, (Obj(shape, color, cell, size),)) for shape in SHAPES])
    return sets


def pictures(sets: list[list[Scene]], size: int) -> torch.Tensor:
    """The sets' scenes rendered, set after set: (len(sets) * 5, 3, size, size) in [-1, 1]."""
    return imaging.image_to_tensor(list(render_batch([s for group in sets for s in group], size)))


def pair_distances(ae, sets: list[list[Scene]], size: int = 64
                   ) -> dict[tuple[str, str], tuple[float, float]]:
    """{(shape a, shape b): (mean RMS pixel distance, mean RMS latent distance)} for each pair
    a < b in SHAPES order, averaged over the sets."""
    pixels = pictures(sets, size)
    with torch.no_grad():
        latents = ae.encode(pixels)
    pixels = pixels.reshape(len(sets), len(SHAPES), -1)
    latents = latents.reshape(len(sets), len(SHAPES), -1).float()
    out = {}
    for a, b in itertools.combinations(range(len(SHAPES)), 2):
        pix = (pixels[:, a] - pixels[:, b]).pow(2).mean(-1).sqrt().mean()
        lat = (latents[:, a] - latents[:, b]).pow(2).mean(-1).sqrt().mean()
        out[SHAPES[a], SHAPES[b]] = (float(pix), float(lat))
    return out


def round_trip_nearest(ae, sets: list[list[Scene]], size: int = 64) -> dict[str, dict[str, int]]:
    """{shape: {shape whose picture its round trip is nearest: times}}: each picture encoded and
    decoded, then matched by RMS distance against the five pictures of its set. A round trip
    nearest another shape's picture means the decoder drew that shape back."""
    pixels = pictures(sets, size)
    with torch.no_grad():
        back = ae.decode(ae.encode(pixels)).float()
    pixels = pixels.reshape(len(sets), len(SHAPES), -1)
    back = back.reshape(len(sets), len(SHAPES), -1)
    # (set, round trip of shape a, picture of shape b)
    nearest = torch.cdist(back, pixels).argmin(-1)
    out = {shape: dict.fromkeys(SHAPES, 0) for shape in SHAPES}
    for row in nearest.tolist():
        for a, b in enumerate(row):
            out[SHAPES[a]][SHAPES[b]] += 1
    return out


def relative_kept(distances: dict[tuple[str, str], tuple[float, float]]
                  ) -> dict[tuple[str, str], float]:
    """Each pair's latent / pixel distance over the mean of that ratio across pairs: below 1, the
    latent keeps less of that pair's difference than of the average pair's."""
    ratios = {pair: lat / pix for pair, (pix, lat) in distances.items()}
    mean = sum(ratios.values()) / len(ratios)
    return {pair: r / mean for pair, r in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped)")
    parser.add_argument("--pictures", type=int, default=64,
                        help="how many colour / background / cell / size draws")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.pictures < 1:
        parser.error(f"--pictures must be at least 1, got {args.pictures}")
    ae = load_model(args.weights).ae.float()
    distances = pair_distances(ae, shape_sets(args.pictures, args.seed), ae.params.resolution)
    kept = relative_kept(distances)
    print(f"{args.pictures} pictures a shape, seed {args.seed}; RMS distances, most kept first")
    print("| shapes | alike | pixels | latent | latent kept, relative |")
    print("|---|---|---|---|---|")
    for pair in sorted(kept, key=lambda p: -kept[p]):
        pix, lat = distances[pair]
        alike = "yes" if alike_shapes(*pair) else ""
        print(f"| {pair[0]} / {pair[1]} | {alike} | {pix:.4f} | {lat:.4f} | {kept[pair]:.2f} |")
    for label, want in (("alike", True), ("other", False)):
        group = [p for p in kept if alike_shapes(*p) == want]
        pix = sum(distances[p][0] for p in group) / len(group)
        lat = sum(distances[p][1] for p in group) / len(group)
        rel = sum(kept[p] for p in group) / len(group)
        print(f"{label} pairs ({len(group)}): pixels {pix:.4f}, latent {lat:.4f}, kept {rel:.2f}")
    print("each shape's round trip (encoded and decoded) nearest its own picture, by size"
          " (and the other shapes it came nearest)")
    sets = shape_sets(args.pictures, args.seed)
    for size in SIZES:
        sized = [group for group in sets if group[0].objects[0].size == size]
        if not sized:
            continue
        nearest = round_trip_nearest(ae, sized, ae.params.resolution)
        cells = []
        for shape, counts in nearest.items():
            others = ", ".join(f"{o} {n}" for o, n in counts.items() if n and o != shape)
            cells.append(f"{shape} {counts[shape]}" + (f" ({others})" if others else ""))
        print(f"  {size}, {len(sized)} sets: " + "; ".join(cells))


if __name__ == "__main__":
    main()
