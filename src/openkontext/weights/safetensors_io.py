"""safetensors files read and written a tensor at a time, without mapping the file.

The format: 8 bytes (little-endian header length N), N bytes of JSON naming each tensor's dtype,
shape and byte range in the data that follows, and a `__metadata__` table of strings.

Why not `safetensors.safe_open`: it maps the whole file, and every page a load touches then
counts in the process's resident memory until the file is closed. Loading a 12 GB checkpoint
tensor by tensor into fp8 would show 12 GB of file pages on top of the model. Reading each
tensor with `pread` into its own buffer keeps what the process holds to what it kept.
`write` streams too: the header is computed from names, dtypes and shapes, then each tensor is
asked for in turn, so a checkpoint larger than memory can be written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a well-formed safetensors file."""


class Entry:
    __slots__ = ("dtype", "shape", "start", "end")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], start: int, end: int):
        self.dtype, self.shape, self.start, self.end = dtype, shape, start, end


def _entry(name: str, info: dict, data_size: int) -> Entry:
    try:
        dtype = DTYPES[info["dtype"]]
        shape = tuple(int(n) for n in info["shape"])
        start, end = (int(n) for n in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise SafetensorsError(f"tensor {name!r}: bad header entry {info!r}") from None
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if min(shape, default=0) < 0:
        raise SafetensorsError(f"tensor {name!r}: negative size in shape {list(shape)}")
    if not 0 <= start <= end <= data_size:
        raise SafetensorsError(f"tensor {name!r}: bytes {start}..{end} outside the data")
    if end - start != math.prod(shape) * itemsize:
        raise SafetensorsError(f"tensor {name!r}: {end - start} bytes for shape {list(shape)}")
    return Entry(dtype, shape, start, end)


class SafetensorsFile:
    """One open safetensors file: `keys()`, `shape(k)`, `dtype(k)`, `read(k)`, `metadata`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, 8, 0)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(MAX_HEADER, size - 8):
                raise SafetensorsError("no safetensors header (file too short or corrupt)")
            try:
                header = json.loads(os.pread(self._fd, n, 8))
            except (ValueError, UnicodeDecodeError):
                raise SafetensorsError("the header is not JSON") from None
            if not isinstance(header, dict):
                raise SafetensorsError("the header is not a JSON object")
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            if not isinstance(self.metadata, dict):
                raise SafetensorsError("__metadata__ is not a JSON object")
            self._base = 8 + n
            self._entries = {k: _entry(k, v, size - self._base) for k, v in header.items()}
        except BaseException:
            os.close(self._fd)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def keys(self) -> list[str]:
        return list(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key].dtype

    def nbytes(self, key: str) -> int:
        entry = self._entries[key]
        return entry.end - entry.start

    def read(self, key: str) -> Tensor:
        """The tensor, in a buffer of its own (nothing stays mapped)."""
        entry = self._entries[key]
        buffer = torch.empty(entry.end - entry.start, dtype=torch.uint8)
        view, done = memoryview(buffer.numpy()), 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], self._base + entry.start + done)
            if got <= 0:
                raise SafetensorsError(f"tensor {key!r}: the file ends early")
            done += got
        return buffer.view(entry.dtype).reshape(entry.shape)


def write(
    path: str | Path,
    specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
    tensor: Callable[[str], Tensor],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a safetensors file whose tensors are (name, dtype, shape) in `specs` order, asking
    `tensor(name)` for each one only when it is written. Written beside `path`, then renamed."""
    path = Path(path)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset, order = 0, []
    for name, dtype, shape in specs:
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        order.append((name, dtype, tuple(shape)))
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text)
            for name, dtype, shape in order:
                t = tensor(name)
                if t.dtype != dtype or tuple(t.shape) != shape:
                    raise ValueError(f"{name}: got {t.dtype} {list(t.shape)}, "
                                     f"declared {dtype} {list(shape)}")
                f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)  # gone already when the file was completed
    return path
