"""Multi-turn editing: each turn edits the current image; undo and branch move the head.

Turns form a tree. Turn numbers start at 1; number 0 is the starting image (or nothing, when
the session starts from text). A new turn edits the head's image, so after `undo` or `branch`
the next edit starts a new branch and nothing earlier is lost. A session saves to a folder:
`session.json` plus one PNG per image, each written to a temporary file and renamed.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from openkontext import imaging
from openkontext.files import atomic_write
from openkontext.pipeline import Kontext, Settings

FORMAT_VERSION = 1


class SessionError(ValueError):
    """A session command that cannot be carried out (bad turn number, nothing to undo...)."""


@dataclass
class Turn:
    number: int
    parent: int  # 0 = the starting image
    instruction: str
    seed: int
    settings: dict
    image: Image.Image
    seconds: float


class Session:
    def __init__(self, kontext: Kontext, image=None, defaults: Settings | None = None):
        self.kontext = kontext
        self.defaults = defaults or Settings()
        self.original = None if image is None else imaging.load_image(image, kontext.limits)
        self.turns: list[Turn] = []
        self.head = 0

    @property
    def current(self) -> Image.Image | None:
        """The image the next edit starts from."""
        return self.original if self.head == 0 else self.turn(self.head).image

    def turn(self, number: int) -> Turn:
        if not 1 <= number <= len(self.turns):
            raise SessionError(f"no turn {number}; turns are 1..{len(self.turns)} (0 = start)")
        return self.turns[number - 1]

    def edit(self, instruction: str, on_step=None, **overrides) -> Turn:
        """Run one turn on the current image (or generate, if there is none yet)."""
        settings = dataclasses.replace(self.defaults, **overrides)
        images = [] if self.current is None else [self.current]
        result = self.kontext.run(instruction, images, settings, on_step=on_step)
        turn = Turn(
            number=len(self.turns) + 1,
            parent=self.head,
            instruction=instruction,
            seed=result.seeds[0],
            settings=_settings_dict(settings, result.seeds[0]),
            image=result.images[0],
            seconds=round(result.seconds, 3),
        )
        self.turns.append(turn)
        self.head = turn.number
        return turn

    def undo(self) -> int:
        """Move the head back to the current turn's parent; returns the new head."""
        if self.head == 0:
            raise SessionError("nothing to undo: already at the starting image")
        self.head = self.turn(self.head).parent
        return self.head

    def branch(self, number: int) -> int:
        """Continue from turn `number` (0 = the starting image)."""
        if number != 0:
            self.turn(number)
        elif self.original is None:
            raise SessionError("this session started from text: there is no turn 0 image")
        self.head = number
        return number

    def history(self) -> list[Turn]:
        """The turns from the start to the head, in order."""
        path, n = [], self.head
        while n:
            t = self.turn(n)
            path.append(t)
            n = t.parent
        return path[::-1]

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.original is not None:
            atomic_write(folder / "turn_0.png", _png(self.original))
        for t in self.turns:
            atomic_write(folder / f"turn_{t.number}.png", _png(t.image))
        doc = {
            "version": FORMAT_VERSION,
            "head": self.head,
            "has_original": self.original is not None,
            "defaults": dataclasses.asdict(self.defaults),
            "turns": [
                {
                    "number": t.number,
                    "parent": t.parent,
                    "instruction": t.instruction,
                    "seed": t.seed,
                    "settings": t.settings,
                    "seconds": t.seconds,
                    "image": f"turn_{t.number}.png",
                }
                for t in self.turns
            ],
        }
        atomic_write(folder / "session.json", (json.dumps(doc, indent=2) + "\n").encode())
        return folder

    @classmethod
    def load(cls, kontext: Kontext, folder: str | Path) -> Session:
        folder = Path(folder)
        path = folder / "session.json"
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != FORMAT_VERSION:
                raise SessionError(f"{path}: unsupported session version {doc.get('version')}")
            session = cls(kontext, None, Settings(**doc["defaults"]))
            if doc["has_original"]:
                session.original = imaging.load_image(folder / "turn_0.png", kontext.limits)
            for t in doc["turns"]:
                image = imaging.load_image(folder / t["image"], kontext.limits)
                session.turns.append(
                    Turn(
                        t["number"],
                        t["parent"],
                        t["instruction"],
                        t["seed"],
                        t["settings"],
                        image,
                        t["seconds"],
                    )
                )
            session.head = doc["head"]
            if session.head:
                session.turn(session.head)
        except FileNotFoundError as e:
            raise SessionError(f"{folder}: not a saved session ({e.filename} missing)") from None
        except (KeyError, TypeError, json.JSONDecodeError, imaging.ImageError) as e:
            raise SessionError(f"{path}: damaged session file ({e})") from None
        return session


def _settings_dict(settings: Settings, seed: int) -> dict:
    d = dataclasses.asdict(settings)
    d["seed"] = seed
    return d


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
