"""LoRA files as a request names them: by path (CLI, Python) or by name in a folder the operator
controls (the server, whose clients never pass paths). Each file is read once and kept while
it is unchanged on disk.

`parse_lora("style.safetensors:0.8")` is the CLI's `--lora PATH[:STRENGTH]`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from openkontext.model.lora import Lora

log = logging.getLogger("openkontext.loras")
MAX_LORAS = 4  # per request
MAX_STRENGTH = 4.0  # |strength|; trainers' own scales are applied besides


def parse_lora(text: str) -> tuple[str, float]:
    """'PATH' or 'PATH:STRENGTH' -> (path, strength); a Windows drive colon is left alone."""
    path, sep, tail = text.rpartition(":")
    if sep and path and "/" not in tail and "\\" not in tail:
        try:
            return path, check_strength(float(tail))
        except ValueError:
            raise ValueError(f"--lora {text}: the strength after ':' must be a number "
                             f"from -{MAX_STRENGTH:g} to {MAX_STRENGTH:g}") from None
    return text, 1.0


def check_strength(strength: float) -> float:
    if not -MAX_STRENGTH <= strength <= MAX_STRENGTH:
        raise ValueError(f"LoRA strength must be from -{MAX_STRENGTH:g} to {MAX_STRENGTH:g}, "
                         f"got {strength:g}")
    return strength


class LoraLibrary:
    """LoRAs by name (`folder/NAME.safetensors`) and, when `allow_paths`, by path."""

    def __init__(self, folder: str | Path | None = None, allow_paths: bool = True):
        self.folder = Path(folder) if folder is not None else None
        self.allow_paths = allow_paths
        self._cache: dict[Path, tuple[float, Lora]] = {}
        self._lock = threading.Lock()
        if self.folder is not None and not self.folder.is_dir():
            raise ValueError(f"LoRA folder {self.folder}: not a folder")

    def names(self) -> list[str]:
        if self.folder is None:
            return []
        return sorted(p.stem for p in self.folder.glob("*.safetensors") if p.is_file())

    def path(self, ref: str) -> Path:
        """The file `ref` names, or ValueError saying what is known."""
        if self.folder is not None and ref in self.names():
            return self.folder / f"{ref}.safetensors"
        if self.allow_paths:
            path = Path(ref)
            if not path.is_file():
                raise ValueError(f"LoRA {ref}: no such file")
            if path.suffix != ".safetensors":
                raise ValueError(f"LoRA {ref}: expected a .safetensors file")
            return path
        known = ", ".join(self.names()) or "none are installed"
        raise ValueError(f"unknown LoRA {ref!r}; known: {known}")

    def get(self, ref: str) -> Lora:
        from openkontext.weights.lora import load_lora

        path = self.path(ref)
        stamp = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
            if hit is None or hit[0] != stamp:
                hit = self._cache[path] = (stamp, load_lora(path, name=ref))
            return hit[1]

    def describe(self) -> list[dict]:
        """Name, rank, layers and size of every LoRA in the folder; a file that cannot be read
        as one (corrupt, not a LoRA, removed meanwhile) is left out with a logged warning."""
        rows = []
        for name in self.names():
            try:
                lora, size = self.get(name), self.path(name).stat().st_size
            except (ValueError, OSError) as e:
                log.warning("LoRA %r in %s is left out: %s", name, self.folder, e)
                continue
            rows.append({"name": name, "rank": lora.rank, "layers": len(lora.deltas),
                         "bytes": size})
        return rows
