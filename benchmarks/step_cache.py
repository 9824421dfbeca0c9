"""What does step caching cost and save? A sweep of step-cache thresholds on Shapes World edits
with ground truth, for picking the `balanced` and `fast` speeds (`openkontext.speed`).

Cases: --per-kind edits of every kind (recolor, remove, add, ... night) with training
phrasings, written by the world dataset writer from a fixed seed at the embedded model's 64 px.
Every case runs once per threshold through `Kontext.run` (one thread, batch 1, the model's 16
steps, seed 0), the thresholds taking turns within a case so that background load hits them
alike; "quality" is no caching. Per threshold: the median whole-edit time, its speed-up over
quality, the share of steps that ran only the first block, and the PSNR of the outputs
against the ground-truth targets (mean over cases) with its change from quality; then the
change and the speed-up per kind. The curve (speed-up against PSNR change, one line per kind
and one for all) is drawn with PIL into --png.

Usage: OMP_NUM_THREADS=1 python benchmarks/step_cache.py [--per-kind 8]
           [--thresholds 0.02,0.05,...] [--png docs/images/step_cache.png]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from openkontext.eval.dataset import load_cases
from openkontext.eval.metrics import psnr
from openkontext.pipeline import Kontext, Settings
from openkontext.speed import SPEEDS
from openkontext.world.dataset import write_dataset
from openkontext.world.edits import KINDS

THRESHOLDS = (0.02, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, math.inf)
SEED = 5101  # the built-in suite's training-phrasing part (openkontext.eval.suite)
QUALITY = "quality"
LOSS_BUDGET_DB = 0.3  # what the default speed may cost


def label(threshold: float | None) -> str:
    return QUALITY if threshold is None else f"{threshold:g}"


# 1. Running the sweep.


def sweep(kontext: Kontext, cases, names: list[str]) -> dict:
    """name -> {"seconds": [...], "psnr": [...], "skipped": [...], "kind": [...]}, one entry
    per case, the names taking turns within each case."""
    out = {name: defaultdict(list) for name in names}
    steps = kontext.model.preset.default_steps
    for i, case in enumerate(cases):
        source, target = case.input.load(), case.turns[0].target.load()
        image = Image.fromarray(source, "RGB")
        for name in names:
            started = time.perf_counter()
            result = kontext.run(case.turns[0].instruction, [image], Settings(seed=0, speed=name))
            row = out[name]
            row["seconds"].append(time.perf_counter() - started)
            row["psnr"].append(psnr(np.asarray(result.images[0]), target))
            row["skipped"].append(result.skipped_steps / steps)
            row["kind"].append(case.category)
        if (i + 1) % 11 == 0:
            print(f"  {i + 1}/{len(cases)} cases", flush=True)
    return out


def summary(rows: dict, base: dict, kind: str | None = None) -> dict:
    """Median time, speed-up, skipped share and PSNR (and its change) over one kind's cases."""
    pick = [i for i, k in enumerate(rows["kind"]) if kind is None or k == kind]
    seconds = statistics.median(rows["seconds"][i] for i in pick)
    base_seconds = statistics.median(base["seconds"][i] for i in pick)
    db = statistics.fmean(rows["psnr"][i] for i in pick)
    return {
        "seconds": seconds,
        "speedup": base_seconds / seconds,
        "skipped": statistics.fmean(rows["skipped"][i] for i in pick),
        "psnr": db,
        "delta": db - statistics.fmean(base["psnr"][i] for i in pick),
    }


# 2. The picture.


def draw_curve(
    curves: dict[str, list[tuple[float, float, str]]],
    path: Path,
    title: str,
    floor_db: float = -4.0,
) -> None:
    """Line chart: x speed-up over quality, y PSNR change (dB), cut at `floor_db`; one line
    per kind, "all" thick and labelled with its thresholds."""
    width, height, left, right, top, bottom = 960, 600, 70, 160, 64, 64
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    xs = [x for points in curves.values() for x, _, _ in points]
    ys = [y for points in curves.values() for _, y, _ in points]
    x0, x1 = 1.0, max(xs) * 1.05
    y0, y1 = max(min(ys), floor_db), max(max(ys), 0.0) + 0.5
    box = (left, top, width - right, height - bottom)

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (box[2] - left),
            top + (y1 - y) / (y1 - y0) * (box[3] - top),
        )

    # 1. Grid, axes, titles and the loss budget.
    for k in range(math.ceil(y0), math.floor(y1) + 1):
        draw.line([at(x0, k), at(x1, k)], fill=(228, 228, 228))
        draw.text((left - 34, at(x0, k)[1] - 8), f"{k:+d}", fill="black", font=font)
    for k in range(4, math.floor(x1 * 4) + 1, 2 if x1 > 2.5 else 1):
        x = k / 4
        draw.line([at(x, y0), at(x, y1)], fill=(228, 228, 228))
        draw.text((at(x, y0)[0] - 14, box[3] + 6), f"{x:.2f}x", fill="black", font=font)
    budget = at(x0, -LOSS_BUDGET_DB)[1]
    draw.line([(left, budget), (box[2], budget)], fill=(200, 0, 0))
    draw.text(
        (box[2] - 120, budget + 2), f"-{LOSS_BUDGET_DB} dB budget", fill=(200, 0, 0), font=font
    )
    draw.text((left, 10), title, fill="black", font=font)
    draw.text(
        (left, 30),
        f"change in PSNR against ground truth from quality's (dB; cut at {floor_db:+g})",
        fill="black",
        font=font,
    )
    draw.text(
        (box[2] - 190, height - 26), "whole-edit speed-up over quality", fill="black", font=font
    )

    # 2. One line per kind, "all" last and thick, drawn on a layer cut to the plot area.
    palette = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (90, 90, 200),
    ]
    layer = image.copy()
    pen = ImageDraw.Draw(layer)
    for n, (name, points) in enumerate(curves.items()):
        bold = name == "all"
        colour = (0, 0, 0) if bold else palette[n % len(palette)]
        xy = [at(x, y) for x, y, _ in points]
        pen.line(xy, fill=colour, width=4 if bold else 2)
        for (px, py), (_, _, tag) in zip(xy, points, strict=True):
            r = 4 if bold else 2
            pen.ellipse([px - r, py - r, px + r, py + r], fill=colour)
            if bold and tag != QUALITY:
                pen.text((px - 8, py - 22), tag, fill=colour, font=font)
        ly = top + 18 * n
        draw.line(
            [(box[2] + 12, ly + 8), (box[2] + 34, ly + 8)], fill=colour, width=4 if bold else 2
        )
        draw.text((box[2] + 40, ly), name, fill=colour, font=font)
    image.paste(layer.crop(box), box[:2])
    draw.rectangle(box, outline="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


# 3. The report.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-kind", type=int, default=8, help="edit cases of each kind")
    parser.add_argument(
        "--thresholds",
        default=",".join(f"{t:g}" for t in THRESHOLDS),
        help="comma-separated step-cache thresholds ('inf': skip all it can)",
    )
    parser.add_argument("--png", type=Path, default=Path("docs/images/step_cache.png"))
    args = parser.parse_args()
    if args.per_kind < 1:
        parser.error(f"--per-kind must be at least 1, got {args.per_kind}")
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--thresholds must be numbers, got {args.thresholds!r}")
    if any(not t >= 0 for t in thresholds):
        parser.error("--thresholds must be >= 0")

    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    speeds = {QUALITY: None, **{label(t): t for t in thresholds}}
    kontext = Kontext.load(threads=1, speeds=speeds)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset(
            Path(tmp),
            count=args.per_kind * len(KINDS),
            seed=SEED,
            size=kontext.model.preset.native_size,
            categories=KINDS,
        )
        cases = load_cases(path, kontext.model.preset.native_size)
        first = cases[0]
        kontext.run(
            first.turns[0].instruction, [Image.fromarray(first.input.load())], Settings(seed=0)
        )  # untimed warm-up
        rows = sweep(kontext, cases, list(speeds))

    base = rows[QUALITY]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, embedded model "
        f"({kontext.model.preset.name}), {kontext.model.preset.default_steps} steps, "
        f"{len(cases)} edits ({args.per_kind} of each of {len(KINDS)} kinds); "
        f"load average at start {load_before:.1f}"
    )
    print(
        f"{'threshold':>10}{'edit (s)':>10}{'speed-up':>10}{'skipped':>9}{'PSNR (dB)':>11}"
        f"{'change':>8}"
    )
    overall = {name: summary(rows[name], base) for name in speeds}
    for name, s in overall.items():
        print(
            f"{name:>10}{s['seconds']:10.3f}{s['speedup']:9.2f}x{s['skipped']:8.0%}"
            f"{s['psnr']:11.2f}{s['delta']:+8.2f}"
        )

    print("\nPSNR change (dB) / speed-up per kind")
    print(f"{'kind':>11}" + "".join(f"{name:>14}" for name in speeds if name != QUALITY))
    curves: dict[str, list[tuple[float, float, str]]] = {}
    for kind in (*KINDS, "all"):
        cells, points = [], [(1.0, 0.0, QUALITY)]
        for name in speeds:
            if name == QUALITY:
                continue
            s = summary(rows[name], base, None if kind == "all" else kind)
            cells.append(f"{s['delta']:+6.2f}/{s['speedup']:4.2f}x")
            points.append((s["speedup"], s["delta"], name))
        print(f"{kind:>11}" + "".join(f"{c:>14}" for c in cells))
        curves[kind] = points
    steps = kontext.model.preset.default_steps
    draw_curve(
        curves,
        args.png,
        f"Step caching on Shapes World ground truth: embedded model, "
        f"{steps} steps, one thread, {args.per_kind} edits of each kind",
    )

    within = [t for t in thresholds if overall[label(t)]["delta"] >= -LOSS_BUDGET_DB]
    print(
        f"\nlargest threshold within {LOSS_BUDGET_DB} dB of quality: "
        f"{label(max(within)) if within else 'none'}; "
        f"shipped: {', '.join(f'{k} {label(v)}' for k, v in SPEEDS.items())}"
    )
    print(
        f"wrote {args.png}; load average at end {os.getloadavg()[0]:.1f}; "
        f"total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
