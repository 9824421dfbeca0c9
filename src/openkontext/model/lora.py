"""LoRA adapters on the transformer: low-rank updates W += strength * scale * up @ down.

A `Lora` is a set of `LoraDelta`s keyed by our module names (the BFL names of `Flux`:
`double_blocks.0.img_attn.qkv`, `single_blocks.3.linear1`, ...). A delta may update only some
output rows of a fused layer: diffusers' separate to_q/to_k/to_v adapters land on the thirds
of our `qkv`, and single blocks' to_q/to_k/to_v/proj_mlp on the four slices of `linear1`.

Two ways to apply them:
- `applied(flux, [(lora, strength), ...])`: runtime adapters for the duration (each target
  layer wrapped in a `LoraLinear` that adds its deltas' output to the base layer's), so several
  LoRAs at their own strengths serve one request and are gone for the next, on any weight
  storage (fp8 included) and without touching the base weights;
- `fuse_(flux, lora, strength)`: folded into float weights once, for a process that serves one
  set to every request (no per-step cost; fp8-stored layers are widened, updated and stored
  again).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openkontext.model.fp8 import FP8Linear, dequantize, quantize


@dataclass
class LoraDelta:
    """One low-rank update of a linear layer, or of its output rows [start, stop)."""

    down: Tensor  # (rank, in_features)
    up: Tensor  # (stop - start, rank)
    scale: float = 1.0  # the trainer's own scaling (alpha / rank for kohya and PEFT)
    rows: tuple[int, int] | None = None  # None: every output row

    def matrix(self) -> Tensor:
        """The dense update, float32: (rows, in_features)."""
        return self.scale * (self.up.float() @ self.down.float())


@dataclass
class Lora:
    """A LoRA file, mapped onto our module names."""

    name: str
    deltas: dict[str, list[LoraDelta]] = field(default_factory=dict)

    def add(self, module: str, delta: LoraDelta) -> None:
        self.deltas.setdefault(module, []).append(delta)

    @property
    def rank(self) -> int:
        return max((d.down.shape[0] for ds in self.deltas.values() for d in ds), default=0)


def linear_shapes(flux: nn.Module) -> dict[str, tuple[int, int]]:
    """{module name: (out_features, in_features)} of every linear layer (float or fp8, under
    any runtime adapters) a LoRA may update: what `check_fits` checks a LoRA against, small
    enough to send to a process that holds no model."""
    modules = dict(flux.named_modules())
    shapes = {}
    for name, module in modules.items():
        if isinstance(modules.get(name.rpartition(".")[0]), LoraLinear):
            continue  # an adapter's base layer: listed under the adapter's name
        layer = _unwrapped(module)
        if isinstance(layer, (nn.Linear, FP8Linear)):
            shapes[name] = (layer.out_features, layer.in_features)
    return shapes


def check_fits(layers: Mapping[str, tuple[int, int]], lora: Lora) -> None:
    """ValueError naming the first layer the LoRA does not fit: a module that is not one of the
    model's linear `layers` (`linear_shapes`), or shapes that disagree (a LoRA made for another
    model)."""
    for name, deltas in lora.deltas.items():
        if name not in layers:
            raise ValueError(f"LoRA {lora.name!r}: {name} is no linear layer of this model")
        out_features, in_features = layers[name]
        for d in deltas:
            start, stop = d.rows or (0, out_features)
            want_down, want_up = (d.down.shape[0], in_features), (stop - start, d.down.shape[0])
            if (tuple(d.down.shape) != want_down or tuple(d.up.shape) != want_up
                    or stop > out_features):
                raise ValueError(
                    f"LoRA {lora.name!r} does not fit {name}: down {list(d.down.shape)}, "
                    f"up {list(d.up.shape)} for rows {start}..{stop} of a "
                    f"{out_features}x{in_features} layer"
                )


class LoraLinear(nn.Module):
    """A linear layer (float or fp8) plus low-rank adapters added to its output."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.out_features = base.out_features
        self.in_features = base.in_features
        self.adapters: list[tuple[LoraDelta, float]] = []

    def add(self, delta: LoraDelta, strength: float) -> None:
        # Buffers, so `.to()` and block streaming move them with the layer.
        i = len(self.adapters)
        self.register_buffer(f"down_{i}", delta.down, persistent=False)
        self.register_buffer(f"up_{i}", delta.up, persistent=False)
        self.adapters.append((delta, strength))

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        for i, (delta, strength) in enumerate(self.adapters):
            down, up = getattr(self, f"down_{i}"), getattr(self, f"up_{i}")
            u = F.linear(F.linear(x, down.to(x.dtype)), up.to(x.dtype))
            u = u * (delta.scale * strength)
            if delta.rows is not None:  # place the rows inside the fused output
                start, stop = delta.rows
                u = F.pad(u, (start, self.out_features - stop))
            y = y + u
        return y


def _unwrapped(layer: nn.Module | None) -> nn.Module | None:
    """The base layer under any runtime adapters (`applied` inside `applied` nests them)."""
    while isinstance(layer, LoraLinear):
        layer = layer.base
    return layer


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return (root.get_submodule(parent) if parent else root), attr


@contextmanager
def applied(flux: nn.Module, loras: Sequence[tuple[Lora, float]]) -> Iterator[nn.Module]:
    """Runtime adapters for the duration; every layer is its own again on exit."""
    if not loras:
        yield flux
        return
    layers = linear_shapes(flux)
    for lora, _ in loras:
        check_fits(layers, lora)
    device = next(flux.parameters()).device
    wrapped: dict[str, LoraLinear] = {}
    try:
        for lora, strength in loras:
            for name, deltas in lora.deltas.items():
                if name not in wrapped:
                    parent, attr = _parent(flux, name)
                    wrapped[name] = LoraLinear(getattr(parent, attr))
                    setattr(parent, attr, wrapped[name])
                for d in deltas:
                    wrapped[name].add(LoraDelta(d.down.to(device), d.up.to(device), d.scale,
                                                d.rows), strength)
        yield flux
    finally:
        for name, wrapper in wrapped.items():
            parent, attr = _parent(flux, name)
            setattr(parent, attr, wrapper.base)


@torch.no_grad()
def fuse_(flux: nn.Module, lora: Lora, strength: float = 1.0) -> None:
    """Fold a LoRA into the weights, in place (negative strength takes it out again, up to
    rounding)."""
    check_fits(linear_shapes(flux), lora)
    for name, deltas in lora.deltas.items():
        layer = _unwrapped(flux.get_submodule(name))
        fp8 = isinstance(layer, FP8Linear)
        weight = dequantize(layer.weight, layer.weight_scale, torch.float32) if fp8 else (
            layer.weight.float())
        for d in deltas:
            start, stop = d.rows or (0, layer.out_features)
            weight[start:stop] += strength * d.matrix().to(weight.device)
        if fp8:
            layer.weight, layer.weight_scale = quantize(weight)
        else:
            layer.weight.copy_(weight.to(layer.weight.dtype))
