"""`openkontext convert`: rewrite a FLUX.1 Kontext transformer checkpoint as one BFL file in
bf16 or scaled fp8 (half the disk and the read time of bf16; see docs/memory.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert_command(
    source: Annotated[Path, typer.Argument(help="transformer: BFL file, diffusers transformer/ "
                                           "folder or checkpoint folder")],
    output: Annotated[Path, typer.Argument(help="the .safetensors file to write")],
    to: Annotated[str, typer.Option(help="fp8 (scaled, as ComfyUI shares them) or bf16")] = "fp8",
) -> None:
    """Convert a transformer checkpoint, a tensor at a time."""
    from openkontext.cli import _errors
    from openkontext.files import check_output_file
    from openkontext.weights.convert import convert_transformer

    with _errors():
        if to not in ("fp8", "bf16"):
            raise ValueError(f"--to must be fp8 or bf16, got {to!r}")
        if output.suffix != ".safetensors":
            raise ValueError(f"{output}: the output must be a .safetensors file")
        check_output_file(output)
        written = convert_transformer(source, output, fp8=to == "fp8")
        typer.echo(f"wrote {written} ({written.stat().st_size / 1e9:.2f} GB, {to})", err=True)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
