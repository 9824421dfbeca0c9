"""Scores of one edit: PSNR to the target, success, preservation, and the identity baseline.

- PSNR is over all pixels and channels of uint8 images: 10 log10(255^2 / MSE), capped at
  PSNR_CAP = 99 dB. Identical images score exactly 99 dB (never inf), so every figure is a
  finite number in JSON, means stay defined, and a 1-level change in a single pixel of a
  1024 px image (about 113 dB uncapped) does not read as better than a perfect copy.
- Success: PSNR to the target >= SUCCESS_DB (25 dB).
- Scores are taken at the target's own size. An output of another size is first resized to the
  target's size with Lanczos (`RESIZE_FILTER`, as the pipeline resizes references) and the
  score is flagged `resized`. Preservation likewise works at the size of the picture the turn
  started from.
- Preservation: PSNR between the output and the picture the turn started from (the input; in a
  chain, the previous turn's ground truth), over the pixels outside the change mask only.
  None when the mask is unknown or covers the whole picture (a filter, a new background).
- Identity baseline: the same figures for "return the input unchanged" (in a chain, the
  original input at every turn). None for generations, which have no input.
- Layout (Shapes World targets without a filter only, else None): every object of the target
  in its cell and colour and every cell's background right (`world.layout`), at the target's
  size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from openkontext import imaging
from openkontext.world.layout import layout_correct
from openkontext.world.scene import Target

PSNR_CAP = 99.0
SUCCESS_DB = 25.0
RESIZE_FILTER = "lanczos"


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float | None:
    """PSNR in dB of two (H, W, 3) uint8 images, over `region` ((H, W) bool) if given.

    None when the region is empty; PSNR_CAP when the pixels are identical.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    if region is not None:
        if region.shape != a.shape[:2]:
            raise ValueError(f"region is {region.shape}, images are {a.shape[:2]}")
        diff = diff[region]
    if diff.size == 0:
        return None
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def fit(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """`image` at (width, height) -> (image, whether it had to be resized)."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image, False
    resized = imaging.resize_image(Image.fromarray(image, "RGB"), size)
    return imaging.image_to_array(resized), True


@dataclass(frozen=True)
class TurnScore:
    """The figures of one edit (or generation), and of the identity baseline beside them."""

    turn: int  # 1-based; always 1 outside chains
    instruction: str
    psnr: float
    preservation: float | None
    identity_psnr: float | None
    identity_preservation: float | None
    resized: bool  # the output was resized to the target's size before scoring
    layout: bool | None = None  # colours in the right places (unfiltered scene targets)
    identity_layout: bool | None = None

    @property
    def success(self) -> bool:
        return self.psnr >= SUCCESS_DB

    @property
    def identity_success(self) -> bool | None:
        return None if self.identity_psnr is None else self.identity_psnr >= SUCCESS_DB

    def to_dict(self) -> dict:
        d = asdict(self)
        d["success"], d["identity_success"] = self.success, self.identity_success
        return d


def score_turn(
    output: np.ndarray,
    target: np.ndarray,
    start: np.ndarray | None = None,
    region: np.ndarray | None = None,
    identity: np.ndarray | None = None,
    turn: int = 1,
    instruction: str = "",
    scene: Target | None = None,
) -> TurnScore:
    """Score one output (H, W, 3) uint8 against its target.

    start: the ground-truth picture the turn began from; region: its change mask ((H, W) bool at
    start's size, True = may change); identity: what the identity baseline returns (the input);
    scene: the target as a Shapes World scene, when it is one (for the layout check).
    """
    th, tw = target.shape[:2]
    out_t, resized = fit(output, (tw, th))
    ident_t = None if identity is None else fit(identity, (tw, th))[0]
    ident_psnr = None if ident_t is None else psnr(ident_t, target)
    keep = None
    if start is not None and region is not None:
        if region.shape != start.shape[:2]:
            raise ValueError(f"mask is {region.shape}, its image is {start.shape[:2]}")
        keep = ~region
    preservation = ident_preservation = None
    if keep is not None:
        sh, sw = start.shape[:2]
        preservation = psnr(fit(output, (sw, sh))[0], start, keep)
        if identity is not None:
            ident_preservation = psnr(fit(identity, (sw, sh))[0], start, keep)
    return TurnScore(
        turn=turn,
        instruction=instruction,
        psnr=psnr(out_t, target),
        preservation=preservation,
        identity_psnr=ident_psnr,
        identity_preservation=ident_preservation,
        resized=resized,
        layout=None if scene is None else layout_correct(out_t, scene),
        identity_layout=None
        if scene is None or ident_t is None
        else layout_correct(ident_t, scene),
    )
