"""The `openkontext` command line.

Exit codes: 0 success, 2 bad input (unreadable image, bad size, unknown option value, missing
weights, a device this machine lacks, an output path that cannot be written), 1 an internal
error. Paths and options are checked (`openkontext.files`) before the model loads. `--json`
prints one JSON document on stdout for scripts; progress bars go to stderr.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openkontext.cli_model import (
    Device,
    Dtype,
    Load,
    Loras,
    Offload,
    OffloadMode,
    TextEncoders,
    Threads,
    Tokenizers,
    Weights,
    WeightsDtypeOption,
    parts_info,
    read_loras,
    real_weights,
)
from openkontext.cli_ui import register as register_ui
from openkontext.cli_weights import register as register_weights
from openkontext.eval.cli import register as register_eval
from openkontext.files import (
    FORMAT_ALIASES,
    atomic_write,
    check_input_file,
    check_output_folder,
    image_outputs,
)
from openkontext.serve.cli import register as register_serve
from openkontext.speed import DEFAULT_SPEED, SPEEDS
from openkontext.train.cli import app as train_app
from openkontext.world.cli import app as world_app

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
FORMATS = ("png", "jpeg", "webp")

app = typer.Typer(
    help="openkontext: instruction-based image editing (FLUX.1 Kontext), self-hosted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(world_app, name="world")
app.add_typer(train_app, name="train")
register_serve(app)
register_ui(app)
register_weights(app)
register_eval(app)
err = Console(stderr=True)

# Options shared by edit, generate and chat.
Seed = Annotated[int | None, typer.Option(help="same seed + inputs + settings = same bytes")]
Steps = Annotated[int | None, typer.Option(help="denoising steps 1..50 (default: model's)")]
Guidance = Annotated[
    float | None,
    typer.Option(
        help="guidance 1..20: distilled on kontext-dev, classifier-free on a mini export "
        "trained for it, ignored by other mini exports"
    ),
]
Aspect = Annotated[str | None, typer.Option("--aspect-ratio", help="W:H, 21:9 .. 9:21")]
Width = Annotated[int | None, typer.Option(help="explicit width (with --height)")]
Height = Annotated[int | None, typer.Option(help="explicit height (with --width)")]
NumImages = Annotated[int, typer.Option("--num-images", "-n", min=1, max=4, help="one batch")]
SpeedChoice = enum.StrEnum("SpeedChoice", {name: name for name in SPEEDS})
SpeedOption = Annotated[
    SpeedChoice | None,
    typer.Option(
        "--speed",
        help="quality: every transformer block at every step; balanced, fast: steps whose first "
        f"block barely changed reuse the other blocks' last output (default: {DEFAULT_SPEED})",
    ),
]


class ImageFormat(enum.StrEnum):
    png = "png"
    jpeg = "jpeg"
    jpg = "jpg"
    webp = "webp"


Format = Annotated[
    ImageFormat | None,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        help="default: from the -o suffix, else png; must agree with the suffix",
    ),
]
Quality = Annotated[int, typer.Option(min=1, max=100, help="jpeg/webp quality")]
Style = Annotated[str | None, typer.Option("--style", help="a named style preset")]
Preserve = Annotated[bool, typer.Option(help="paste back pixels the edit did not change")]
AsJson = Annotated[bool, typer.Option("--json", help="print a JSON result on stdout")]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="output file, not a directory (missing folders are made); .png, .jpg/.jpeg or .webp "
        "sets the format, a name without a suffix gets .png (or --format's); -n 2+ writes "
        "NAME_1.png, NAME_2.png, ...",
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn known user errors (PathError and the other ValueErrors included) into a one-line
    message and exit code 2; others into exit 1."""
    from openkontext.imaging import ImageError
    from openkontext.resolution import SizeError
    from openkontext.session import SessionError
    from openkontext.weights import WeightsError

    try:
        yield
    except (
        ImageError,
        SizeError,
        SessionError,
        WeightsError,
        ValueError,
        FileNotFoundError,
    ) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - last resort: report, do not dump a traceback
        err.print(
            f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


@contextmanager
def _progress(label: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A step progress bar on stderr; yields the pipeline's on_step callback."""
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )
    with bar:
        task = bar.add_task(label, total=None)
        yield lambda i, n: bar.update(task, completed=i, total=n)


def _check_outputs(output: Path | None, fmt: ImageFormat | None, count: int) -> str:
    """Check -o and --format before the model loads; the format to write. Without -o the
    files are named after the seed, known only later, in the working directory."""
    fmt = fmt and FORMAT_ALIASES.get(fmt.value, fmt.value)
    if output is None:
        check_output_folder(Path.cwd())
        return fmt or FORMATS[0]
    return image_outputs(output, fmt, FORMATS, count)[1]


def _write_outputs(result, output: Path, fmt: str, quality: int) -> list[Path]:
    paths, fmt = image_outputs(output, fmt, FORMATS, len(result.images))
    for path, data in zip(paths, result.encode(fmt, quality=quality), strict=True):
        atomic_write(path, data)
    return paths


def _report(result, paths: list[Path], as_json: bool) -> None:
    doc = {
        "outputs": [str(p) for p in paths],
        "seeds": result.seeds,
        "width": result.width,
        "height": result.height,
        "steps": result.steps,
        "guidance": result.guidance,
        "speed": result.speed,
        "skipped_steps": result.skipped_steps,
        "prompt": result.prompt,
        "model": result.model,
        "seconds": round(result.seconds, 3),
        "notice": result.notice,
    }
    if result.notice:
        err.print(f"note: {result.notice}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        for p, s in zip(paths, result.seeds, strict=True):
            err.print(
                f"wrote {p} ({result.width}x{result.height}, seed {s}, {result.seconds:.2f} s)",
                markup=False,
            )


def _run(kontext, prompt, images, settings, label, quiet):
    with _progress(label, quiet) as on_step:
        return kontext.run(prompt, images, settings, on_step=on_step)


@app.command()
def edit(
    image: Annotated[Path, typer.Argument(help="image to edit (png, jpeg, webp, gif, avif)")],
    instruction: Annotated[str, typer.Argument(help='what to change, e.g. "make the car red"')],
    output: Output = None,
    reference: Annotated[
        list[Path] | None, typer.Option(help="extra reference image (<= 3)")
    ] = None,
    seed: Seed = None,
    steps: Steps = None,
    guidance: Guidance = None,
    aspect_ratio: Aspect = None,
    width: Width = None,
    height: Height = None,
    num_images: NumImages = 1,
    fmt: Format = None,
    quality: Quality = 95,
    style: Style = None,
    preserve: Preserve = True,
    speed: SpeedOption = None,
    lora: Loras = None,
    weights: Weights = None,
    text_encoders: TextEncoders = None,
    tokenizers: Tokenizers = None,
    weights_dtype: WeightsDtypeOption = None,
    device: Device = None,
    dtype: Dtype = None,
    offload: Offload = OffloadMode.none,
    threads: Threads = None,
    as_json: AsJson = False,
) -> None:
    """Edit IMAGE following INSTRUCTION."""
    from openkontext.pipeline import Settings

    with _errors():
        settings = Settings(
            seed, steps, guidance, aspect_ratio, width, height, num_images, style, preserve,
            loras=read_loras(lora), speed=speed and speed.value,
        )
        images = [check_input_file(p) for p in [image, *(reference or [])]]
        fmt = _check_outputs(output, fmt, num_images)
        kontext = Load(weights, device, dtype, offload, threads, text_encoders, tokenizers,
                       weights_dtype)()
        result = _run(kontext, instruction, images, settings, "editing", as_json)
        out = output or Path(f"{image.stem}-edit-{result.seeds[0]}.{fmt}")
        _report(result, _write_outputs(result, out, fmt, quality), as_json)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="a description of the image")],
    output: Output = None,
    seed: Seed = None,
    steps: Steps = None,
    guidance: Guidance = None,
    aspect_ratio: Aspect = None,
    width: Width = None,
    height: Height = None,
    num_images: NumImages = 1,
    fmt: Format = None,
    quality: Quality = 95,
    style: Style = None,
    speed: SpeedOption = None,
    lora: Loras = None,
    weights: Weights = None,
    text_encoders: TextEncoders = None,
    tokenizers: Tokenizers = None,
    weights_dtype: WeightsDtypeOption = None,
    device: Device = None,
    dtype: Dtype = None,
    offload: Offload = OffloadMode.none,
    threads: Threads = None,
    as_json: AsJson = False,
) -> None:
    """Generate an image from PROMPT alone."""
    from openkontext.pipeline import Settings

    with _errors():
        settings = Settings(seed, steps, guidance, aspect_ratio, width, height, num_images, style,
                            loras=read_loras(lora), speed=speed and speed.value)
        fmt = _check_outputs(output, fmt, num_images)
        kontext = Load(weights, device, dtype, offload, threads, text_encoders, tokenizers,
                       weights_dtype)()
        result = _run(kontext, prompt, [], settings, "generating", as_json)
        out = output or Path(f"generated-{result.seeds[0]}.{fmt}")
        _report(result, _write_outputs(result, out, fmt, quality), as_json)


@app.command()
def info(
    weights: Weights = None,
    text_encoders: TextEncoders = None,
    tokenizers: Tokenizers = None,
    weights_dtype: WeightsDtypeOption = None,
    device: Device = None,
    dtype: Dtype = None,
    as_json: AsJson = False,
) -> None:
    """Show the model, weights, device, dtype and memory in use; for FLUX.1 Kontext [dev]
    weights, each part found (where, dtype, size) without loading them."""
    import resource

    with _errors():
        if weights is not None and real_weights(weights):
            parts_info(weights, text_encoders, tokenizers, weights_dtype, as_json)
            return
        kontext = Load(weights, device, dtype, weights_dtype=weights_dtype)()
        doc = kontext.info()
        doc["weights"] = weights or "embedded"
        doc["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if as_json:
            typer.echo(json.dumps(doc))
        else:
            for key, value in doc.items():
                typer.echo(f"{key:24} {value}")


@app.command()
def chat(
    image: Annotated[
        Path | None, typer.Argument(help="starting image (omit to start from text)")
    ] = None,
    seed: Seed = None,
    steps: Steps = None,
    speed: SpeedOption = None,
    lora: Loras = None,
    weights: Weights = None,
    device: Device = None,
    dtype: Dtype = None,
    save: Annotated[
        Path | None, typer.Option(help="save the session in this folder on exit")
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="each turn's image is written here")] = Path(
        "chat"
    ),
    threads: Threads = None,
) -> None:
    """Edit turn after turn: one instruction per line; /undo, /branch N, /history, /save DIR,
    /quit."""
    from openkontext.cli_chat import run_chat

    with _errors():
        if image is not None:
            check_input_file(image)
        for folder in (output_dir, save):
            if folder is not None:
                check_output_folder(folder)
        loras = read_loras(lora)
        kontext = Load(weights, device, dtype, threads=threads)()
        session = kontext.session(image, seed=seed, steps=steps, loras=loras,
                                  speed=speed and speed.value)
        run_chat(session, sys.stdin, err, output_dir, save, _progress)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the pictures")] = Path("out/demo"),
    seed: Seed = 0,
    weights: Weights = None,
    threads: Threads = None,
) -> None:
    """A five-turn session on a Shapes World scene with the embedded model, each turn judged
    against its ground truth."""
    from openkontext.cli_chat import run_demo

    with _errors():
        check_output_folder(out)
        run_demo(Load(weights, threads=threads)(), out, seed, err, _progress)


def main() -> None:
    app()
