"""Finding, reading and writing BFL and diffusers checkpoints.

Models are built on the meta device and filled tensor by tensor
(`load_state_dict(assign=True)`), so loading costs one copy of the weights. Every problem with a
checkpoint raises `WeightsError` naming the file and the first bad tensor.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from openkontext.model.autoencoder import AutoEncoder, AutoEncoderParams
from openkontext.model.flux import Flux, FluxParams
from openkontext.model.fp8 import FP8, FP8_DTYPES, fp8_linear_names, quantize, row_scale, use_fp8
from openkontext.weights.keys import (
    _AE_RULES,
    _FLUX_RULES,
    _META_KEY,
    BFL_AE_NAME,
    BFL_TRANSFORMER_NAME,
    CAT,
    COPY,
    DIFFUSERS_INDEX,
    DIFFUSERS_WEIGHTS,
    DTYPES,
    Layout,
    WeightsError,
    _join,
    _levels,
    _split,
    _to_bfl,
    _to_diffusers_names,
    ae_bfl_to_diffusers,
    ae_params_from_diffusers_config,
    ae_params_to_diffusers_config,
    flux_bfl_to_diffusers,
    flux_params_from_diffusers_config,
    flux_params_to_diffusers_config,
    infer_ae_params,
    infer_flux_params,
)
from openkontext.weights.safetensors_io import SafetensorsError, SafetensorsFile

# ---------------------------------------------------------------------------------------------
# Finding files.


@dataclass(frozen=True)
class CheckpointFiles:
    """Where the pieces of a FLUX.1 Kontext checkpoint are. Text encoder folders are only found
    beside diffusers-style checkpoints (BFL releases ship without them)."""

    layout: Layout
    transformer: Path | None  # BFL file, or diffusers `transformer/` folder
    ae: Path | None  # BFL file, or diffusers `vae/` folder
    text_encoder: Path | None = None  # CLIP-L
    text_encoder_2: Path | None = None  # T5-XXL
    tokenizer: Path | None = None
    tokenizer_2: Path | None = None


def _subfolders(root: Path) -> dict[str, Path | None]:
    names = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    return {n: (root / n if (root / n).is_dir() else None) for n in names}


def _component(folder: Path) -> Path | None:
    """A diffusers component folder, when it has its config and weights (a partial download
    may have neither)."""
    complete = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    return folder if complete else None


def _not_transformer(path: Path) -> bool:
    """Single files that sit beside a transformer: the autoencoder and text encoders."""
    return path.name == BFL_AE_NAME or path.name.startswith(("clip_l", "t5xxl", "t5"))


def find_checkpoint(path: str | Path) -> CheckpointFiles:
    """Locate the transformer and autoencoder given a BFL transformer file, a BFL folder
    (flux1-kontext-dev.safetensors or one other transformer file, plus ae.safetensors), a
    diffusers root folder, or a Hugging Face snapshot (both: a complete diffusers component is
    used, else the BFL file beside it)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise WeightsError(f"{path}: expected a .safetensors file")
        ae = path.parent / BFL_AE_NAME
        return CheckpointFiles(
            "bfl", path, ae if ae.is_file() and ae != path else None, **_subfolders(path.parent)
        )
    candidates = sorted(p for p in path.glob("*.safetensors") if not _not_transformer(p))
    preferred = path / BFL_TRANSFORMER_NAME
    if preferred.is_file():
        transformer = preferred
    elif len(candidates) == 1:
        transformer = candidates[0]
    elif candidates and not (path / "transformer").is_dir():
        names = ", ".join(p.name for p in candidates)
        raise WeightsError(f"{path}: several transformer files ({names}); pass one of them")
    else:
        transformer = None
    ae = path / BFL_AE_NAME if (path / BFL_AE_NAME).is_file() else None
    if (path / "transformer").is_dir() or (path / "vae").is_dir():
        return CheckpointFiles(
            "diffusers",
            _component(path / "transformer") or transformer,
            _component(path / "vae") or ae,
            **_subfolders(path),
        )
    if transformer is None and ae is None:
        raise WeightsError(
            f"{path}: no {BFL_TRANSFORMER_NAME}, {BFL_AE_NAME} or diffusers "
            "transformer/ and vae/ folders"
        )
    return CheckpointFiles("bfl", transformer, ae, **_subfolders(path))


# ---------------------------------------------------------------------------------------------
# Reading safetensors lazily.


class _Source:
    """The tensors of one or more safetensors files, read one at a time on request. Scale keys
    of fp8 checkpoints (`X.scale_weight`, `X.weight_scale`, ...) are read with their weight."""

    def __init__(self, files: list[Path], stack: ExitStack, name: Path):
        self.name = name  # what error messages call this checkpoint
        self.metadata: dict[str, str] = {}
        self._where: dict[str, SafetensorsFile] = {}
        for file in files:
            if not file.is_file():
                raise WeightsError(f"{file}: file not found")
            try:
                handle = stack.enter_context(SafetensorsFile(file))
            except (OSError, SafetensorsError) as e:
                raise WeightsError(f"{file}: not a readable safetensors file ({e})") from None
            for key in handle:
                if key in self._where:
                    raise WeightsError(f"{file}: tensor {key!r} is also in {self.file(key)}")
                self._where[key] = handle
            self.metadata.update(handle.metadata)

    def __iter__(self):
        return (k for k in self._where if not _is_scale(k))

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def file(self, key: str) -> Path:
        return self._where[key].path

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key].shape(key)

    def get(self, key: str) -> Tensor:
        try:
            return self._where[key].read(key)
        except (OSError, SafetensorsError) as e:
            raise WeightsError(f"{self.file(key)}: cannot read tensor {key!r} ({e})") from None

    def scale(self, key: str) -> Tensor | None:
        """The stored scale of fp8 weight `key`, if the checkpoint has one."""
        base = key.removesuffix(".weight")
        for name in (f"{base}.scale_weight", f"{base}.weight_scale"):
            if name in self._where:
                return self.get(name)
        return None

    def widened(self, key: str) -> Tensor:
        """The tensor, an fp8 one multiplied out by its scale into float32."""
        t = self.get(key)
        if t.dtype not in FP8_DTYPES:
            return t
        scale = self.scale(key)
        if scale is None:
            return t.float()
        return t.float() * scale.float().reshape(-1, *[1] * (t.ndim - 1))

    def fp8_rows(self, names: tuple[str, ...], op: str) -> tuple[Tensor, Tensor]:
        """Weight `names` joined by `op` as (e4m3 weight, (rows, 1) scale): e4m3 parts kept as
        stored (their scales per row), anything else widened, joined and quantised."""
        parts = [self.get(n) for n in names]
        if op in (COPY, CAT) and all(p.dtype == FP8 and p.ndim == 2 for p in parts):
            pairs = zip(names, parts, strict=True)
            scales = [row_scale(self.scale(n), p.shape[0]) for n, p in pairs]
            if len(parts) == 1:  # as read: no copy
                return parts[0], scales[0]
            return torch.cat(parts), torch.cat(scales)
        return quantize(_join([self.widened(n) for n in names], op))


def _is_scale(key: str) -> bool:
    return key == "scaled_fp8" or key.endswith(_SCALE_SUFFIXES)


_SCALE_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale")


def _diffusers_files(folder: Path) -> list[Path]:
    if (folder / DIFFUSERS_WEIGHTS).is_file():
        return [folder / DIFFUSERS_WEIGHTS]
    index = folder / DIFFUSERS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise WeightsError(f"{index}: not a safetensors index ({e})") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    shards = sorted(folder.glob("diffusion_pytorch_model-*-of-*.safetensors"))
    if not shards:
        raise WeightsError(f"{folder}: no {DIFFUSERS_WEIGHTS} or shards")
    return shards


def _read_config(folder: Path) -> dict:
    file = folder / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{file}: cannot read config ({e})") from None


def _open_component(path: Path, kind: type[nn.Module], stack: ExitStack, params):
    """-> (source, layout, params) for a single file or a diffusers component folder."""
    if path.is_dir():
        config = _read_config(path)
        source = _Source(_diffusers_files(path), stack, name=path)
        if params is None:
            from_config = (
                flux_params_from_diffusers_config
                if kind is Flux
                else ae_params_from_diffusers_config
            )
            try:
                params = from_config(config)
            except (ValueError, TypeError) as e:
                raise WeightsError(f"{path / 'config.json'}: {e}") from None
        return source, "diffusers", params
    source = _Source([path], stack, name=path)
    diffusers_names = {"x_embedder.weight", "encoder.conv_norm_out.weight"}
    layout = "diffusers" if diffusers_names & set(source) else "bfl"
    if params is None and _META_KEY[kind] in source.metadata:
        params_cls = FluxParams if kind is Flux else AutoEncoderParams
        try:
            params = params_cls.from_dict(json.loads(source.metadata[_META_KEY[kind]]))
        except (ValueError, TypeError, KeyError) as e:
            raise WeightsError(f"{path}: bad {_META_KEY[kind]} metadata ({e})") from None
    if params is None:
        rules = _FLUX_RULES if kind is Flux else _AE_RULES
        shapes = {k: source.shape(k) for k in source}
        if layout == "diffusers":
            meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
            shapes = {k: t.shape for k, t in _to_bfl(meta, rules).items()}
        infer = infer_flux_params if kind is Flux else infer_ae_params
        try:
            params = infer(shapes)
        except WeightsError as e:
            raise WeightsError(f"{path}: {e}") from None
    return source, layout, params


def _plan(model: nn.Module, source: _Source, layout: Layout, hidden: int) -> dict:
    """Check names and shapes against the file headers before reading anything.
    -> {model key: (source keys, op)}."""
    rules = _FLUX_RULES if isinstance(model, Flux) else _AE_RULES
    scales = {f"{name}.weight_scale" for name in fp8_linear_names(model)}  # made, not read
    expected = {k: v for k, v in model.state_dict().items() if k not in scales}
    levels = _levels(expected)
    plan, used = {}, set()
    for key, tensor in expected.items():
        names, op = ((key,), COPY) if layout == "bfl" else _to_diffusers_names(key, rules, levels)
        parts = [tensor] if layout == "bfl" else _split(tensor, op, len(names), hidden)
        for name, part in zip(names, parts, strict=True):
            if name not in source:
                needed = "" if name == key else f" (part of {key!r})"
                raise WeightsError(f"{source.name}: missing tensor {name!r}{needed}")
            if source.shape(name) != tuple(part.shape):
                raise WeightsError(
                    f"{source.file(name)}: tensor {name!r} has shape "
                    f"{list(source.shape(name))}, expected {list(part.shape)}"
                )
        plan[key] = (names, op)
        used.update(names)
    if extra := [k for k in source if k not in used]:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise WeightsError(
            f"{source.file(extra[0])}: unexpected tensor {extra[0]!r}{more}; "
            "the checkpoint does not fit this model"
        )
    return plan


def _load(path, kind: type[nn.Module], dtype: torch.dtype, device, params, fp8=False) -> nn.Module:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder")
    if path.is_dir() and not (path / "config.json").is_file():
        files = find_checkpoint(path)
        found = files.transformer if kind is Flux else files.ae
        if found is None:
            raise WeightsError(f"{path}: no {'transformer' if kind is Flux else 'autoencoder'}")
        path = found
    with ExitStack() as stack:
        source, layout, params = _open_component(path, kind, stack, params)
        with torch.device("meta"):
            model = kind(params)
        if fp8:  # the blocks' linears, 99% of the weights; the small outer layers stay in dtype
            use_fp8(model, keep=lambda name: not name.startswith(FP8_PARTS))
        stored_fp8 = fp8_linear_names(model)
        hidden = params.hidden_size if kind is Flux else 0
        state = {}
        for key, (names, op) in _plan(model, source, layout, hidden).items():
            if key.removesuffix(".weight") in stored_fp8 and key.endswith(".weight"):
                weight, scale = source.fp8_rows(names, op)
                state[key] = weight.to(device)
                state[key.removesuffix("weight") + "weight_scale"] = scale.to(device)
            else:
                parts = [source.widened(n) for n in names]
                state[key] = _join(parts, op).to(device=device, dtype=dtype)
        model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


FP8_PARTS = ("double_blocks.", "single_blocks.")  # what fp8 storage stores in fp8


def load_transformer(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    params: FluxParams | None = None,
    fp8: bool = False,
) -> Flux:
    """A `Flux` from a BFL file, a diffusers `transformer/` folder, or a checkpoint root folder.
    Params come from `params`, else the file's metadata or config.json, else tensor shapes.
    `fp8`: the blocks' linear weights stored in fp8 (`model.fp8`), the rest in `dtype`. fp8
    checkpoints (with or without scales) load either way."""
    return _load(path, Flux, dtype, device, params, fp8)


def load_autoencoder(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    params: AutoEncoderParams | None = None,
) -> AutoEncoder:
    """An `AutoEncoder` from `ae.safetensors`, a diffusers `vae/` folder, or a root folder."""
    return _load(path, AutoEncoder, dtype, device, params)


def save_model(model: Flux | AutoEncoder, path: str | Path, layout: Layout = "bfl") -> Path:
    """Write a model in either layout. bfl: `path` is the .safetensors file, and its metadata
    records the params. diffusers: `path` is the component folder (e.g. root/transformer)."""
    path, kind = Path(path), type(model)
    if kind not in _META_KEY:
        raise TypeError(f"save_model takes a Flux or an AutoEncoder, not {kind.__name__}")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if layout == "bfl":
        if path.suffix != ".safetensors":
            raise ValueError(f"a BFL checkpoint is one .safetensors file, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": "pt", _META_KEY[kind]: json.dumps(model.params.to_dict())}
        save_file(state, str(path), metadata=meta)
        return path
    if layout != "diffusers":
        raise ValueError(f"layout must be 'bfl' or 'diffusers', got {layout!r}")
    if kind is Flux:
        config, state = flux_params_to_diffusers_config(model.params), flux_bfl_to_diffusers(state)
    else:
        config, state = ae_params_to_diffusers_config(model.params), ae_bfl_to_diffusers(state)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, str(path / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
    return path
