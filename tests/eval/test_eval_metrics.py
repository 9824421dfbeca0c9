"""PSNR, success, preservation and the identity baseline on pictures with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openkontext.eval.metrics import PSNR_CAP, SUCCESS_DB, TurnScore, fit, psnr, score_turn
from openkontext.eval.report import Stats


def grey(value: int, size=(8, 8)) -> np.ndarray:
    return np.full((*size, 3), value, dtype=np.uint8)


def test_identical_images_score_the_cap_not_inf():
    a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert psnr(a, a) == PSNR_CAP == 99.0


@pytest.mark.parametrize("offset", [1, 5, 10, 51])
def test_constant_offset_gives_20_log10_255_over_offset(offset):
    assert psnr(grey(100), grey(100 + offset)) == pytest.approx(20 * math.log10(255 / offset))


def test_tiny_differences_are_capped():
    a = grey(0, (1024, 1024))
    b = a.copy()
    b[0, 0, 0] = 1  # uncapped: about 113 dB
    assert psnr(a, b) == PSNR_CAP


def test_region_selects_pixels_and_an_empty_region_has_no_score():
    a, b = grey(50), grey(50)
    b[:, :4] += 20  # the left half differs by 20
    left = np.zeros((8, 8), dtype=bool)
    left[:, :4] = True
    assert psnr(a, b, ~left) == PSNR_CAP
    assert psnr(a, b, left) == pytest.approx(20 * math.log10(255 / 20))
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 200))  # MSE = 400 / 2
    assert psnr(a, b, np.zeros((8, 8), dtype=bool)) is None
    with pytest.raises(ValueError, match="differ in size"):
        psnr(a, grey(50, (4, 4)))


def test_success_is_psnr_at_least_25_db():
    def score(db):
        return TurnScore(1, "", db, None, db, None, False)

    assert SUCCESS_DB == 25.0
    assert score(25.0).success and score(25.0).identity_success
    assert not score(24.999).success and score(24.999).identity_success is False
    # 255 / 10^(25/20) = 14.3: an offset of 14 succeeds, 15 does not
    assert psnr(grey(0), grey(14)) >= SUCCESS_DB > psnr(grey(0), grey(15))


def test_preservation_outside_a_known_mask_and_identity_beside_it():
    start = grey(100)
    region = np.zeros((8, 8), dtype=bool)
    region[2:4, 2:4] = True  # the edit may change these 4 pixels
    target = start.copy()
    target[region] = 200
    output = target.copy()
    output[~region] += 4  # the model drifted by 4 everywhere else
    s = score_turn(output, target, start, region, identity=start, instruction="x")
    assert s.preservation == pytest.approx(20 * math.log10(255 / 4))
    assert s.psnr == pytest.approx(10 * math.log10(255**2 / (16 * 60 / 64)))
    assert s.identity_preservation == PSNR_CAP  # the input is its own perfect preservation
    assert s.identity_psnr == pytest.approx(10 * math.log10(255**2 / (100**2 * 4 / 64)))
    assert not s.resized and s.turn == 1


def test_generation_has_no_identity_and_no_preservation():
    s = score_turn(grey(10), grey(10))
    assert (s.psnr, s.success) == (PSNR_CAP, True)
    assert s.identity_psnr is s.identity_success is s.preservation is None


def test_an_output_of_another_size_is_resized_to_the_target():
    s = score_turn(grey(77, (16, 20)), grey(77, (8, 8)))
    assert s.resized and s.psnr == PSNR_CAP  # Lanczos keeps a flat picture flat
    image, resized = fit(grey(1), (8, 8))
    assert not resized and image.shape == (8, 8, 3)


def test_stats_medians_means_rates_and_identity_over_cases_with_an_input():
    scores = [
        TurnScore(1, "", 30.0, 40.0, 20.0, 99.0, False),
        TurnScore(1, "", 10.0, None, 26.0, None, False),
        TurnScore(1, "", 20.0, 50.0, None, None, False),  # a generation
    ]
    s = Stats.of(scores)
    assert (s.count, s.psnr_median, s.psnr_mean) == (3, 20.0, 20.0)
    assert s.success_rate == pytest.approx(1 / 3)
    assert (s.preservation_median, s.preservation_count) == (45.0, 2)
    assert (s.identity_count, s.identity_psnr_median, s.identity_psnr_mean) == (2, 23.0, 23.0)
    assert s.identity_success_rate == 0.5 and s.identity_preservation_median == 99.0
    empty = Stats.of([])
    assert empty.count == 0 and empty.psnr_median is None and empty.success_rate is None


def test_layout_is_judged_for_scene_targets_with_the_identity_beside_it():
    from openkontext.world.render import render
    from openkontext.world.scene import Scene, Target

    before = Scene.from_json('{"background": "white", "objects": [{"shape": "square", '
                             '"color": "blue", "cell": "top left", "size": "large"}]}')
    after = Target(Scene.from_json('{"background": "white", "objects": [{"shape": "square", '
                                   '"color": "red", "cell": "top left", "size": "large"}]}'))
    source, target = render(before, 64), render(after.scene, 64)
    right = score_turn(target, target, identity=source, scene=after)
    assert (right.layout, right.identity_layout) == (True, False)
    wrong = score_turn(source, target, identity=source, scene=after)
    assert wrong.layout is False
    assert score_turn(target, target).layout is None  # not a scene: not judged
    stats = Stats.of([right, wrong, score_turn(target, target)])
    assert (stats.layout_count, stats.layout_rate, stats.identity_layout_rate) == (2, 0.5, 0.0)
