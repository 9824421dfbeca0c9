"""The interactive `chat` loop and the `demo` command (kept apart from cli.py's option plumbing)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TextIO

import numpy as np
from rich.console import Console

from openkontext.files import atomic_write
from openkontext.session import Session, SessionError

HELP = (
    "type an instruction, or: /undo, /branch N, /history, /save DIR, /help, /quit "
    "(turn 0 is the starting image)"
)


def _save_turn_image(session: Session, output_dir: Path, number: int) -> Path:
    from openkontext.imaging import encode_image

    image = session.original if number == 0 else session.turn(number).image
    return atomic_write(output_dir / f"turn_{number}.png", encode_image(image, "png"))


def run_chat(
    session: Session, lines: TextIO, console: Console, output_dir: Path, save: Path | None, progress
) -> None:
    """Read one instruction or command per line until /quit or end of input."""
    console.print(HELP)
    if session.original is not None:
        console.print(f"turn 0: {_save_turn_image(session, output_dir, 0)}")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                console.print(HELP)
            elif line == "/undo":
                console.print(f"head is now turn {session.undo()}")
            elif line.startswith("/branch"):
                arg = line.removeprefix("/branch").strip()
                if not arg.isdigit():
                    raise SessionError("usage: /branch N (a turn number; 0 = starting image)")
                console.print(f"head is now turn {session.branch(int(arg))}")
            elif line == "/history":
                history = session.history()
                if not history:
                    console.print("no turns yet on this branch")
                for t in history:
                    console.print(
                        f"{t.number:3}  (from {t.parent})  seed {t.seed}  {t.instruction}"
                    )
            elif line.startswith("/save"):
                folder = Path(line.removeprefix("/save").strip() or "session")
                console.print(f"saved to {session.save(folder)}")
            elif line.startswith("/"):
                raise SessionError(f"unknown command {line.split()[0]}; {HELP}")
            else:
                with progress(f"turn {len(session.turns) + 1}") as on_step:
                    turn = session.edit(line, on_step=on_step)
                path = _save_turn_image(session, output_dir, turn.number)
                console.print(
                    f"turn {turn.number}: {path} ({turn.seconds:.2f} s, seed {turn.seed})"
                )
        except (SessionError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}")
    if save is not None:
        console.print(f"saved to {session.save(save)}")


def run_demo(kontext, out: Path, seed: int, console: Console, progress) -> None:
    """Render a Shapes World scene, edit it with the model, and write before/after/target."""
    from openkontext.eval.metrics import psnr
    from openkontext.imaging import encode_image
    from openkontext.world.render import to_pil
    from openkontext.world.sampling import sample_edit

    sample = sample_edit(random.Random(seed), kinds=["recolor", "add", "background", "remove"])
    size = kontext.model.preset.native_size
    before, target, _ = sample.images(size)
    with progress("editing") as on_step:
        result = kontext.run(sample.instruction, [to_pil(before)], _settings(seed), on_step=on_step)
    after = np.asarray(result.images[0])
    paths = {}
    for name, image in (("before", before), ("after", after), ("target", target)):
        paths[name] = atomic_write(out / f"{name}.png", encode_image(to_pil(image), "png"))
    psnr_after, identity = psnr(after, target), psnr(before, target)
    console.print(f'instruction: "{sample.instruction}"')
    for name, path in paths.items():
        console.print(f"{name:7} {path}")
    console.print(
        f"PSNR to ground truth {psnr_after:.1f} dB (returning the input: {identity:.1f} dB); "
        f"{result.seconds:.2f} s on {kontext.model.device}"
    )


def _settings(seed: int):
    from openkontext.pipeline import Settings

    return Settings(seed=seed)
