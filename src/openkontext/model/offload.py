"""Where the weights live while a model samples: the `Offload` modes, and block streaming for a
transformer larger than the GPU.

- "none": every part stays on `LoadedModel.device`.
- "model": weights in CPU memory; each part (transformer, autoencoder, text encoder) moves to
  the device while it runs, so the GPU holds one part at a time (`LoadedModel.using`).
- "blocks": as "model", except the transformer, whose 12B FLUX.1 weights (24 GB in bf16) fit no
  24 GB GPU: its small parts move to the device, while its blocks stay in CPU memory and are
  streamed there by `streamed_blocks`, a group at a time, at most two groups on the device.

The CPU tensors stay the masters: "moving" a block points its parameters' `.data` and its
buffers at device copies, "dropping" it points them back. Nothing is ever copied back from the
device, and every dtype (fp8 included) moves unchanged. Inference only: gradients are not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

Offload = Literal["none", "model", "blocks"]
OFFLOAD_MODES: tuple[Offload, ...] = ("none", "model", "blocks")

class _Tensors:
    """The parameters and buffers some modules own, with their CPU masters: `swap` points them
    at copies, `restore` back at the masters."""

    def __init__(self, modules: Iterable[nn.Module]):
        self.params: list[tuple[nn.Parameter, Tensor]] = []  # (parameter, its master .data)
        self.buffers: list[tuple[nn.Module, str, Tensor]] = []  # (owner, name, master)
        seen: set[int] = set()  # a parameter shared by two modules is swapped once
        for m in modules:
            for p in m._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    self.params.append((p, p.data))
            self.buffers += [(m, name, b) for name, b in m._buffers.items() if b is not None]
        self.sources = [t for _, t in self.params] + [b for *_, b in self.buffers]

    def pin(self) -> None:
        """Move the masters themselves into page-locked memory (once; they stay there), so
        copies to the GPU can be asynchronous without a second copy of the blocks in RAM."""
        pinned = {id(t): t if t.is_pinned() else t.pin_memory() for t in self.sources}
        self.params = [(p, pinned[id(t)]) for p, t in self.params]
        self.buffers = [(m, name, pinned[id(t)]) for m, name, t in self.buffers]
        self.restore()
        self.sources = [t for _, t in self.params] + [b for *_, b in self.buffers]

    def swap(self, copy: Callable[[Tensor], Tensor]) -> list[Tensor]:
        copies = [copy(t) for t in self.sources]
        for (p, _), c in zip(self.params, copies, strict=False):
            p.data = c
        for (m, name, _), c in zip(self.buffers, copies[len(self.params) :], strict=True):
            m._buffers[name] = c
        return copies

    def restore(self) -> None:
        for p, master in self.params:
            p.data = master
        for m, name, master in self.buffers:
            m._buffers[name] = master


class BlockStreamer:
    """Streams `flux.double_blocks` then `flux.single_blocks` (the order a forward runs them) to
    `device` in groups of `group` blocks: entering group g waits for its copy and starts the
    copy of g + 1 (after the last group, group 0 of the next forward), so the copy overlaps
    g's compute; g is dropped once its last block has run.

    On CUDA the copies come from pinned memory on a side stream, and an event makes the compute
    stream wait for them. Before each copy the host waits until the GPU has finished the group
    dropped last, so two groups at most take device memory however far the host runs ahead.
    Elsewhere the copies are synchronous (clones on the CPU, which the tests check).

    `resident`: group index -> its device copies; `peak`: the most blocks resident at once."""

    def __init__(self, flux: nn.Module, device: torch.device | str, group: int = 1):
        if group < 1:
            raise ValueError(f"group must be at least 1 block, got {group}")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        blocks = [*flux.double_blocks, *flux.single_blocks]
        chunks = [blocks[i : i + group] for i in range(0, len(blocks), group)]
        self.groups = [_Tensors(m for b in chunk for m in b.modules()) for chunk in chunks]
        self.sizes = [len(chunk) for chunk in chunks]
        self.group_of = {b: i // group for i, b in enumerate(blocks)}
        self.last_blocks = {chunk[-1] for chunk in chunks}
        in_blocks = {m for b in blocks for m in b.modules()}
        self.small = _Tensors(m for m in flux.modules() if m not in in_blocks)
        self.resident: dict[int, list[Tensor]] = {}
        self.peak = 0
        self.current: int | None = None  # the group whose blocks are running
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []
        if self.cuda:
            self.copy_stream = torch.cuda.Stream(self.device)
            self.copied: dict[int, torch.cuda.Event] = {}  # group -> its copy is done
            self.freed: torch.cuda.Event | None = None  # the last dropped group's compute is done

    def start(self) -> None:
        """Small parts to the device, blocks pinned (CUDA), hooks on, group 0 on its way."""
        self.small.swap(lambda t: t.to(self.device, copy=True))
        if self.cuda:
            for g in self.groups:
                g.pin()
        for block in self.group_of:
            self.hooks.append(block.register_forward_pre_hook(self._before))
            if block in self.last_blocks:
                self.hooks.append(block.register_forward_hook(self._after))
        if self.groups:
            self._load(0)

    def stop(self) -> None:
        """Hooks off and every tensor pointing at its CPU master again."""
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        for g in list(self.resident):
            self._drop(g)
        self.small.restore()
        self.current = None

    def _before(self, block: nn.Module, _args) -> None:
        if (g := self.group_of[block]) != self.current or g not in self.resident:
            self._enter(g)

    def _after(self, block: nn.Module, _args, _output) -> None:
        self._drop(self.group_of[block])
        self.current = None

    def _enter(self, g: int) -> None:
        nxt = (g + 1) % len(self.groups)
        for stale in [r for r in self.resident if r not in (g, nxt)]:  # a forward cut short
            self._drop(stale)
        self._load(g)
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(self.copied[g])
        self._load(nxt)  # prefetch: copies while g computes
        self.current = g

    def _load(self, g: int) -> None:
        if g in self.resident:
            return
        if not self.cuda:
            self.resident[g] = self.groups[g].swap(lambda t: t.to(self.device, copy=True))
        else:
            if self.freed is not None:
                self.freed.synchronize()
            with torch.cuda.stream(self.copy_stream):
                copies = self.groups[g].swap(lambda t: t.to(self.device, non_blocking=True))
                self.copied[g] = torch.cuda.Event()
                self.copied[g].record(self.copy_stream)
            self.resident[g] = copies
        self.peak = max(self.peak, sum(self.sizes[r] for r in self.resident))

    def _drop(self, g: int) -> None:
        copies = self.resident.pop(g, None)
        if copies is None:
            return
        self.groups[g].restore()
        if self.cuda:
            # Each copy, allocated on the copy stream but used on the compute stream, is freed
            # here with its memory kept from reuse until the compute queued so far is done;
            # `freed` marks that point, after the last of them.
            compute = torch.cuda.current_stream(self.device)
            while copies:
                copies.pop().record_stream(compute)
            self.copied.pop(g, None)
            self.freed = torch.cuda.Event()
            self.freed.record(compute)


@contextmanager
def streamed_blocks(
    flux: nn.Module, device: torch.device | str, group: int = 1
) -> Iterator[BlockStreamer]:
    """For its duration, `flux` runs on `device` with its blocks streamed from CPU memory, a
    group of `group` blocks at a time (see `BlockStreamer`). On exit, even after an error,
    every parameter and buffer is its CPU master again and no hook remains."""
    streamer = BlockStreamer(flux, device, group)
    try:
        streamer.start()
        yield streamer
    finally:
        streamer.stop()
