"""Step caching for the transformer while it samples (the idea of diffusers' FirstBlockCache and
of TeaCache): skip most of the blocks on steps where they would barely change anything.

Every step runs the first double-stream block. Its residual on the image stream (block 0's
output minus its input, over the target and the reference tokens) is compared with the same
residual at the last step that ran every block, as a relative L1 change
mean|r - r_last| / mean|r_last|. Below `threshold`, the remaining blocks are skipped and the
output of the last fully computed step's remaining blocks is reused as a residual: joint hidden
= block 0's joint output + (final joint hidden - block 0's joint output, from that step). The
residual spans the whole joint sequence the blocks see: text tokens, target tokens and the
reference tokens Kontext appends. Otherwise every block runs and the cache is refreshed.

The decision is per batch row: a row whose change is below the threshold reuses its own cached
residual even when the others compute, so a request gives the same result batched or alone
(`Kontext.run_many`'s promise); the remaining blocks are skipped, and the time saved, only on
steps where every row agrees. The first step always runs every block; a threshold of 0 never
skips; an infinite one runs the first step and skips every later one.

The cache knows nothing of sizes or presets, so it applies to FLUX.1 Kontext [dev] as to the
mini models: `Flux.forward(..., step_cache=cache)` hands it its blocks. It is an argument, not
state on the module, so one model may sample in several threads at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from openkontext.model.flux import Flux


class StepCache:
    """The state of one sampling run: create one per run (it remembers the run's last step).

    `calls`: transformer forwards seen; `skipped`: those that ran only the first block.
    """

    def __init__(self, threshold: float):
        if not threshold >= 0:
            raise ValueError(f"a step-cache threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.first: Tensor | None = None  # (B, Li, D) block 0's image residual, last full step
        self.rest: Tensor | None = None  # (B, Lt + Li, D) the other blocks' joint residual
        self.calls = 0
        self.skipped = 0

    @property
    def skipped_share(self) -> float:
        """The share of forwards that skipped the blocks after the first."""
        return self.skipped / self.calls if self.calls else 0.0

    def reusable(self, first: Tensor) -> Tensor:
        """(B,) bool: rows whose block-0 residual `first` (B, Li, D) changed less than the
        threshold since their last full step. No row can on a run's first step (or when the
        shapes changed)."""
        if self.first is None or self.first.shape != first.shape:
            return torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
        last = self.first.float()
        change = (first.float() - last).abs().flatten(1).mean(1)
        return change < self.threshold * last.abs().flatten(1).mean(1)

    def run(self, flux: Flux, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        """`flux`'s blocks over img (B, Li, D) and txt (B, Lt, D), the remaining ones skipped
        where the cache allows -> the joint hidden states (B, Lt + Li, D), text first."""
        self.calls += 1
        if len(flux.double_blocks) == 0:  # no first block to judge by
            return flux.blocks(img, txt, vec, pe)
        # 1. The first block, and how much its residual moved.
        after, txt = flux.double_blocks[0](img, txt, vec, pe)
        first = after - img
        head = torch.cat((txt, after), dim=1)  # (B, Lt + Li, D)
        reuse = self.reusable(first)
        if bool(reuse.all()):
            self.skipped += 1
            return head + self.rest
        # 2. The other blocks; rows that may reuse keep their cached residual and their state.
        out = flux.blocks(after, txt, vec, pe, start=1)
        rest = out - head
        if bool(reuse.any()):
            row = reuse[:, None, None]
            out = torch.where(row, head + self.rest, out)
            first = torch.where(row, self.first, first)
            rest = torch.where(row, self.rest, rest)
        self.first, self.rest = first, rest
        return out
