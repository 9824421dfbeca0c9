"""Keep unedited pixels bit-identical to the input ("paste-back").

The model regenerates every pixel, so even untouched areas drift a little, and over many turns
the drift adds up. After decoding, the region the edit changed is found by comparing the output
with a baseline (optionally grown by a margin), and every pixel outside it is copied back from
the input.

The baseline is best the input passed through the autoencoder (encode, then decode): an output
that left a region alone can be no closer to the input than that round trip, so comparing with
the input itself counts the autoencoder's own error (soft edges, shifted colours) as changes.
The default threshold and margin were chosen on 240 fresh Shapes World edits with the mini model
(benchmarks/mini/paste_back_sweep.py; docs/mini.md, `mini` 5,200 to 14,400 steps).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def changed_region(
    original: np.ndarray,
    edited: np.ndarray,
    threshold: int = 48,
    grow: int = 0,
    min_fraction_for_global: float = 0.6,
) -> np.ndarray:
    """Where the edit changed the picture: (H, W) bool.

    original, edited: (H, W, 3) uint8 of the same size (original may be the input's
    autoencoder round trip, see above). A pixel is changed when any channel differs by more than
    `threshold`; the region is dilated by `grow` px. When most of the image changed (a global
    edit such as a filter or a new background), all of it is returned.
    """
    if original.shape != edited.shape:
        raise ValueError(f"sizes differ: {original.shape} vs {edited.shape}")
    diff = np.abs(original.astype(np.int16) - edited.astype(np.int16)).max(axis=-1)
    changed = diff > threshold
    if changed.mean() >= min_fraction_for_global:
        return np.ones_like(changed)
    if grow > 0 and changed.any():
        t = torch.from_numpy(changed.astype(np.float32))[None, None]
        t = F.max_pool2d(t, kernel_size=2 * grow + 1, stride=1, padding=grow)
        changed = t[0, 0].numpy() > 0
    return changed


def paste_back(
    original: np.ndarray, edited: np.ndarray, baseline: np.ndarray | None = None, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """(result, region): the edited pixels inside the changed region, the input elsewhere.

    baseline: what `edited` is compared with to find the region (default: the input itself);
    pass the input's autoencoder round trip."""
    region = changed_region(original if baseline is None else baseline, edited, **kwargs)
    return np.where(region[..., None], edited, original), region
