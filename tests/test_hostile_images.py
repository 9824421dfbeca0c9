"""Every case of the hostile-image corpus (hostile_images.py) gives exactly its expected outcome
through the functions the server calls: `decode_base64`, then `load_image`. Nothing but
ImageError escapes, nothing takes long, and inputs refused by their header decode no pixel."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from hostile_images import Case, corpus, write
from openkontext.imaging import ImageError, decode_base64, load_image

CORPUS = corpus()
SECONDS = 5.0  # each case takes milliseconds; a hang or a slow path shows as seconds
LOSSY = 16  # grey levels a lossy format may move the corner colour


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The format of every image whose pixels were asked for (Image.load) during the test."""
    formats: list[str] = []
    real_open = Image.open

    def spying_open(*args, **kwargs):
        img = real_open(*args, **kwargs)
        real_load = img.load

        def load():
            formats.append(img.format)
            return real_load()

        img.load = load
        return img

    monkeypatch.setattr(Image, "open", spying_open)
    return formats


def outcome(run) -> Image.Image | ImageError:
    """The decoded image, or the ImageError; any other exception fails the test."""
    try:
        return run()
    except ImageError as e:
        return e


def check(case: Case, result: Image.Image | ImageError) -> None:
    if case.refused is not None:
        assert isinstance(result, ImageError), f"accepted: {result}"
        assert case.refused in str(result), str(result)
        assert result.__cause__ is None  # no Pillow exception chained on
        return
    assert not isinstance(result, ImageError), str(result)
    assert result.mode == "RGB" and result.size == case.size and result.info == {}
    if case.corner is not None:
        corner = np.array(result.getpixel((0, 0)), dtype=int)
        assert np.abs(corner - case.corner).max() <= LOSSY, (tuple(corner), case.corner)


@pytest.mark.filterwarnings(
    "ignore::PIL.Image.DecompressionBombWarning", "ignore:Corrupt EXIF data:UserWarning"
)
@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_case_gives_its_expected_outcome(case, decoded):
    start = time.perf_counter()
    result = outcome(lambda: load_image(decode_base64(case.text)))
    assert time.perf_counter() - start < SECONDS
    check(case, result)
    if case.data is not None:  # the bytes themselves, as a file or an http(s) fetch gives them
        check(case, outcome(lambda: load_image(case.data)))
    if case.header_only:
        assert decoded == []


def test_corpus_covers_every_category_both_ways():
    by_category: dict[str, set[bool]] = {}
    for case in CORPUS:
        by_category.setdefault(case.category, set()).add(case.refused is None)
    assert set(by_category) == {
        "bomb",
        "truncated",
        "polyglot",
        "mode",
        "animation",
        "size",
        "exif",
        "data-url",
        "base64",
        "junk",
    }
    # Each category holds inputs to accept and to refuse, except these all-one-way ones.
    one_way = {"mode": {True}, "animation": {True}, "exif": {True}, "junk": {False}}
    for category, outcomes in by_category.items():
        assert outcomes == one_way.get(category, {True, False}), category


def test_written_corpus_matches_the_cases(tmp_path):
    write(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [entry["name"] for entry in manifest] == [c.name for c in CORPUS]
    for entry, case in zip(manifest, CORPUS, strict=True):
        path = tmp_path / entry["file"]
        if case.data is None:
            assert path.read_bytes().decode("utf-8") == case.text
        else:
            assert path.read_bytes() == case.data
