"""Output sizes: aspect-ratio parsing and snapping to a model's preferred resolutions.

FLUX.1 Kontext [dev] prefers 17 sizes of about one megapixel; an image takes the one whose
aspect ratio is closest to its own. A smaller model (mini) uses the same list scaled to its
native area. Sizes are never cropped: a reference is resized to the chosen size.
"""

from __future__ import annotations

import math

from openkontext.model import KONTEXT_RESOLUTIONS, ModelPreset

MIN_RATIO, MAX_RATIO = 9 / 21, 21 / 9


class SizeError(ValueError):
    """A requested size or aspect ratio the model cannot produce; names the field."""


def parse_aspect_ratio(text: str) -> float:
    """'W:H' -> W / H, between 9:21 and 21:9."""
    try:
        w_text, h_text = text.split(":")
        w, h = float(w_text), float(h_text)
    except ValueError:
        raise SizeError(f"aspect_ratio must look like '16:9', got {text!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise SizeError(f"aspect_ratio must have positive sides, got {text!r}")
    ratio = w / h
    if not MIN_RATIO - 1e-9 <= ratio <= MAX_RATIO + 1e-9:
        raise SizeError(f"aspect_ratio must be between 21:9 and 9:21, got {text!r}")
    return ratio


def preferred_resolutions(preset: ModelPreset) -> list[tuple[int, int]]:
    """The preset's (width, height) list: the Kontext list scaled to its native area."""
    if preset.native_size == 1024:
        return list(KONTEXT_RESOLUTIONS)
    return scaled_resolutions(preset.native_size, preset.latent_multiple)


def scaled_resolutions(native_size: int, multiple: int) -> list[tuple[int, int]]:
    """The Kontext list scaled to a `native_size` square's area, each side a multiple of
    `multiple` (duplicates dropped)."""
    scale = native_size / 1024
    sizes: list[tuple[int, int]] = []
    for w, h in KONTEXT_RESOLUTIONS:
        size = (max(multiple, round(w * scale / multiple) * multiple),
                max(multiple, round(h * scale / multiple) * multiple))
        if size not in sizes:
            sizes.append(size)
    return sizes


def snap(ratio: float, preset: ModelPreset) -> tuple[int, int]:
    """The preferred resolution whose aspect ratio is closest to `ratio` (in log space)."""
    return min(preferred_resolutions(preset), key=lambda s: abs(math.log(s[0] / s[1] / ratio)))


def resolve_size(
    preset: ModelPreset,
    input_size: tuple[int, int] | None = None,
    aspect_ratio: str | None = None,
    width: int | None = None,
    height: int | None = None,
    max_side: int = 2048,
) -> tuple[int, int]:
    """Pick the output (width, height).

    Explicit width and height win (multiples of the model's latent multiple); else
    aspect_ratio; else the input image's aspect ratio; else square.
    """
    m = preset.latent_multiple
    if (width is None) != (height is None):
        raise SizeError("width and height must be given together")
    if width is not None and height is not None:
        if aspect_ratio is not None:
            raise SizeError("give either aspect_ratio or width/height, not both")
        for name, value in (("width", width), ("height", height)):
            if value % m or not m <= value <= max_side:
                raise SizeError(
                    f"{name} must be a multiple of {m} between {m} and {max_side}, got {value}"
                )
        ratio = width / height
        if not MIN_RATIO - 1e-9 <= ratio <= MAX_RATIO + 1e-9:
            raise SizeError(f"width:height must be between 21:9 and 9:21, got {width}x{height}")
        return width, height
    if aspect_ratio is not None:
        return snap(parse_aspect_ratio(aspect_ratio), preset)
    if input_size is not None:
        ratio = min(max(input_size[0] / input_size[1], MIN_RATIO), MAX_RATIO)
        return snap(ratio, preset)
    return snap(1.0, preset)


# The aspect ratios a form offers, widest first (`aspect_ratios` keeps those a model tells apart).
NAMED_RATIOS = ("21:9", "2:1", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16",
                "1:2", "9:21")


def aspect_ratios(preset: ModelPreset) -> list[str]:
    """The named ratios that give `preset` different sizes, widest first; of several that snap
    to one size, the one closest to it (all 13 for Kontext [dev], 5 for mini)."""
    best: dict[tuple[int, int], tuple[float, str]] = {}
    for name in NAMED_RATIOS:
        ratio = parse_aspect_ratio(name)
        size = snap(ratio, preset)
        miss = abs(math.log(size[0] / size[1] / ratio))
        if size not in best or miss < best[size][0]:
            best[size] = (miss, name)
    kept = {name for _, name in best.values()}
    return [name for name in NAMED_RATIOS if name in kept]
