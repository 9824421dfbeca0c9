"""fp8 weight storage: per-row quantisation, both matmul paths, dtype moves that leave the fp8
weight alone, state_dict round trips, and the two ways a model gets its FP8Linear layers (built
on the meta device and filled, or converted once loaded)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import randomise_
from openkontext.model.fp8 import (
    FP8,
    FP8_MAX,
    FP8Linear,
    dequantize,
    fp8_linear_names,
    quantize,
    quantize_linears_,
    row_scale,
    use_fp8,
)

# e4m3's top binade [256, 448] has steps of 32: rounding to nearest is off by at most 16 there,
# and by less everywhere below, so no element moves by more than 16/448 of its row's maximum.
HALF_STEP = 16 / FP8_MAX


def randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def fp8_layer(in_features: int, out_features: int, bias: bool = True, seed: int = 0):
    """-> (FP8Linear holding a quantised random weight, that float weight, its float bias)."""
    weight = randn(out_features, in_features, seed=seed)
    b = randn(out_features, seed=seed + 1) if bias else None
    layer = FP8Linear(in_features, out_features, bias)
    layer.weight, layer.weight_scale = quantize(weight)
    if b is not None:
        layer.bias = nn.Parameter(b.clone(), requires_grad=False)
    return layer, weight, b


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(48, 16, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(F.gelu(self.qkv(self.norm(x))))


class Tiny(nn.Module):
    """Six linears: inp, blocks.{0,1}.{qkv,proj}, out."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.out = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


LINEARS = {"inp", "blocks.0.qkv", "blocks.0.proj", "blocks.1.qkv", "blocks.1.proj", "out"}
BLOCK_LINEARS = LINEARS - {"inp", "out"}


# quantize / dequantize / row_scale


def test_quantize_puts_each_rows_largest_magnitude_on_448():
    # Rows spanning 2^-10 .. 2^10 in size, every other one with its largest entry negative.
    weight = randn(64, 48) * torch.logspace(-10, 10, 64, base=2).unsqueeze(1)
    peak = weight.abs().argmax(dim=1)
    weight[::2, :] = -weight[::2, :]
    q, scale = quantize(weight)
    assert (q.dtype, q.shape, scale.dtype, scale.shape) == (FP8, (64, 48), torch.float32, (64, 1))
    assert torch.equal(scale, weight.abs().amax(dim=1, keepdim=True) / FP8_MAX)
    top = q.float().gather(1, peak.unsqueeze(1)).squeeze(1)
    assert torch.equal(top.abs(), torch.full((64,), 448.0))
    assert torch.equal(top.sign(), weight.gather(1, peak.unsqueeze(1)).squeeze(1).sign())
    assert float(q.float().abs().max()) == 448.0


def test_dequantize_is_within_half_an_e4m3_step_of_the_weight():
    errors = []
    for seed in range(5):
        weight = randn(64, 48, seed=seed)
        back = dequantize(*quantize(weight), torch.float32)
        row_max = weight.abs().amax(dim=1, keepdim=True)
        assert bool(((back - weight).abs() <= row_max * HALF_STEP * (1 + 1e-6)).all())
        errors.append(rel(back, weight))
    assert max(errors) < 0.03, errors  # measured 0.024-0.026 on randn weights (20 seeds)
    assert min(errors) > 0.01  # it is lossy: 3 mantissa bits
    q, scale = quantize(randn(8, 8))
    assert torch.equal(dequantize(q, scale, torch.bfloat16),
                       dequantize(q, scale, torch.float32).bfloat16())


def test_an_all_zero_row_quantizes_to_zeros_not_nan():
    weight = randn(4, 32)
    weight[2] = 0
    q, scale = quantize(weight)
    assert bool(torch.isfinite(scale).all()) and float(scale[2]) > 0
    assert torch.equal(q[2].float(), torch.zeros(32))
    assert bool(torch.isfinite(q.float()).all())
    back = dequantize(q, scale, torch.float32)
    assert torch.equal(back[2], torch.zeros(32)) and bool(torch.isfinite(back).all())
    # The other rows are quantised as they would be alone.
    alone, alone_scale = quantize(weight[[0, 1, 3]])
    assert torch.equal(q[[0, 1, 3]].view(torch.uint8), alone.view(torch.uint8))
    assert torch.equal(scale[[0, 1, 3]], alone_scale)
    q, scale = quantize(torch.zeros(3, 5))
    assert torch.equal(dequantize(q, scale, torch.float32), torch.zeros(3, 5))


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (None, [1.0, 1.0, 1.0]),
        (torch.tensor(0.5), [0.5, 0.5, 0.5]),
        (torch.tensor([0.25]), [0.25, 0.25, 0.25]),
        (torch.tensor([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0]),
        (torch.tensor([[1.0], [2.0], [3.0]]), [1.0, 2.0, 3.0]),
        (torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), [1.0, 2.0, 3.0]),
    ],
    ids=["none", "scalar", "one", "rows", "rows-by-1", "bf16"],
)
def test_row_scale_is_rows_by_one_float32(scale, expected):
    out = row_scale(scale, 3)
    assert (out.shape, out.dtype) == ((3, 1), torch.float32)
    assert out.squeeze(1).tolist() == expected


@pytest.mark.parametrize("values", [2, 4])
def test_row_scale_refuses_a_wrong_length(values):
    with pytest.raises(ValueError, match=f"{values} values for 3 rows"):
        row_scale(torch.ones(values), 3)


# FP8Linear forward


@pytest.mark.parametrize("bias", [True, False])
def test_dequant_matmul_is_exactly_linear_of_the_dequantized_weight(monkeypatch, bias):
    layer, _, b = fp8_layer(48, 64, bias)
    x = randn(2, 5, 48, seed=7)
    auto = layer(x)  # on the CPU "auto" widens
    monkeypatch.setattr(FP8Linear, "matmul", "dequant")
    y = layer(x)
    assert y.shape == (2, 5, 64) and y.dtype == torch.float32
    expected = F.linear(x, dequantize(layer.weight, layer.weight_scale, torch.float32), b)
    assert torch.equal(y, expected)
    assert torch.equal(auto, y)


@pytest.mark.parametrize("bias", [True, False])
def test_scaled_matmul_is_close_to_the_float_layer(monkeypatch, bias):
    layer, weight, b = fp8_layer(48, 64, bias, seed=3)
    x = randn(2, 5, 48, seed=8)
    widened = layer(x)
    monkeypatch.setattr(FP8Linear, "matmul", "scaled")
    y = layer(x)
    assert y.shape == (2, 5, 64) and y.dtype == torch.float32
    assert not torch.equal(y, widened)  # it took the other path: the input is quantised too
    error = rel(y, F.linear(x, weight, b))
    assert error < 0.06, error  # measured 0.033-0.037 over 20 seeds (dequant alone: ~0.025)
    assert rel(y[0], layer(x[0])) < 1e-6  # rows are independent: 2-D input, same numbers
    assert FP8Linear.matmul == "scaled"
    monkeypatch.undo()
    assert FP8Linear.matmul == "auto"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_leading_dimensions_are_kept(dtype):
    layer, weight, b = fp8_layer(16, 32)
    x = randn(3, 4, 5, 16, seed=2).to(dtype)
    y = layer(x)
    assert (y.shape, y.dtype) == ((3, 4, 5, 32), dtype)
    flat = layer(x.reshape(-1, 16)).reshape(3, 4, 5, 32)
    assert torch.equal(y, flat)
    assert rel(y.float(), F.linear(x.float(), weight, b)) < 0.05  # measured 0.020-0.022, bf16 too


# Moving, saving and loading


def test_module_dtype_moves_keep_the_fp8_weight_and_its_scale():
    layer, _, _ = fp8_layer(16, 32)
    model = nn.Sequential(layer, nn.Linear(32, 8))
    stored, scale = layer.weight.view(torch.uint8).clone(), layer.weight_scale.clone()
    for move, dtype in [(lambda m: m.to(torch.bfloat16), torch.bfloat16),
                        (lambda m: m.half(), torch.float16),
                        (lambda m: m.float(), torch.float32)]:
        assert move(model) is model
        assert (layer.weight.dtype, layer.weight_scale.dtype) == (FP8, torch.float32)
        assert torch.equal(layer.weight.view(torch.uint8), stored)
        assert torch.equal(layer.weight_scale, scale)
        assert layer.bias.dtype == dtype and model[1].weight.dtype == dtype
        x = randn(2, 16).to(dtype)
        assert model(x).dtype == dtype
    assert {k for k, _ in model.named_buffers()} == {"0.weight", "0.weight_scale"}


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_round_trip_with_assign(bias):
    layer, _, _ = fp8_layer(16, 32, bias)
    state = layer.state_dict()
    assert set(state) == ({"weight", "weight_scale", "bias"} if bias
                          else {"weight", "weight_scale"})
    assert (state["weight"].dtype, state["weight_scale"].shape) == (FP8, (32, 1))
    with torch.device("meta"):
        empty = FP8Linear(16, 32, bias)
    assert empty.weight.is_meta
    empty.load_state_dict(state, strict=True, assign=True)
    assert not empty.weight.is_meta and empty.weight.dtype == FP8
    assert torch.equal(empty.weight.view(torch.uint8), layer.weight.view(torch.uint8))
    x = randn(3, 16)
    assert torch.equal(empty(x), layer(x))
    copied = FP8Linear(16, 32, bias)  # loading by copy into an allocated layer too
    copied.load_state_dict(state)
    assert torch.equal(copied(x), layer(x))


# Converting models


def test_use_fp8_on_the_meta_device_replaces_the_linears_not_kept():
    with torch.device("meta"):
        model = Tiny().to(torch.bfloat16)
    asked: list[str] = []

    def keep(name: str) -> bool:
        asked.append(name)
        return not name.startswith("blocks.")

    assert use_fp8(model, keep) == 4
    assert set(asked) == LINEARS  # qualified names, each asked once
    assert len(asked) == 6
    assert fp8_linear_names(model) == BLOCK_LINEARS
    assert type(model.inp) is nn.Linear and type(model.out) is nn.Linear
    assert type(model.blocks[0].norm) is nn.LayerNorm
    qkv, proj = model.blocks[1].qkv, model.blocks[1].proj
    assert (qkv.in_features, qkv.out_features, proj.in_features, proj.out_features) == (
        16, 48, 48, 16)
    assert qkv.weight.is_meta and qkv.weight.dtype == FP8 and qkv.bias.dtype == torch.bfloat16
    assert proj.bias is None
    # Filled as a checkpoint would fill it: the float model's weights, quantised.
    reference = randomise_(Tiny(), seed=4)
    state = dict(reference.state_dict())
    for name in BLOCK_LINEARS:
        state[f"{name}.weight"], state[f"{name}.weight_scale"] = quantize(state[f"{name}.weight"])
    model.load_state_dict(state, strict=True, assign=True)
    model.float()
    x = randn(2, 5, 8, seed=5)
    with torch.no_grad():
        error = rel(model(x), reference(x))
    assert error < 0.1, error  # measured 0.017-0.061 over 8 random models (0.020 here)
    with torch.device("meta"):
        everything = Tiny()
    assert use_fp8(everything) == 6 and fp8_linear_names(everything) == LINEARS


def test_quantize_linears_converts_a_loaded_model_in_place():
    reference = randomise_(Tiny(), seed=6)
    model = copy.deepcopy(reference)
    kept = model.out
    assert quantize_linears_(model, keep=lambda name: name == "out") == 5
    assert model.out is kept and type(model.out) is nn.Linear
    assert torch.equal(model.out.weight, reference.out.weight)
    assert fp8_linear_names(model) == LINEARS - {"out"}
    for name in LINEARS - {"out"}:
        layer, source = model.get_submodule(name), reference.get_submodule(name)
        q, scale = quantize(source.weight)
        assert torch.equal(layer.weight.view(torch.uint8), q.view(torch.uint8))
        assert torch.equal(layer.weight_scale, scale)
        assert (layer.bias is None) == (source.bias is None)
        if source.bias is not None:
            assert torch.equal(layer.bias, source.bias) and not layer.bias.requires_grad
    # The float weights are gone: only the kept layer and the norms hold float matrices.
    floats = {n for n, p in model.named_parameters() if p.ndim == 2}
    assert floats == {"out.weight"}
    x = randn(2, 5, 8, seed=9)
    with torch.no_grad():
        error = rel(model(x), reference(x))
    assert error < 0.1, error  # measured 0.022-0.065 over 8 random models (0.028 here)
    assert quantize_linears_(model) == 1 and type(model.out) is FP8Linear
