"""The picture in docs/shapes-world.md: one row per edit kind, and one for generation.

Each row: the instruction, the input scene, the ground truth (what a perfect edit gives) and the
embedded model's output, 64 px shown at 3x. The edits are drawn from Shapes World with a fixed
seed (one per kind, in trained phrasings; the generation row has at least two objects), and the
model runs with seed 1, so the picture is the same on every run of the same export.

Usage: python scripts/shapes_world_gallery.py [--out docs/images/shapes_world.png] [--seed 4]
"""

from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from openkontext import Kontext
from openkontext.world.edits import KINDS
from openkontext.world.render import render_targets, to_pil
from openkontext.world.sampling import sample_edit, sample_generation

SCALE = 3
TILE = 64 * SCALE
GAP = 8
LABEL = 330  # width of the text column


def _big(image: Image.Image) -> Image.Image:
    return image.resize((TILE, TILE), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/shapes_world.png"))
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    kontext = Kontext.load()
    rows: list[tuple[str, Image.Image | None, Image.Image, Image.Image]] = []
    for i, kind in enumerate(KINDS):
        sample = sample_edit(random.Random(args.seed * 100 + i), kinds=[kind])
        source, target, _ = sample.images(64)
        out = kontext.edit(to_pil(source), sample.instruction, seed=1).images[0]
        rows.append((f"{kind}: \"{sample.instruction}\"", to_pil(source), to_pil(target), out))
    rng = random.Random(args.seed * 100 + len(KINDS))
    while len((gen := sample_generation(rng)).target.scene.objects) < 2:
        pass  # a description with something in it
    truth = to_pil(render_targets([gen.target], 64)[0])
    out = kontext.generate(gen.description, seed=1).images[0]
    rows.append((f"generate: \"{gen.description}\"", None, truth, out))

    font = ImageFont.load_default(size=17)
    header = 30
    sheet = Image.new("RGB", (LABEL + 3 * (TILE + GAP), header + len(rows) * (TILE + GAP)),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(("input", "ground truth", "embedded model")):
        draw.text((LABEL + j * (TILE + GAP) + 4, 4), title, fill="black", font=font)
    for r, (label, source, target, output) in enumerate(rows):
        y = header + r * (TILE + GAP)
        draw.multiline_text((4, y + 8), textwrap.fill(label, 34), fill="black", font=font,
                            spacing=4)
        for j, image in enumerate((source, target, output)):
            if image is not None:
                sheet.paste(_big(image), (LABEL + j * (TILE + GAP), y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(rows)} rows)")


if __name__ == "__main__":
    main()
