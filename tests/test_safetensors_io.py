"""safetensors read and written a tensor at a time: bit-exact against the `safetensors` package
both ways for every dtype, streaming writes that refuse a tensor unlike its spec, corrupt
headers refused with SafetensorsError, and nothing mapped while a file is read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from openkontext.weights.safetensors_io import DTYPES, SafetensorsError, SafetensorsFile, write

SHAPES = {"matrix": (3, 5), "scalar": (), "empty": (0, 4), "vector": (7,)}
METADATA = {"format": "pt", "params": json.dumps({"depth": 2}), "note": "héllo"}


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> Tensor:
    """Random bytes of `dtype` (any bit pattern, NaNs included), or 0/1 for bool."""
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    n = torch.empty(shape, dtype=dtype).numel() * torch.empty(0, dtype=dtype).element_size()
    return torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).view(dtype).reshape(shape)


def tensors_of(dtype: torch.dtype) -> dict[str, Tensor]:
    return {name: sample(dtype, shape, i) for i, (name, shape) in enumerate(SHAPES.items())}


def same_bits(a: Tensor, b: Tensor) -> bool:
    return (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def raw_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    """A file of 8 length bytes (len(header) unless `length`), `header`, then `data`."""
    n = len(header) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + header + data)
    return path


def open_fds_on(path: Path) -> list[str]:
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve()):
                fds.append(fd)
        except OSError:
            continue
    return fds


@pytest.mark.parametrize("name", list(DTYPES))
def test_files_written_by_safetensors_read_back_bit_exactly(tmp_path, name):
    dtype, path = DTYPES[name], tmp_path / "theirs.safetensors"
    tensors = tensors_of(dtype)
    save_file(tensors, str(path), metadata=METADATA)
    with SafetensorsFile(path) as f:
        assert f.metadata == METADATA
        assert sorted(f.keys()) == sorted(tensors) and sorted(f) == sorted(tensors)
        for key, t in tensors.items():
            assert (f.dtype(key), f.shape(key)) == (dtype, tuple(t.shape))
            assert f.nbytes(key) == t.numel() * t.element_size()
            assert same_bits(f.read(key), t), key
    assert open_fds_on(path) == []  # closed on leaving the with block


@pytest.mark.parametrize("name", list(DTYPES))
def test_files_from_write_load_bit_exactly_with_safetensors(tmp_path, name):
    dtype, path = DTYPES[name], tmp_path / "ours.safetensors"
    tensors = tensors_of(dtype)
    specs = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    assert write(path, specs, tensors.__getitem__, METADATA) == path
    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(tensors)
    for key, t in tensors.items():
        assert same_bits(loaded[key], t), key
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == METADATA
    with SafetensorsFile(path) as f:
        assert f.keys() == list(tensors)  # stored in spec order
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0  # the data starts 8-byte aligned
    assert not (tmp_path / "ours.safetensors.partial").exists()


def test_write_without_metadata_and_from_a_non_contiguous_tensor(tmp_path):
    weight = torch.arange(15, dtype=torch.float32).reshape(3, 5)
    path = write(tmp_path / "t.safetensors", [("w", torch.float32, (5, 3))], lambda _: weight.t())
    assert torch.equal(load_file(str(path))["w"], weight.t())
    with safe_open(str(path), "pt") as f:
        assert f.metadata() is None
    with SafetensorsFile(path) as f:
        assert f.metadata == {}


def test_write_computes_the_header_first_then_asks_for_each_tensor_in_order(tmp_path):
    log: list[str] = []

    def specs():
        for name in ("c", "a", "b"):
            log.append(f"spec {name}")
            yield name, torch.int32, (2,)

    def tensor(name: str) -> Tensor:
        log.append(f"tensor {name}")
        return torch.tensor([ord(name), -1], dtype=torch.int32)

    path = write(tmp_path / "lazy.safetensors", specs(), tensor)
    assert log == ["spec c", "spec a", "spec b", "tensor c", "tensor a", "tensor b"]
    with SafetensorsFile(path) as f:
        assert f.keys() == ["c", "a", "b"]
        assert [f.read(k).tolist() for k in f] == [[99, -1], [97, -1], [98, -1]]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.float16), "got torch.float16 \\[2, 3\\], declared "
                                                 "torch.float32 \\[2, 3\\]"),
        (torch.zeros(3, 2), "got torch.float32 \\[3, 2\\], declared torch.float32 \\[2, 3\\]"),
        (torch.zeros(6), "got torch.float32 \\[6\\]"),
    ],
    ids=["dtype", "shape", "flat"],
)
def test_write_refuses_a_tensor_unlike_its_spec_and_keeps_the_old_file(tmp_path, given, message):
    target = tmp_path / "out.safetensors"
    specs = [("first", torch.float32, (2,)), ("second", torch.float32, (2, 3))]
    tensors = {"first": torch.ones(2), "second": given}
    with pytest.raises(ValueError, match=f"second: {message}"):
        write(target, specs, tensors.__getitem__)
    assert not target.exists()
    # An earlier file at the target is left as it was.
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="second: "):
        write(target, specs, tensors.__getitem__)
    assert target.read_bytes() == b"previous"


def test_a_refused_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.safetensors"
    with pytest.raises(ValueError):
        write(target, [("w", torch.float32, (2,))], lambda _: torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


NO_HEADER, NOT_JSON = "no safetensors header", "the header is not JSON"
F32 = b'{"a":{"dtype":"F32","shape":%s,"data_offsets":%s}}'
CORRUPT = {  # case: (make the file, what the error says)
    "shorter than 8 bytes": (lambda p: p.write_bytes(b"\x10\x00\x00"), NO_HEADER),
    "empty file": (lambda p: p.write_bytes(b""), NO_HEADER),
    "zero header length": (lambda p: raw_file(p, b"", b"{}"), NO_HEADER),
    "header longer than the file": (
        lambda p: raw_file(p, b"{}", b"\0" * 8, length=1000), NO_HEADER),
    "header not JSON": (lambda p: raw_file(p, b"{not json"), NOT_JSON),
    "header not UTF-8": (lambda p: raw_file(p, b'{"\xff\xfe": 1}'), NOT_JSON),
    "header a JSON list": (lambda p: raw_file(p, b"[1, 2, 3]"), "not a JSON object"),
    "header a JSON string": (lambda p: raw_file(p, b'"abc"'), "not a JSON object"),
    "range past the data": (
        lambda p: raw_file(p, F32 % (b"[4]", b"[0,16]"), b"\0" * 12), "0..16 outside the data"),
    "range end before start": (
        lambda p: raw_file(p, F32 % (b"[0]", b"[8,4]"), b"\0" * 12), "8..4 outside the data"),
    "byte count unlike the shape": (
        lambda p: raw_file(p, F32 % (b"[2,3]", b"[0,16]"), b"\0" * 24),
        "16 bytes for shape \\[2, 3\\]"),
    "negative dimensions": (  # (-2) * (-2) * 4 bytes would pass the byte count
        lambda p: raw_file(p, F32 % (b"[-2,-2]", b"[0,16]"), b"\0" * 16), "negative size in shape"),
    "unknown dtype": (
        lambda p: raw_file(p, b'{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}',
                           b"\0" * 4), "bad header entry .*F12"),
    "missing data_offsets": (
        lambda p: raw_file(p, b'{"a":{"dtype":"F32","shape":[1]}}', b"\0" * 4),
        "bad header entry"),
    "three offsets": (
        lambda p: raw_file(p, F32 % (b"[1]", b"[0,4,4]"), b"\0" * 4), "bad header entry"),
    "entry not an object": (lambda p: raw_file(p, b'{"a": 5}'), "'a': bad header entry 5"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_header_is_a_safetensors_error_and_closes_the_file(tmp_path, case):
    path, (make, message) = tmp_path / "bad.safetensors", CORRUPT[case]
    make(path)
    with pytest.raises(SafetensorsError, match=message):
        SafetensorsFile(path)
    assert open_fds_on(path) == []


def test_a_dtype_safetensors_has_and_this_reader_lacks_is_refused(tmp_path):
    path = tmp_path / "u16.safetensors"
    save_file({"a": torch.zeros(3, dtype=torch.uint16)}, str(path))
    with pytest.raises(SafetensorsError, match="'a': bad header entry .*U16"):
        SafetensorsFile(path)


def test_a_truncated_data_section(tmp_path):
    path = write(tmp_path / "t.safetensors",
                 [("a", torch.float32, (4,)), ("b", torch.float32, (4,))],
                 lambda name: torch.full((4,), 1.0 if name == "a" else 2.0))
    size = path.stat().st_size
    with SafetensorsFile(path) as f:
        # Cut while open: the intact tensor still reads, the cut one is an error on read.
        os.truncate(path, size - 4)
        assert f.read("a").tolist() == [1.0] * 4
        with pytest.raises(SafetensorsError, match="'b': the file ends early"):
            f.read("b")
    # Cut before opening: the cut tensor's byte range lies outside the data, refused on open.
    with pytest.raises(SafetensorsError, match="'b': bytes 16..32 outside the data"):
        SafetensorsFile(path)


def test_reading_maps_nothing_and_each_read_has_its_own_buffer(tmp_path):
    path = tmp_path / "big.safetensors"
    weight = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    save_file({"w": weight, "b": torch.ones(3)}, str(path))

    def mapped() -> bool:
        return str(path.resolve()) in Path("/proc/self/maps").read_text()

    with safe_open(str(path), "pt") as f:  # the check can see a mapping: safetensors maps
        f.get_tensor("w")
        assert mapped()
    with SafetensorsFile(path) as f:
        first = f.read("w")
        assert not mapped()
        assert torch.equal(first, weight)
        first.zero_()
        assert torch.equal(f.read("w"), weight)
        assert not mapped()
