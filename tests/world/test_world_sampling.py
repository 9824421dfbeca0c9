import random
from collections import Counter

import numpy as np
import pytest
import torch

from openkontext.world.edits import KINDS, apply_edit, edit_options, edit_slots
from openkontext.world.phrasings import DESCRIPTIONS, INSTRUCTIONS
from openkontext.world.render import change_mask, render, render_target
from openkontext.world.sampling import (
    CONTRAST_KINDS,
    check_kind_weights,
    colour_twin,
    contrast_edit,
    edit_batch,
    edit_batch_from,
    edit_samples,
    generation_batch,
    sample_chain,
    sample_edit,
    sample_generation,
)
from openkontext.world.scene import FILTERS, Obj, Scene, Target


def test_samples_are_a_function_of_the_seed():
    def draw(seed):
        rng = random.Random(seed)
        return ([sample_edit(rng) for _ in range(30)], [sample_generation(rng) for _ in range(5)],
                [sample_chain(rng) for _ in range(3)])

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_sample_edit_honours_kinds_and_split():
    rng = random.Random(0)
    samples = [sample_edit(rng, split="heldout") for _ in range(400)]
    assert set(Counter(s.kind for s in samples)) == set(KINDS)
    for s in samples:
        assert s.phrasing_split == "heldout"
        assert s.target == apply_edit(s.source, s.edit)
        assert s.instruction in _instructions(s, heldout=True)
    swaps = [sample_edit(rng, ["swap"]) for _ in range(20)]
    assert {s.kind for s in swaps} == {"swap"} and all(len(s.source.objects) >= 2 for s in swaps)
    with pytest.raises(ValueError, match="unknown edit kind"):
        sample_edit(rng, ["rotate"])
    with pytest.raises(ValueError, match="is possible on this scene"):
        sample_edit(rng, ["remove"], source=Scene("red"))


def test_kind_weights_set_each_kind_s_share_and_none_keeps_the_uniform_draw():
    weights = {"recolor": 6, "background": 3, "night": 0}  # the other 8 kinds weigh 1
    kinds = Counter(s.kind for s in (sample_edit(random.Random(i), kind_weights=weights)
                                     for i in range(1700)))
    assert "night" not in kinds and set(kinds) == set(KINDS) - {"night"}
    # expected shares 6/17, 3/17, 1/17: 600, 300, 100 of 1,700
    assert 540 < kinds["recolor"] < 660 and 255 < kinds["background"] < 345
    assert all(60 < kinds[k] < 145 for k in KINDS if k not in ("recolor", "background", "night"))
    # runs that predate kind weights draw exactly what they drew before: rng.choice of a kind
    for seed in range(20):
        assert sample_edit(random.Random(seed)).kind == random.Random(seed).choice(KINDS)
    # with a source, the weights apply among the kinds possible on it
    one = Scene("red", (Obj("circle", "blue", "center", "small"),))
    drawn = {sample_edit(random.Random(i), source=one, kind_weights={"swap": 5, "add": 0,
                                                                   **dict.fromkeys(FILTERS, 0)}
                         ).kind for i in range(60)}
    assert drawn <= set(KINDS) - {"swap", "add", *FILTERS} and "recolor" in drawn
    with pytest.raises(ValueError, match="all have weight 0"):
        sample_edit(random.Random(0), ["swap", "add"], kind_weights={"add": 0},
                    source=one)


@pytest.mark.parametrize("weights, message", [
    ({"rotate": 2}, "unknown edit kind 'rotate'"),
    ({"recolor": -1}, "weight of 'recolor' must be a number >= 0"),
    ({"recolor": float("nan")}, "weight of 'recolor' must be a number >= 0"),
    ({"recolor": float("inf")}, "weight of 'recolor' must be a number >= 0"),
    ({"recolor": "3"}, "weight of 'recolor' must be a number >= 0"),
    (dict.fromkeys(KINDS, 0), "every edit kind has weight 0"),
])
def test_bad_kind_weights_are_refused_by_name(weights, message):
    with pytest.raises(ValueError, match=message):
        check_kind_weights(weights)
    with pytest.raises(ValueError, match=message):
        edit_batch(random.Random(0), 2, 16, kind_weights=weights)


def _instructions(sample, heldout: bool) -> set[str]:
    """Every text the phrasings of one split give for a sample's edit."""
    slots = edit_slots(sample.source, sample.edit)
    variants = [slots]
    if sample.kind == "swap":
        variants.append({**slots, "obj": slots["obj2"], "obj2": slots["obj"]})
    return {p.fill(v) for p in INSTRUCTIONS[sample.kind] if p.heldout == heldout
            for v in variants}


def test_edit_sample_images_and_mask():
    rng = random.Random(1)
    for _ in range(20):
        s = sample_edit(rng)
        src, tgt, mask = s.images(24)
        assert np.array_equal(src, render(s.source, 24))
        assert np.array_equal(tgt, render_target(s.target, 24))
        assert np.array_equal(mask, (src != tgt).any(-1)) and mask.any()
        assert np.array_equal(src[~mask], tgt[~mask])


def test_chains_have_ground_truth_after_every_turn():
    rng = random.Random(2)
    lengths = set()
    for _ in range(40):
        chain = sample_chain(rng)
        lengths.add(len(chain.turns))
        assert 2 <= len(chain.turns) <= 10
        scene = chain.source
        for i, turn in enumerate(chain.turns):
            assert turn.source == scene
            assert turn.target == apply_edit(scene, turn.edit)
            if turn.kind in FILTERS:
                assert i == len(chain.turns) - 1  # filters only ever come last
            else:
                assert turn.target.filter is None
            scene = turn.target.scene
        assert chain.targets == [t.target for t in chain.turns]
    assert min(lengths) <= 3 and max(lengths) >= 9
    filtered = sample_chain(random.Random(0), turns=3, kinds=["night", "recolor"])
    assert [t.kind for t in filtered.turns][:2] == ["recolor", "recolor"]
    with pytest.raises(ValueError, match="not a filter"):
        sample_chain(rng, turns=3, kinds=["invert"])


def test_chain_rendering_follows_each_turn():
    start = Scene("white", (Obj("circle", "red", "center", "medium"),))
    chain = sample_chain(random.Random(3), turns=4, source=start)
    previous = render(start, 32)
    for turn in chain.turns:
        image = render_target(turn.target, 32)
        assert change_mask(previous, image).any()
        previous = image


def test_generation_samples():
    rng = random.Random(4)
    g = sample_generation(rng, "heldout")
    assert g.phrasing_split == "heldout" and g.target.filter is None
    assert g.description in {d.fill(g.target.scene) for d in DESCRIPTIONS if d.heldout}
    fixed = Scene("pink", (Obj("star", "black", "top", "large"),))
    assert sample_generation(rng, "train", scene=fixed).target == Target(fixed)


def test_edit_batch_tensors():
    batch = edit_batch(random.Random(5), 8, 32, kinds=["move", "night"])
    assert batch.source.shape == batch.target.shape == (8, 3, 32, 32)
    assert batch.source.dtype == torch.float32
    assert batch.source.min() >= -1 and batch.source.max() <= 1
    assert batch.mask.shape == (8, 32, 32) and batch.mask.dtype == torch.bool
    assert torch.equal(batch.mask, (batch.source != batch.target).any(1))
    assert set(batch.kinds) <= {"move", "night"} and len(batch.instructions) == 8
    for i, s in enumerate(batch.samples):
        expected = torch.from_numpy(render_target(s.target, 32)).permute(2, 0, 1) / 127.5 - 1
        assert torch.allclose(batch.target[i], expected)
    again = edit_batch(random.Random(5), 8, 32, kinds=["move", "night"])
    assert torch.equal(again.target, batch.target) and again.instructions == batch.instructions
    gen = generation_batch(random.Random(6), 4, 16)
    assert gen.target.shape == (4, 3, 16, 16) and len(gen.descriptions) == 4


def test_contrast_twins_name_another_object_of_the_same_picture():
    """A twin is the same kind of edit on the same source acting on another object, with the
    same value where that object can take it, and its own ground truth."""
    rng = random.Random(11)
    twins = same_values = 0
    for _ in range(300):
        sample = sample_edit(rng, kinds=list(CONTRAST_KINDS))
        twin = contrast_edit(sample, rng)
        if twin is None:
            continue
        twins += 1
        assert twin.source == sample.source and twin.kind == sample.kind
        assert twin.edit.cell != sample.edit.cell
        assert twin.target == apply_edit(twin.source, twin.edit)
        # the same value (colour, destination, size, shape) wherever another object can take it
        others = [e for e in edit_options(sample.source, sample.kind)
                  if e.cell != sample.edit.cell]
        if any(e.value == sample.edit.value for e in others):
            assert twin.edit.value == sample.edit.value
            same_values += 1
    assert twins > 150 and same_values > 100
    # kinds that name no single object have no twin
    for kind in ("background", "add", "swap", *FILTERS):
        assert contrast_edit(sample_edit(rng, kinds=[kind]), rng) is None
    # a picture with one object has no other object to name
    lone = Scene("white", (Obj("circle", "red", "center", "medium"),))
    assert contrast_edit(sample_edit(rng, kinds=["remove"], source=lone), rng) is None


def test_alike_twins_name_an_alike_shape_where_the_picture_has_one():
    """With alike, a twin names an object of a shape alike the named one's whenever one can take
    the edit (and another object otherwise)."""
    from openkontext.world.scene import alike_shapes

    rng = random.Random(12)
    shares = {False: [0, 0], True: [0, 0]}
    for _ in range(400):
        sample = sample_edit(rng, kinds=["recolor", "remove"])
        named = sample.source.at(sample.edit.cell).shape
        others = [e for e in edit_options(sample.source, sample.kind)
                  if e.cell != sample.edit.cell]
        could = any(alike_shapes(sample.source.at(e.cell).shape, named) for e in others)
        state = rng.getstate()
        for alike in (False, True):
            rng.setstate(state)
            twin = contrast_edit(sample, rng, alike=alike)
            if twin is None:
                continue
            assert twin.source == sample.source and twin.edit.cell != sample.edit.cell
            got = alike_shapes(sample.source.at(twin.edit.cell).shape, named)
            if alike:
                assert got == could
            shares[alike][0] += got
            shares[alike][1] += 1
    assert shares[False][1] == shares[True][1] > 250
    assert shares[True][0] > 1.3 * shares[False][0] > 0  # 156 against 109 of 298
    # off, the batches are those drawn before the option existed
    plain = edit_samples(random.Random(5), 48, kinds=["recolor"], contrast=1.0)
    off = edit_samples(random.Random(5), 48, kinds=["recolor"], contrast=1.0, alike_twins=False)
    assert plain == off
    alike = edit_samples(random.Random(5), 48, kinds=["recolor"], contrast=1.0, alike_twins=True)
    assert alike != plain and sum(s.twin == "object" for s in alike) > 10


def test_contrast_puts_twins_next_to_each_other_and_zero_keeps_the_old_batches():
    weights = {"recolor": 3, "remove": 2}
    rng = random.Random(3)
    before = [sample_edit(rng, kind_weights=weights) for _ in range(24)]  # the draw before twins
    zero = edit_batch(random.Random(3), 24, 32, kind_weights=weights, contrast=0.0)
    assert zero.samples == before
    assert torch.equal(zero.target, edit_batch_from(before, 32).target)
    paired = edit_batch(random.Random(3), 24, 32, kind_weights=weights, contrast=1.0)
    assert len(paired.samples) == 24
    pairs = [(a, b) for a, b in zip(paired.samples, paired.samples[1:], strict=False)
             if a.source == b.source and a.kind == b.kind and a.edit.cell != b.edit.cell]
    assert len(pairs) >= 4
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="must be a fraction in \\[0, 1\\]"):
            edit_batch(random.Random(3), 4, 32, contrast=bad)


def test_colour_twins_recolour_the_same_object_to_another_colour():
    """A colour twin is a recolour of the same object of the same picture to another allowed
    colour, with its own instruction and ground truth; other kinds have none."""
    rng = random.Random(5)
    for _ in range(100):
        sample = sample_edit(rng, kinds=["recolor"])
        twin = colour_twin(sample, rng)
        assert twin.source == sample.source and twin.kind == "recolor"
        assert twin.edit.cell == sample.edit.cell and twin.edit.value != sample.edit.value
        assert twin.target == apply_edit(twin.source, twin.edit) != sample.target
        assert twin.instruction != sample.instruction
    for kind in ("remove", "move", "background", "add", *FILTERS):
        assert colour_twin(sample_edit(rng, kinds=[kind]), rng) is None


def test_colour_contrast_puts_colour_twins_after_recolours_and_zero_changes_nothing():
    weights = {"recolor": 3, "remove": 2}
    plain = edit_batch(random.Random(3), 24, 32, kind_weights=weights, contrast=1.0)
    zero = edit_batch(random.Random(3), 24, 32, kind_weights=weights, contrast=1.0,
                      colour_contrast=0.0)
    assert zero.samples == plain.samples

    def colour_pairs(samples, gap: int) -> int:
        """recolours followed `gap` places later by their colour twin"""
        return sum(a.source == b.source and a.kind == b.kind == "recolor"
                   and a.edit.cell == b.edit.cell and a.edit.value != b.edit.value
                   for a, b in zip(samples, samples[gap:], strict=False))

    alone = edit_batch(random.Random(3), 96, 16, kind_weights=weights, colour_contrast=1.0)
    assert len(alone.samples) == 96 and colour_pairs(alone.samples, 1) >= 8
    assert colour_pairs(plain.samples, 1) == colour_pairs(plain.samples, 2) == 0
    # with both, a recolour is followed by its object twin, then its colour twin
    both = edit_batch(random.Random(3), 96, 16, kind_weights=weights, contrast=1.0,
                      colour_contrast=1.0)
    assert len(both.samples) == 96 and colour_pairs(both.samples, 2) >= 6
    # each twin is tagged with its kind: the same picture and kind as the last edit drawn on its
    # own, another object ("object") or the same one ("colour")
    for i, sample in enumerate(both.samples):
        if sample.twin:
            head = next(h for h in reversed(both.samples[:i]) if not h.twin)
            assert sample.source == head.source and sample.kind == head.kind
            assert (sample.edit.cell == head.edit.cell) == (sample.twin == "colour")
    assert {s.twin for s in both.samples} == {"", "object", "colour"}
    assert {s.twin for s in plain.samples} == {"", "object"}
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="must be a fraction in \\[0, 1\\]"):
            edit_batch(random.Random(3), 4, 32, colour_contrast=bad)
