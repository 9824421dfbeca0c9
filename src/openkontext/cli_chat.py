"""The interactive `chat` loop and the `demo` command (kept apart from cli.py's option plumbing)."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np
from rich.console import Console
from rich.markup import escape

from openkontext.files import atomic_write, check_output_folder
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
    say = partial(console.print, markup=False)  # paths and instructions are printed as typed
    say(HELP)
    if session.original is not None:
        say(f"turn 0: {_save_turn_image(session, output_dir, 0)}")
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                say(HELP)
            elif line == "/undo":
                say(f"head is now turn {session.undo()}")
            elif line.startswith("/branch"):
                arg = line.removeprefix("/branch").strip()
                if not arg.isdigit():
                    raise SessionError("usage: /branch N (a turn number; 0 = starting image)")
                say(f"head is now turn {session.branch(int(arg))}")
            elif line == "/history":
                history = session.history()
                if not history:
                    say("no turns yet on this branch")
                for t in history:
                    say(f"{t.number:3}  (from {t.parent})  seed {t.seed}  {t.instruction}")
            elif line.startswith("/save"):
                folder = check_output_folder(line.removeprefix("/save").strip() or "session")
                say(f"saved to {session.save(folder)}")
            elif line.startswith("/"):
                raise SessionError(f"unknown command {line.split()[0]}; {HELP}")
            else:
                with progress(f"turn {len(session.turns) + 1}") as on_step:
                    turn = session.edit(line, on_step=on_step)
                path = _save_turn_image(session, output_dir, turn.number)
                say(f"turn {turn.number}: {path} ({turn.seconds:.2f} s, seed {turn.seed})")
        except (SessionError, ValueError, OSError) as e:  # the session lives on: report, go on
            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
    if save is not None:
        say(f"saved to {session.save(save)}")


DEMO_KINDS = ("add", "background", "recolor", "remove", "night")  # one turn each, in order


def run_demo(kontext, out: Path, seed: int, console: Console, progress) -> None:
    """A short session on a Shapes World scene: one turn of each of DEMO_KINDS, each turn
    editing the model's previous output, as a person would. Every turn is written next to its
    ground truth and judged in words: right when it is within 25 dB PSNR of the ground truth."""
    from openkontext.eval.metrics import SUCCESS_DB, psnr
    from openkontext.imaging import encode_image
    from openkontext.world.edits import can_edit
    from openkontext.world.render import render, render_target, to_pil
    from openkontext.world.sampling import sample_edit
    from openkontext.world.scene import random_scene

    say = partial(console.print, markup=False, highlight=False, soft_wrap=True)
    rng = random.Random(seed)
    size = kontext.model.preset.native_size
    scene = random_scene(rng, min_objects=2)
    picture = render(scene, size)
    write = partial(_write_png, out, encode_image, to_pil)
    say(f"a Shapes World scene: {write('turn0.png', picture)}")
    right = number = 0
    for kind in DEMO_KINDS:
        if not can_edit(scene, kind):  # e.g. nothing left to remove
            continue
        number += 1
        step = sample_edit(rng, [kind], source=scene)
        truth = render_target(step.target, size)
        with progress(f"turn {number}") as on_step:
            result = kontext.run(step.instruction, [to_pil(picture)], _settings(seed),
                                 on_step=on_step)
        output = np.asarray(result.images[0])
        score, unchanged = psnr(output, truth), psnr(picture, truth)
        if score >= SUCCESS_DB:
            right += 1
            verdict = f"right ({score:.1f} dB from the ground truth)"
        elif score <= unchanged:
            verdict = (f"wrong: no closer to the ground truth ({score:.1f} dB) than the picture "
                       f"before the edit ({unchanged:.1f} dB)")
        else:
            verdict = f"wrong: {score:.1f} dB from the ground truth"
        say(f'turn {number}, {kind}: "{step.instruction}" - {verdict}; '
            f"{write(f'turn{number}.png', output)} ({result.seconds:.2f} s), ground truth "
            f"{write(f'turn{number}_truth.png', truth)}")
        picture, scene = output, step.target.scene
    say(f"{right} of {number} turns right. A turn counts as right at {SUCCESS_DB:.0f} dB "
        "PSNR or more (identical pictures score 99). Each turn edits the previous output, so "
        "a miss stays in the picture. The embedded model knows only Shapes World: "
        "docs/shapes-world.md shows what it can be asked.")


def _write_png(out: Path, encode_image, to_pil, name: str, image) -> Path:
    return atomic_write(out / name, encode_image(to_pil(image), "png"))


def _settings(seed: int):
    from openkontext.pipeline import Settings

    return Settings(seed=seed)
