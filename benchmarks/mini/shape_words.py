"""How alike the text encoder finds the shape words: the cosine similarity of the pooled
sentence vectors of "paint the <shape> red" for each pair of Shapes World shapes. Recolours
that miss paint the asked colour on another object, mostly one whose shape looks like the named
one's (benchmarks/mini/object_colours.py); if the words of those shapes were also the closest here,
the encoder could be part of the confusion.

    .venv/bin/python benchmarks/mini/shape_words.py [--weights DIR] [--template "paint the {} red"]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from openkontext.weights import load_model
from openkontext.world.scene import SHAPES


def similarities(text_encoder, template: str) -> dict[tuple[str, str], float]:
    """{(shape a, shape b): cosine of their sentences' pooled vectors} for each pair a < b in
    SHAPES order."""
    with torch.no_grad():
        _, vec = text_encoder.encode([template.format(shape) for shape in SHAPES])
    unit = torch.nn.functional.normalize(vec.float(), dim=-1)
    return {(SHAPES[a], SHAPES[b]): round(float(unit[a] @ unit[b]), 3)
            for a, b in itertools.combinations(range(len(SHAPES)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the shipped)")
    parser.add_argument("--template", default="paint the {} red",
                        help="the sentence, with {} where the shape word goes")
    args = parser.parse_args()
    if args.template.count("{}") != 1:
        parser.error(f"--template needs exactly one {{}} for the shape word: {args.template!r}")
    model = load_model(args.weights)
    pairs = similarities(model.text, args.template)
    print(f"cosine of the pooled text vectors of {args.template!r}, most alike first")
    print("| shapes | cosine |")
    print("|---|---|")
    for (a, b), cos in sorted(pairs.items(), key=lambda kv: -kv[1]):
        print(f"| {a} / {b} | {cos:.3f} |")


if __name__ == "__main__":
    main()
