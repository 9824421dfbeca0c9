"""Writing a transformer checkpoint as one BFL-layout file, in bf16 or "scaled fp8", a tensor at
a time (a 12B checkpoint never has to fit in memory).

Scaled fp8 is the form ComfyUI and others share: each block linear's `X.weight` in
float8_e4m3fn with one float32 `X.scale_weight` per tensor, and an empty `scaled_fp8` tensor
marking the file. It loads here with fp8 storage (kept as stored) or any float dtype
(multiplied out), and in the tools that share the convention.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import Tensor

from openkontext.model.flux import Flux, FluxParams
from openkontext.model.fp8 import FP8, FP8_MAX
from openkontext.weights.files import FP8_PARTS, _join, _open_component, _plan
from openkontext.weights.keys import _META_KEY
from openkontext.weights.safetensors_io import write

SCALED_MARKER = "scaled_fp8"


def quantize_tensorwise(weight: Tensor) -> tuple[Tensor, Tensor]:
    """-> (e4m3 weight, float32 scalar scale): one scale for the whole tensor."""
    w = weight.float()
    scale = w.abs().amax().clamp_min(1e-12) / FP8_MAX
    return (w / scale).to(FP8), scale.reshape(())


def _fp8_key(key: str, shape: tuple[int, ...]) -> bool:
    return key.startswith(FP8_PARTS) and key.endswith(".weight") and len(shape) == 2


def write_transformer(
    path: str | Path,
    params: FluxParams,
    tensor: Callable[[str], Tensor],
    fp8: bool,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write a `Flux` of `params` to the BFL file `path`, asking `tensor(key)` for each of its
    state_dict tensors in turn (any float dtype). fp8: the blocks' linear weights as scaled fp8,
    the rest in `dtype`."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Flux(params).state_dict().items()}
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
    for key, shape in shapes.items():
        if fp8 and _fp8_key(key, shape):
            specs += [(key, FP8, shape), (key.removesuffix("weight") + "scale_weight",
                                          torch.float32, ())]
        else:
            specs.append((key, dtype, shape))
    if fp8:
        specs.append((SCALED_MARKER, FP8, (0,)))
    pending: dict[str, Tensor] = {}

    def produce(name: str) -> Tensor:
        if name == SCALED_MARKER:
            return torch.empty(0, dtype=FP8)
        if name in pending:
            return pending.pop(name)
        t = tensor(name)
        if fp8 and _fp8_key(name, shapes[name]):
            weight, scale = quantize_tensorwise(t)
            pending[name.removesuffix("weight") + "scale_weight"] = scale
            return weight
        return t.to(dtype)

    meta = {"format": "pt", _META_KEY[Flux]: json.dumps(params.to_dict())}
    return write(path, specs, produce, meta)


def convert_transformer(source: str | Path, path: str | Path, fp8: bool) -> Path:
    """Rewrite the transformer at `source` (a BFL file, a diffusers transformer/ folder or a
    checkpoint folder; any dtype, fp8 included) as one BFL file `path`."""
    from openkontext.weights.files import find_checkpoint

    source = Path(source)
    if source.is_dir() and not (source / "config.json").is_file():
        source = find_checkpoint(source).transformer or source
    with ExitStack() as stack:
        src, layout, params = _open_component(source, Flux, stack, None)
        with torch.device("meta"):
            model = Flux(params)
        plan = _plan(model, src, layout, params.hidden_size)

        def tensor(key: str) -> Tensor:
            names, op = plan[key]
            return _join([src.widened(n) for n in names], op)

        return write_transformer(path, params, tensor, fp8)

