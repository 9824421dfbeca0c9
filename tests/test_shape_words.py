"""benchmarks/mini/shape_words.py: the shape-word similarities of the shipped text encoder."""

import importlib.util
from pathlib import Path

from openkontext.weights import load_model
from openkontext.world.scene import SHAPES

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "shape_words.py"
spec = importlib.util.spec_from_file_location("shape_words", SCRIPT)
shape_words = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shape_words)


def test_every_pair_of_shapes_once_with_a_cosine_below_one():
    text = load_model(None).text
    pairs = shape_words.similarities(text, "paint the {} red")
    assert len(pairs) == len(SHAPES) * (len(SHAPES) - 1) // 2 == 10
    assert all(SHAPES.index(a) < SHAPES.index(b) for a, b in pairs)
    assert all(0 < cos < 0.99 for cos in pairs.values())  # different words, one sentence frame
    # the sentence around the word is encoded too: bare words give other cosines
    assert shape_words.similarities(text, "{}") != pairs


def test_a_template_without_a_slot_is_refused(refused):
    assert "exactly one {}" in refused(shape_words.main, "--template", "paint it red")
