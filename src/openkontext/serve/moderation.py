"""Moderation and prompt upsampling: a built-in text policy and two plug-in interfaces.

`safety_tolerance` runs from 0 (strict) to 6 (permissive). The built-in text policy is a short
word list in three bands; a prompt containing a word of a band is refused (`Request Moderated`)
when the request's tolerance is below the band's threshold. Words match whole, ignoring case.
It is a floor, not a classifier: deployments that need more plug in an `ImageClassifier`
(checked on outputs -> `Content Moderated`) and can replace `TEXT_BANDS`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

# (allowed from this tolerance up, words). Band 7 is above the scale: never allowed.
TEXT_BANDS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (7, ("child porn", "csam", "underage nude", "underage sex")),
    (5, ("nude", "naked", "porn", "pornographic", "explicit sex", "genitals", "topless")),
    (3, ("gore", "gory", "dismembered", "decapitated", "mutilated", "disembowelled")),
    (1, ("blood", "bloody", "corpse", "nsfw")),
)


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    reason: str | None = None


class TextPolicy:
    def __init__(self, bands: Sequence[tuple[int, Sequence[str]]] = TEXT_BANDS):
        self.bands = [
            (level, re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I))
            for level, words in bands
        ]

    def check(self, prompt: str, tolerance: int) -> Verdict:
        for level, pattern in self.bands:
            match = pattern.search(prompt)
            if match and tolerance < level:
                return Verdict(
                    True,
                    f"the prompt contains {match.group(0).lower()!r}, refused below "
                    f"safety_tolerance {level}" if level <= 6 else
                    f"the prompt contains {match.group(0).lower()!r}, which is never allowed",
                )
        return Verdict(False)


class ImageClassifier(Protocol):
    """Checks generated images before they are stored; a flag gives `Content Moderated`."""

    def __call__(self, images: list[Image.Image], tolerance: int) -> Verdict: ...


class PromptUpsampler(Protocol):
    """Rewrites a prompt into a richer one; `images` are the decoded inputs (may be empty)."""

    def __call__(self, prompt: str, images: list[Image.Image]) -> str: ...


def load_plugin(path: str | None):
    """'package.module:attribute' -> the attribute (called once if it is a class), or None."""
    if not path:
        return None
    module, colon, attr = path.partition(":")
    if not colon:
        raise ValueError(f"plug-in path must look like 'module:attribute', got {path!r}")
    obj = getattr(importlib.import_module(module), attr)
    return obj() if isinstance(obj, type) else obj
