"""Where a model runs and in what: the device (with a reason when one is missing), the compute
dtype, fp8 storage and the offload mode, all checked before any weights load."""

from __future__ import annotations

import torch

from openkontext.model.offload import OFFLOAD_MODES


def choose_device(device: str | None = None) -> torch.device:
    """cuda > mps > cpu unless given. A given device must be cpu, cuda[:N] or mps and exist on
    this machine, else ValueError saying why (checked before any weights load)."""
    if device:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                why = (f"torch {torch.__version__} is built without CUDA"
                       if torch.version.cuda is None else "no CUDA GPU found")
                raise ValueError(f"CUDA is not available on this machine ({why}); "
                                 "use --device cpu")
            count = torch.cuda.device_count()
            if dev.index is not None and dev.index >= count:
                raise ValueError(f"there is no {dev}: this machine has {count} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{count - 1}")
        elif dev.type == "mps":
            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                why = (f"torch {torch.__version__} is built without MPS"
                       if not torch.backends.mps.is_built() else "it needs Apple silicon")
                raise ValueError(f"MPS is not available on this machine ({why}); "
                                 "use --device cpu")
        elif dev.type != "cpu":
            raise ValueError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_offload(offload: str | bool) -> str:
    """"none", "model" or "blocks" (True/False: the older on/off switch for "model")."""
    if isinstance(offload, bool):
        return "model" if offload else "none"
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    return offload


def choose_storage(
    device: torch.device, dtype: str | torch.dtype | None, weights_dtype: str | None
) -> tuple[torch.dtype, bool]:
    """-> (compute dtype, fp8 storage). `weights_dtype` fp8 keeps the compute dtype; any other
    value is the compute dtype too, so it must agree with `dtype` when both are given."""
    if weights_dtype is None or weights_dtype == "fp8":
        return choose_dtype(device, dtype), weights_dtype == "fp8"
    stored = choose_dtype(device, weights_dtype)
    if dtype is not None and choose_dtype(device, dtype) != stored:
        raise ValueError(f"weights dtype {weights_dtype} differs from dtype {dtype}; weights "
                         "are stored in the compute dtype unless they are fp8")
    return stored, False


def choose_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bfloat16 on accelerators, float32 on the CPU, unless given."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        names = {
            "fp32": torch.float32,
            "float32": torch.float32,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
        }
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        return names[dtype]
    return torch.float32 if device.type == "cpu" else torch.bfloat16
