"""Finding the six parts of FLUX.1 Kontext [dev] in what users download.

The parts: the transformer, the autoencoder, T5-XXL and CLIP-L, and their two tokenizers. They
come in three shapes, often mixed:

- the Hugging Face snapshot of black-forest-labs/FLUX.1-Kontext-dev: diffusers folders
  (transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/) plus the BFL
  single files at its top; named by its folder, or found in the Hugging Face cache from the name
  `kontext-dev` (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub);
- BFL single files (flux1-kontext-dev.safetensors + ae.safetensors), the text encoders elsewhere;
- ComfyUI's single-file text encoders (clip_l.safetensors, t5xxl_fp16.safetensors,
  t5xxl_fp8_e4m3fn[_scaled].safetensors), which carry no tokenizers.

`find_parts` looks for each part in the places the user named, then beside the weights, then in
the cache's snapshot, and raises `WeightsError` naming the missing part, where it looked and the
flag that supplies it. `describe` reads only file headers, for `openkontext info`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from openkontext.weights.files import find_checkpoint
from openkontext.weights.keys import WeightsError
from openkontext.weights.safetensors_io import SafetensorsError, SafetensorsFile

# Names that mean a checkpoint in the Hugging Face cache.
HUB_NAMES = {"kontext-dev": "black-forest-labs/FLUX.1-Kontext-dev"}
T5_FILES = ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors",
            "t5xxl_fp8_e4m3fn.safetensors")
CLIP_FILES = ("clip_l.safetensors",)


@dataclass(frozen=True)
class Parts:
    """Where each part is: a file, or a diffusers/transformers folder."""

    transformer: Path
    ae: Path
    t5: Path  # text_encoder_2/ or a t5xxl_*.safetensors file
    clip: Path  # text_encoder/ or clip_l.safetensors
    t5_tokenizer: Path  # tokenizer_2/
    clip_tokenizer: Path  # tokenizer/

    def items(self) -> list[tuple[str, Path]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


# ---------------------------------------------------------------------------------------------
# The Hugging Face cache.


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, by the same environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "huggingface" / "hub"


def hub_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder `refs/main` points at, else the newest one; None when not cached."""
    repo = hub_cache() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def resolve_weights(weights: str | Path) -> Path:
    """A path as given, or the cached snapshot of a hub name (`kontext-dev`, `owner/name`)."""
    name = str(weights)
    if Path(name).exists() or (name not in HUB_NAMES and name.count("/") != 1):
        return Path(name)
    repo_id = HUB_NAMES.get(name, name)
    snapshot = hub_snapshot(repo_id)
    if snapshot is None:
        raise WeightsError(
            f"{name}: not a file or folder, and {repo_id} is not in the Hugging Face cache "
            f"({hub_cache()}); download it (`hf download {repo_id}`, needs the licence accepted "
            "on huggingface.co) or pass --weights with the folder or file"
        )
    return snapshot


# ---------------------------------------------------------------------------------------------
# Text encoders and tokenizers.


def _complete_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _text_encoder(folder: Path, subfolder: str, files: tuple[str, ...], glob: str) -> Path | None:
    """A transformers folder `folder/subfolder`, else a single file named in `files` (in that
    order of preference), else the one file matching `glob`."""
    if _complete_folder(folder / subfolder):
        return folder / subfolder
    for name in files:
        if (folder / name).is_file():
            return folder / name
    matches = sorted(folder.glob(glob))
    return matches[0] if len(matches) == 1 else None


def _tokenizer(folder: Path, subfolder: str, needs: tuple[str, ...]) -> Path | None:
    found = any((folder / subfolder / name).is_file() for name in needs)
    return folder / subfolder if found else None


def _prefer_fp8(names: tuple[str, ...], fp8: bool) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: "fp8" not in n)) if fp8 else names


def find_parts(
    weights: str | Path,
    text_encoders: str | Path | None = None,
    tokenizers: str | Path | None = None,
    fp8: bool = False,
) -> Parts:
    """Every part of a FLUX.1 Kontext [dev] checkpoint, or a WeightsError naming the first one
    missing. `fp8`: among single-file T5s, prefer an fp8 one (less to read)."""
    root = resolve_weights(weights)
    files = find_checkpoint(root)
    if files.transformer is None or files.ae is None:
        part, name = (("transformer", "flux1-kontext-dev.safetensors or transformer/")
                      if files.transformer is None else ("autoencoder", "ae.safetensors or vae/"))
        raise WeightsError(f"no {part} ({name}) in {root}; pass --weights with the folder "
                           "that holds it")
    beside = root.parent if root.is_file() else root
    snapshot = hub_snapshot(HUB_NAMES["kontext-dev"])
    places: list[Path] = [Path(p) for p in (text_encoders, tokenizers) if p] + [beside]
    if snapshot is not None and snapshot not in places:
        places.append(snapshot)
    for given, flag in ((text_encoders, "--text-encoders"), (tokenizers, "--tokenizers")):
        if given and not Path(given).is_dir():
            raise WeightsError(f"{flag} {given}: not a folder")

    def first(search, part: str, flag: str, what: str) -> Path:
        for place in places:
            if (found := search(place)) is not None:
                return found
        where = ", ".join(str(p) for p in dict.fromkeys(places))
        raise WeightsError(f"no {part} ({what}) in {where}; pass {flag} DIR with a folder that "
                           "has it")

    t5_files = _prefer_fp8(T5_FILES, fp8)
    return Parts(
        transformer=files.transformer,
        ae=files.ae,
        t5=first(lambda p: _text_encoder(p, "text_encoder_2", t5_files, "t5*.safetensors"),
                 "T5-XXL text encoder", "--text-encoders",
                 "text_encoder_2/ or t5xxl_fp16.safetensors / t5xxl_fp8_e4m3fn.safetensors"),
        clip=first(lambda p: _text_encoder(p, "text_encoder", CLIP_FILES, "clip_l*.safetensors"),
                   "CLIP-L text encoder", "--text-encoders",
                   "text_encoder/ or clip_l.safetensors"),
        t5_tokenizer=first(lambda p: _tokenizer(p, "tokenizer_2", ("tokenizer.json",
                                                                   "spiece.model")),
                           "T5 tokenizer", "--tokenizers", "tokenizer_2/"),
        clip_tokenizer=first(lambda p: _tokenizer(p, "tokenizer", ("vocab.json",
                                                                   "tokenizer.json")),
                             "CLIP tokenizer", "--tokenizers", "tokenizer/"),
    )


# ---------------------------------------------------------------------------------------------
# Describing what was found.


def _weight_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.safetensors"))


def describe(parts: Parts) -> list[dict]:
    """One row per part: where, what form, dtypes (share of bytes) and size, from headers."""
    rows = []
    for name, path in parts.items():
        if name.endswith("tokenizer"):
            rows.append({"part": name, "path": str(path), "form": "tokenizer folder"})
            continue
        by_dtype: dict[str, int] = {}
        params, scaled = 0, False
        for file in _weight_files(path):
            try:
                with SafetensorsFile(file) as f:
                    for key in f:
                        dtype = str(f.dtype(key)).removeprefix("torch.")
                        by_dtype[dtype] = by_dtype.get(dtype, 0) + f.nbytes(key)
                        params += math.prod(f.shape(key))
                        scaled |= key.endswith((".scale_weight", ".weight_scale"))
            except (OSError, SafetensorsError) as e:
                raise WeightsError(f"{file}: not a readable safetensors file ({e})") from None
        total = sum(by_dtype.values())
        main = max(by_dtype, key=by_dtype.get) if by_dtype else "?"
        rows.append({
            "part": name,
            "path": str(path),
            "form": "folder" if path.is_dir() else "file",
            "dtype": main + (" (scaled)" if scaled and "float8" in main else ""),
            "params": params,
            "bytes": total,
        })
    return rows
