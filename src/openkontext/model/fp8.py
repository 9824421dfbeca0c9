"""fp8 weight storage: float8 e4m3 weights with one float32 scale per output channel.

A `Linear` holding `weight` (out, in) in float8_e4m3fn and `weight_scale` (out, 1), the weight
being `weight * weight_scale`. Half the memory of bf16; the matmul runs in one of two ways:

- "dequant": the layer's weight is widened to the input's dtype just before the matmul and
  dropped after (one layer's worth of extra memory at a time). Every device has it, and on
  CPUs it is the faster one (widening + a bf16 matmul ran 2.3x faster than `torch._scaled_mm`
  on an AVX-512 BF16 CPU, one thread, 2560 x 3072 x 12288).
- "scaled": the input is quantised per row and both go through `torch._scaled_mm`, for GPUs with
  fp8 tensor cores; chosen automatically for bf16 inputs on compute capability 9.0+ (Hopper
  and later, whose kernels take per-row scales); other GPUs widen.

`quantize` makes the (weight, scale) pair from a float weight; checkpoint loading
(`openkontext.weights`) also accepts fp8 files with a per-tensor scale ("scaled fp8":
`<layer>.scale_weight` or `<layer>.weight_scale`) or none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
Matmul = Literal["auto", "dequant", "scaled"]


def quantize(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(out, in) float weight -> (fp8 weight (out, in), float32 scale (out, 1)), each row scaled
    so its largest magnitude lands on the top of e4m3's range."""
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
    return (w / scale).to(FP8), scale


def dequantize(weight: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """The float weight an fp8 (weight, scale) pair stands for."""
    return (weight.float() * scale.float()).to(dtype)


def row_scale(scale: Tensor | None, rows: int) -> Tensor:
    """A checkpoint's scale (none, per tensor, or per output channel) as (rows, 1) float32."""
    if scale is None:
        return torch.ones(rows, 1)
    scale = scale.float().reshape(-1, 1)
    if scale.shape[0] not in (1, rows):
        raise ValueError(f"a weight scale has {scale.shape[0]} values for {rows} rows")
    return scale.expand(rows, 1).contiguous()


class FP8Linear(nn.Module):
    """`nn.Linear` with fp8 weight storage; state_dict keys weight, weight_scale, bias."""

    matmul: Matmul = "auto"  # class-wide choice; tests force each path

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=FP8,
                                                   device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, 1, device=device))
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), False)
            if bias
            else None
        )

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) casts every floating tensor; the stored weight and its scale keep
        # their dtypes and only follow the device (found by applying `fn` to an empty tensor).
        weight, scale = self.weight, self.weight_scale
        device = fn(torch.empty(0, device=weight.device)).device
        self._buffers.pop("weight"), self._buffers.pop("weight_scale")
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers["weight"] = weight.to(device)
            self._buffers["weight_scale"] = scale.to(device)
        return self

    def _scaled(self, x: Tensor) -> bool:
        if self.matmul != "auto":
            return self.matmul == "scaled"
        return (
            x.is_cuda
            and not x.requires_grad  # _scaled_mm has no backward: training (LoRA) widens
            and x.dtype == torch.bfloat16
            and torch.cuda.get_device_capability(x.device) >= (9, 0)
            and self.in_features % 16 == 0
            and self.out_features % 16 == 0
        )

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if not self._scaled(x):
            weight = self.weight.to(x.dtype) * self.weight_scale.to(x.dtype)
            return F.linear(x, weight, bias)
        # fp8 x fp8 -> x.dtype with a scale per input row and per output channel.
        rows = x.reshape(-1, self.in_features).float()
        x_scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
        out = torch._scaled_mm(
            (rows / x_scale).to(FP8),
            self.weight.t(),
            scale_a=x_scale,
            scale_b=self.weight_scale.t().contiguous(),
            bias=bias,
            out_dtype=x.dtype,
        )
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8"


def use_fp8(module: nn.Module, keep: Callable[[str], bool] = lambda name: False) -> int:
    """Replace every `nn.Linear` under `module` (built on the meta device, before loading)
    by an `FP8Linear` of the same shape, except those whose qualified name `keep` accepts.
    -> the number replaced."""
    replaced = 0
    for name, child in list(module.named_modules()):
        for attr, linear in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if type(linear) is nn.Linear and not keep(full):
                fp8 = FP8Linear(linear.in_features, linear.out_features, linear.bias is not None,
                                device=linear.weight.device, dtype=linear.weight.dtype)
                setattr(child, attr, fp8)
                replaced += 1
    return replaced


def fp8_linear_names(module: nn.Module) -> set[str]:
    """Qualified names of the FP8Linear layers under `module`."""
    return {name for name, m in module.named_modules() if isinstance(m, FP8Linear)}


@torch.no_grad()
def quantize_linears_(module: nn.Module, keep: Callable[[str], bool] = lambda name: False) -> int:
    """Store the weights of every loaded `nn.Linear` under `module` in fp8, in place (the float
    weight of each layer is freed as its fp8 copy is made), except those `keep` accepts.
    -> the number converted."""
    names = [n for n, m in module.named_modules() if type(m) is nn.Linear and not keep(n)]
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        linear = getattr(owner, attr)
        fp8 = FP8Linear(linear.in_features, linear.out_features, linear.bias is not None,
                        device="meta")
        weight, scale = quantize(linear.weight)
        fp8.weight, fp8.weight_scale = weight, scale  # buffers, replaced whole
        if linear.bias is not None:
            fp8.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        setattr(owner, attr, fp8)
    return len(names)
