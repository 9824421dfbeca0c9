"""The README's picture: one Shapes World scene edited turn after turn by the embedded model.

A fixed scene and four instructions run as one `Kontext.session` (each turn edits the previous
turn's output, seed 1), drawn as a strip with each turn's instruction under it. The turns are
kinds the model mostly gets right (background, add, remove, night); the picture is whatever the
shipped export makes of them, not a choice among tries.

Usage: python scripts/session_strip.py [--out docs/images/session.png]
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from openkontext import Kontext
from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene

SCENE = {"background": "gray", "objects": [
    {"shape": "circle", "color": "red", "cell": "top left", "size": "large"},
    {"shape": "star", "color": "yellow", "cell": "center", "size": "medium"},
    {"shape": "square", "color": "blue", "cell": "bottom right", "size": "medium"},
]}
TURNS = ("make the background green", "add a small white triangle at the top right",
         "remove the square", "make it night")
TILE, GAP, TEXT = 192, 10, 64


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/session.png"))
    args = parser.parse_args(argv)
    start = to_pil(render(Scene.from_dict(SCENE)))
    session = Kontext.load().session(start, seed=1)
    pictures = [("the input", start)]
    for instruction in TURNS:
        session.edit(instruction)
        pictures.append((f"\"{instruction}\"", session.current))
    font = ImageFont.load_default(size=16)
    sheet = Image.new("RGB", (len(pictures) * (TILE + GAP) - GAP, TILE + TEXT), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (caption, picture) in enumerate(pictures):
        x = i * (TILE + GAP)
        sheet.paste(picture.resize((TILE, TILE), Image.Resampling.NEAREST), (x, 0))
        draw.multiline_text((x + 2, TILE + 6), textwrap.fill(caption, 22), fill="black", font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(TURNS)} turns)")


if __name__ == "__main__":
    main()
