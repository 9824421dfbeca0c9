"""Reference edits: exact ground truth taken from the named picture, distractors that differ."""

from __future__ import annotations

import random

import pytest

from openkontext.world.phrasings import MAX_INSTRUCTION_BYTES
from openkontext.world.references import (
    MAX_REFERENCES,
    ORDINALS,
    REFERENCE_INSTRUCTIONS,
    REFERENCE_KINDS,
    reference_batch,
    sample_reference_edit,
)
from openkontext.world.render import render_batch, render_targets
from openkontext.world.scene import COLORS, SHAPES


def test_every_phrasing_fits_the_instruction_limit_at_its_longest():
    longest_obj = max((f"{c} {s}" for c in COLORS for s in SHAPES), key=len)
    for kind, phrasings in REFERENCE_INSTRUCTIONS.items():
        assert [p.heldout for p in phrasings] == [False] * 5 + [True] * 2, kind
        for p in phrasings:
            text = p.fill({"n": "4", "nth": "fourth", "cell": "bottom right", "obj": longest_obj})
            assert len(text.encode()) <= MAX_INSTRUCTION_BYTES, text


@pytest.mark.parametrize("kind", REFERENCE_KINDS)
def test_the_ground_truth_comes_from_the_named_reference_alone(kind):
    rng = random.Random(f"references:{kind}")
    counts = set()
    for _ in range(200):
        s = sample_reference_edit(rng, kind)
        counts.add(len(s.references))
        assert s.kind == kind and 2 <= s.named <= len(s.references) + 1
        assert str(s.named) in s.instruction or ORDINALS[s.named] in s.instruction
        taken = s.references[s.named - 2]
        others = [r for k, r in enumerate(s.references, start=2) if k != s.named]
        assert s.target.scene != s.source and s.target.filter is None
        if kind == "ref_object":
            (obj,) = taken.objects
            (added,) = set(s.target.scene.objects) - set(s.source.objects)
            assert (added.shape, added.color, added.size) == (obj.shape, obj.color, obj.size)
            assert s.source.at(added.cell) is None and added.cell in s.instruction
            for other in others:  # each distractor shows another object
                (o,) = other.objects
                assert (o.shape, o.color) != (obj.shape, obj.color)
        elif kind == "ref_colour":
            (changed,) = set(s.target.scene.objects) - set(s.source.objects)
            assert changed.color == taken.background
            assert s.target.scene.background == s.source.background
            assert all(o.background != taken.background for o in others)
        else:
            assert s.target.scene == s.source.with_background(taken.background)
            assert all(o.background != taken.background for o in others)
    assert counts == set(range(1, MAX_REFERENCES + 1))


def test_held_out_phrasings_come_only_from_the_held_out_split():
    rng = random.Random(3)
    held = {p.template for ps in REFERENCE_INSTRUCTIONS.values() for p in ps if p.heldout}
    for split, expect in (("train", False), ("heldout", True)):
        for _ in range(60):
            s = sample_reference_edit(rng, split=split)
            assert s.phrasing_split == split
            assert any(_matches(t, s.instruction) for t in held) == expect


def _matches(template: str, text: str) -> bool:
    head = template.split("{")[0]
    tail = template.rsplit("}", 1)[-1]
    return text.startswith(head) and text.endswith(tail) and (head or tail) != ""


def test_the_same_seed_draws_the_same_edits_and_bad_requests_are_refused():
    a = [sample_reference_edit(random.Random(9)) for _ in range(3)]
    b = [sample_reference_edit(random.Random(9)) for _ in range(3)]
    assert a == b
    with pytest.raises(ValueError, match="unknown reference edit kind 'rotate'"):
        sample_reference_edit(random.Random(0), "rotate")
    with pytest.raises(ValueError, match="1 to 3 references, got 4"):
        sample_reference_edit(random.Random(0), "ref_object", 4)


def test_a_batch_renders_every_picture_at_one_non_square_size():
    batch = reference_batch(random.Random(1), 4, (96, 40), references=2)
    assert batch.source.shape == batch.target.shape == (4, 3, 40, 96)
    assert [r.shape for r in batch.references] == [(4, 3, 40, 96)] * 2
    assert batch.mask.shape == (4, 40, 96) and batch.mask.any(dim=(1, 2)).all()
    s = batch.samples[0]
    pixels = render_batch([s.source, *s.references], (96, 40))
    assert (pixels[1] == ((batch.references[0][0].permute(1, 2, 0) + 1) * 127.5).round()
            .byte().numpy()).all()
    assert (render_targets([s.target], (96, 40))[0] != pixels[0]).any()
