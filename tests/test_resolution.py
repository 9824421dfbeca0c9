import pytest

from openkontext.model import KONTEXT_RESOLUTIONS, get_preset
from openkontext.resolution import (
    SizeError,
    parse_aspect_ratio,
    preferred_resolutions,
    resolve_size,
    snap,
)

DEV, MINI = get_preset("kontext-dev"), get_preset("mini")


def test_parse_aspect_ratio_limits():
    assert parse_aspect_ratio("16:9") == pytest.approx(16 / 9)
    assert parse_aspect_ratio("21:9") == pytest.approx(21 / 9)
    assert parse_aspect_ratio("9:21") == pytest.approx(9 / 21)
    for bad in ("22:9", "9:22", "abc", "1:0", "-1:2", "16x9"):
        with pytest.raises(SizeError, match="aspect_ratio"):
            parse_aspect_ratio(bad)


def test_dev_snaps_to_the_kontext_list():
    assert preferred_resolutions(DEV) == list(KONTEXT_RESOLUTIONS)
    assert snap(1.0, DEV) == (1024, 1024)
    assert snap(16 / 9, DEV) == (1392, 752)
    assert resolve_size(DEV, input_size=(3000, 2000)) == (1248, 832)
    assert resolve_size(DEV, input_size=(480, 1280)) == (672, 1568)  # clamped to 9:21


def test_mini_list_is_the_kontext_rule_scaled_to_its_native_area():
    sizes = preferred_resolutions(MINI)
    assert (64, 64) in sizes
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in sizes)
    assert len(set(sizes)) == len(sizes)
    assert resolve_size(MINI) == (64, 64)
    assert resolve_size(MINI, input_size=(640, 360)) == (80, 48)
    assert resolve_size(MINI, aspect_ratio="9:16") == (48, 80)


def test_explicit_sizes():
    assert resolve_size(DEV, width=512, height=768) == (512, 768)
    with pytest.raises(SizeError, match="width must be a multiple of 16"):
        resolve_size(DEV, width=500, height=512)
    with pytest.raises(SizeError, match="together"):
        resolve_size(DEV, width=512)
    with pytest.raises(SizeError, match="either"):
        resolve_size(DEV, aspect_ratio="1:1", width=512, height=512)
    with pytest.raises(SizeError, match="21:9"):
        resolve_size(DEV, width=1024, height=256)
