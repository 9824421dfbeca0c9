"""`openkontext world ...`: render a scene file, write a Shapes World dataset.

Exit codes as for the other commands: 0 done, 2 bad input (an unreadable or invalid scene file,
a bad option, an output path that cannot be written), all checked before anything is drawn.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from openkontext.files import (
    PathError,
    atomic_write,
    check_input_file,
    check_output_folder,
    image_outputs,
)
from openkontext.world.edits import KINDS
from openkontext.world.phrasings import SPLITS
from openkontext.world.scene import SceneError, Target

# world.dataset.CATEGORIES, written out here because world.dataset imports torch (a test checks
# that the two agree).
CATEGORIES = (*KINDS, "generation", "ref_object", "ref_colour", "ref_background")

app = typer.Typer(
    name="world",
    help="Shapes World: render scenes and write evaluation datasets.",
    no_args_is_help=True,
    add_completion=False,
)


EXIT_BAD_INPUT = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=EXIT_BAD_INPUT)


@app.command()
def render(
    scene: Annotated[Path, typer.Argument(help="Scene JSON file (may have a \"filter\" key).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="PNG file to write (.png is added to a name without a suffix).")],
    size: Annotated[int, typer.Option(help="Canvas width (and height) in pixels.")] = 64,
    height: Annotated[int | None, typer.Option(help="Canvas height, if not square.")] = None,
) -> None:
    """Render a scene file to a PNG."""
    from openkontext.world.render import render_target, to_pil

    if size < 1 or (height is not None and height < 1):
        raise _fail("--size and --height must be positive")
    try:
        [out], _ = image_outputs(out, None, ("png",))
        target = Target.from_json(check_input_file(scene).read_text(encoding="utf-8"))
    except PathError as e:
        raise _fail(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(f"cannot read {scene}: {e}") from None
    except SceneError as e:
        raise _fail(f"bad scene in {scene}: {e}") from None
    png = io.BytesIO()
    to_pil(render_target(target, (size, height or size))).save(png, "PNG")
    atomic_write(out, png.getvalue())
    typer.echo(f"wrote {out} ({size}x{height or size})")


@app.command()
def sample(
    out: Annotated[Path, typer.Option("--out", help="Folder for cases.jsonl and images/.")],
    count: Annotated[int, typer.Option(help="Number of cases.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same dataset.")] = 0,
    size: Annotated[int, typer.Option(help="Canvas size in pixels.")] = 64,
    kinds: Annotated[list[str] | None, typer.Option(
        help=f"Categories, repeated or comma-separated: {', '.join(CATEGORIES)}.")] = None,
    split: Annotated[str, typer.Option(help="Phrasings: train, heldout or any.")] = "train",
    chains: Annotated[bool, typer.Option(help="Write multi-turn chains instead.")] = False,
    min_turns: Annotated[int, typer.Option(help="Shortest chain.")] = 2,
    max_turns: Annotated[int, typer.Option(help="Longest chain.")] = 10,
) -> None:
    """Write a dataset of edits, generations (or chains) with ground truth."""
    from openkontext.world.dataset import write_dataset

    categories = [k.strip() for item in kinds or [] for k in item.split(",") if k.strip()]
    if split not in SPLITS:
        raise _fail(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 1 <= min_turns <= max_turns:
        raise _fail("need 1 <= --min-turns <= --max-turns")
    if size < 1 or count < 0:
        raise _fail("--size must be positive and --count non-negative")
    try:
        check_output_folder(out)
        path = write_dataset(out, count, seed, size, categories, split, chains,
                             min_turns, max_turns)
    except ValueError as e:
        raise _fail(str(e)) from None
    typer.echo(f"wrote {count} cases to {path}")
