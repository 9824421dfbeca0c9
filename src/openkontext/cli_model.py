"""The CLI's model options (weights, their parts, storage, device, offload, threads, LoRAs)
and `Load`, which turns them into a `Kontext`; shared by edit, generate, info, chat and demo."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)

Weights = Annotated[
    str | None,
    typer.Option(
        help="FLUX.1 Kontext weights: BFL file or folder, diffusers or Hugging Face snapshot "
        "folder, kontext-dev (the snapshot in the Hugging Face cache), or a mini export; "
        "default: the embedded mini model"
    ),
]
TextEncoders = Annotated[
    str | None,
    typer.Option(help="folder with T5-XXL and CLIP-L: text_encoder_2/ + text_encoder/, or "
                 "t5xxl_fp16.safetensors / t5xxl_fp8_e4m3fn[_scaled].safetensors + "
                 "clip_l.safetensors (default: beside the weights, then the HF cache)"),
]
Tokenizers = Annotated[
    str | None,
    typer.Option(help="folder with tokenizer/ (CLIP) and tokenizer_2/ (T5) (default: beside "
                 "the weights or text encoders, then the HF cache)"),
]


class WeightsDtype(enum.StrEnum):
    fp8 = "fp8"
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class OffloadMode(enum.StrEnum):
    none = "none"
    model = "model"
    blocks = "blocks"


WeightsDtypeOption = Annotated[
    WeightsDtype | None,
    typer.Option("--weights-dtype", help="weight storage: fp8 halves bf16's memory "
                 "(transformer blocks and T5); others equal --dtype"),
]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: best)")]
Dtype = Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (default: fp32 on CPU)")]
Offload = Annotated[
    OffloadMode,
    typer.Option(help="model: weights on the CPU, one part at a time on the GPU; blocks: the "
                 "transformer's blocks streamed to the GPU a group at a time"),
]
Threads = Annotated[
    int | None,
    typer.Option(min=1, help="torch CPU threads (default: OMP_NUM_THREADS, else 1 for the mini "
                 "models and every physical core for larger ones)"),
]
Loras = Annotated[
    list[str] | None,
    typer.Option("--lora", help="a LoRA file, PATH or PATH:STRENGTH (default 1; -4..4); "
                 "repeat for several (<= 4)"),
]
@dataclass
class Load:
    """Where the model comes from and how it is held: the options edit, generate, info, chat
    and demo share."""

    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str = "none"
    threads: int | None = None
    text_encoders: str | None = None
    tokenizers: str | None = None
    weights_dtype: str | None = None

    def __call__(self):
        from openkontext.pipeline import Kontext

        with err.status("loading model"):
            return Kontext.load(self.weights, device=self.device, dtype=self.dtype,
                                text_encoders=self.text_encoders, offload=str(self.offload),
                                threads=self.threads, tokenizers=self.tokenizers,
                                weights_dtype=self.weights_dtype and str(self.weights_dtype),
                                loras=_LORAS)


_LORAS = None  # the CLI's LoraLibrary: files read by `read_loras` are not read again by the model


def read_loras(options: list[str] | None) -> list[tuple[str, float]]:
    """--lora values parsed, each file read and its keys understood before the model loads."""
    global _LORAS
    from openkontext.loras import LoraLibrary, parse_lora

    parsed = [parse_lora(text) for text in options or []]
    _LORAS = _LORAS or LoraLibrary()
    for path, _ in parsed:
        _LORAS.get(path)
    return parsed


def real_weights(weights: str) -> bool:
    from openkontext.weights import is_mini_export

    return not (weights == "random" or weights.startswith("random:") or is_mini_export(weights))


def parts_info(weights, text_encoders, tokenizers, weights_dtype, as_json: bool) -> None:
    from openkontext.weights.parts import describe, find_parts

    parts = find_parts(weights, text_encoders, tokenizers, fp8=weights_dtype == "fp8")
    rows = describe(parts)
    if as_json:
        typer.echo(json.dumps({"weights": str(weights), "parts": rows}))
        return
    for row in rows:
        size = f"{row['bytes'] / 1e9:8.2f} GB" if "bytes" in row else " " * 11
        kind = row.get("dtype", "")
        typer.echo(f"{row['part']:15} {kind:24} {size}  {row['path']}")
    total = sum(row.get("bytes", 0) for row in rows)
    typer.echo(f"{'total':15} {'':24} {total / 1e9:8.2f} GB")
