"""The built-in Shapes World suite: its composition and its determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from openkontext.eval import build_suite, load_cases
from openkontext.eval.suite import suite_label, suite_size_of
from openkontext.world.edits import KINDS


def test_composition(tmp_path):
    cases = load_cases(build_suite(tmp_path, per_kind=2, size=32), native_size=32)
    singles = [c for c in cases if not c.is_chain]
    by_split = Counter((c.category, c.phrasing_split) for c in singles)
    assert by_split == {**{(k, s): 2 for k in KINDS for s in ("train", "heldout")},
                        ("generation", "train"): 1, ("generation", "heldout"): 1}
    chains = [c for c in cases if c.is_chain]
    assert len(chains) == 1 and len(chains[0].turns) == 5 and chains[0].phrasing_split == "train"
    assert len({c.id for c in cases}) == len(cases) == 2 * 2 * len(KINDS) + 2 + 1
    assert cases[0].id == "train-00000" and chains[0].id == "chain-00000"
    assert cases[0].input.load().shape == (32, 32, 3)


def test_same_size_same_suite_and_a_larger_one_extends_it(tmp_path):
    a = build_suite(tmp_path / "a", per_kind=1, size=32).read_text()
    b = build_suite(tmp_path / "b", per_kind=1, size=32).read_text()
    assert a == b
    first = [line for line in a.splitlines() if line.startswith('{"id": "train-')]
    larger = build_suite(tmp_path / "c", per_kind=2, size=32).read_text().splitlines()
    assert larger[:len(first)] == first


def test_a_suite_needs_at_least_one_case_per_kind(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        build_suite(tmp_path, per_kind=0)


def test_the_suite_label_names_its_size_and_nothing_else_reads_as_one():
    assert suite_label(10) == "suite:shapes:10"
    assert suite_size_of(suite_label(7)) == 7
    for other in ("/data/edits.jsonl", "suite:shapes:", "suite:shapes:ten", None):
        with pytest.raises(ValueError, match="not the built-in suite"):
            suite_size_of(other)


def test_the_plus_suite_holds_other_ratios_and_references(tmp_path):
    cases = load_cases(build_suite(tmp_path, per_kind=2, size=64, suite="shapes-plus"),
                       native_size=64)
    parts = Counter(c.id.rsplit("-", 1)[0] for c in cases)
    assert parts == {"wide": 8, "wide-generation": 2, "wide-chain": 1, "reference-train": 6,
                     "reference-heldout": 6}
    for c in cases:
        size = c.input.size if c.input is not None else c.turns[0].target.size
        if c.id.startswith("wide-generation"):
            assert size in ((88, 48), (48, 88))
        elif c.id.startswith("wide"):
            assert size[0] != size[1] and size[0] % 8 == size[1] % 8 == 0, c.id
            assert c.input.load().shape == (size[1], size[0], 3)
        else:
            assert size == (64, 64) and 1 <= len(c.references) <= 3
            assert c.phrasing_split == c.id.split("-")[1]
            assert c.references[0].load().shape == (64, 64, 3)
    refs = Counter(c.category for c in cases if c.references)
    assert refs == {"ref_object": 4, "ref_colour": 4, "ref_background": 4}
    with pytest.raises(ValueError, match="unknown suite 'shapes-xl'"):
        build_suite(tmp_path / "x", per_kind=1, suite="shapes-xl")
