"""Multi-turn editing: a tree of turns with a head; undo and branch move the head.

Turn numbers start at 1; number 0 is the starting picture (or nothing, when the session starts
from text). A new turn edits the head's picture, so after `undo` or `branch` the next edit
starts a new branch and nothing earlier is lost.

`Tree` is the model without a model: the turns, the head, history, and the `session.json`
document, in which pictures are named by file. The HTTP service keeps one tree per session in
its database; its turns are jobs, so they also carry a status, a job id and references.
`Session` builds on it with a `Kontext`: `edit` runs a turn at once and keeps its picture in
memory, and a session saves to a folder, `session.json` plus one PNG per picture, each written
to a temporary file and renamed.

session.json, version 2 (version 1, with `has_original` in place of `original`, still loads):

    {"version": 2, "head": 2, "original": "turn_0.png" | null, "defaults": {...},
     "turns": [{"number": 1, "parent": 0, "instruction": "...", "seed": 7, "settings": {...},
                "seconds": 1.2, "image": "turn_1.png" | null, "status": "Ready",
                "job_id": null, "references": [], "created_at": 1.7e9, "details": null}]}
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from openkontext import imaging
from openkontext.files import atomic_write
from openkontext.pipeline import Kontext, Settings

FORMAT_VERSION = 2
READY, PENDING = "Ready", "Pending"  # the hosted API's status strings (also Error, ...)


class SessionError(ValueError):
    """A session command that cannot be carried out (bad turn number, nothing to undo...)."""


@dataclass
class Turn:
    number: int
    parent: int  # 0 = the starting picture
    instruction: str
    seed: int | None  # None while a server job has not picked it yet
    settings: dict
    image: Image.Image | None = None  # the picture, in memory (a local session's turns)
    seconds: float | None = None
    file: str | None = None  # the picture's file name in the session's folder
    status: str = READY  # Pending, Ready, Error, Request Moderated, Content Moderated
    job_id: str | None = None  # the server's job that makes it
    references: list[str] = field(default_factory=list)  # files of its extra input pictures
    created_at: float | None = None  # Unix seconds
    details: dict | None = None  # why it failed or was moderated

    @property
    def ready(self) -> bool:
        return self.status == READY

    def to_dict(self) -> dict:
        return {
            "number": self.number, "parent": self.parent, "instruction": self.instruction,
            "seed": self.seed, "settings": self.settings, "seconds": self.seconds,
            "image": self.file, "status": self.status, "job_id": self.job_id,
            "references": self.references, "created_at": self.created_at,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Turn:
        return cls(
            number=d["number"], parent=d["parent"], instruction=d["instruction"],
            seed=d["seed"], settings=d["settings"], seconds=d.get("seconds"),
            file=d.get("image"), status=d.get("status", READY), job_id=d.get("job_id"),
            references=list(d.get("references", [])), created_at=d.get("created_at"),
            details=d.get("details"),
        )


class Tree:
    """Turns, head and history, with pictures named by file (`original_file`, `Turn.file`)."""

    def __init__(self, original_file: str | None = None):
        self.original_file = original_file
        self.turns: list[Turn] = []
        self.head = 0

    @property
    def has_original(self) -> bool:
        return self.original_file is not None

    def turn(self, number: int) -> Turn:
        if not 1 <= number <= len(self.turns):
            raise SessionError(f"no turn {number}; turns are 1..{len(self.turns)} (0 = start)")
        return self.turns[number - 1]

    def add(self, parent: int, instruction: str, seed: int | None, settings: dict,
            **fields) -> Turn:
        """Append a turn made from `parent` (its number is the next one); the head is left
        where it is."""
        if parent != 0:
            self.turn(parent)
        turn = Turn(len(self.turns) + 1, parent, instruction, seed, settings, **fields)
        self.turns.append(turn)
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
        elif not self.has_original:
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

    def files(self) -> list[str]:
        """Every picture file the tree names: the original, turn pictures, references."""
        names = [self.original_file] if self.original_file else []
        for t in self.turns:
            names += ([t.file] if t.file else []) + t.references
        return list(dict.fromkeys(names))

    # -- the session.json document -------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"version": FORMAT_VERSION, "head": self.head, "original": self.original_file,
                "turns": [t.to_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, doc: dict) -> Tree:
        tree = cls()
        tree.read_dict(doc)
        return tree

    def read_dict(self, doc: dict, where: str = "session") -> None:
        """Take turns, head and original from a version 1 or 2 document; SessionError naming
        `where` when it is not one."""
        try:
            version = doc.get("version")
            if version == 1:
                original = "turn_0.png" if doc["has_original"] else None
            elif version == FORMAT_VERSION:
                original = doc["original"]
            else:
                raise SessionError(f"{where}: unsupported session version {version}")
            turns = [Turn.from_dict(t) for t in doc["turns"]]
            head = doc["head"]
        except (KeyError, TypeError, AttributeError) as e:
            raise SessionError(f"{where}: damaged session file ({e!r})") from None
        for i, t in enumerate(turns):
            if t.number != i + 1 or not 0 <= t.parent < t.number:
                raise SessionError(f"{where}: damaged session file (turn {t.number} of "
                                   f"parent {t.parent} at place {i + 1})")
        if not (isinstance(head, int) and 0 <= head <= len(turns)):
            raise SessionError(f"{where}: damaged session file (head {head!r})")
        self.original_file, self.turns, self.head = original, turns, head


class Session(Tree):
    """A tree whose turns run at once on `kontext`, pictures kept in memory."""

    def __init__(self, kontext: Kontext, image=None, defaults: Settings | None = None):
        super().__init__()
        self.kontext = kontext
        self.defaults = defaults or Settings()
        self.original = None if image is None else imaging.load_image(image, kontext.limits)

    @property
    def has_original(self) -> bool:
        return self.original is not None

    @property
    def current(self) -> Image.Image | None:
        """The image the next edit starts from."""
        return self.original if self.head == 0 else self.turn(self.head).image

    def edit(self, instruction: str, on_step=None, **overrides) -> Turn:
        """Run one turn on the current image (or generate, if there is none yet)."""
        if self.head and self.current is None:
            status = self.turn(self.head).status
            raise SessionError(f"turn {self.head} has no picture ({status}): branch to another")
        settings = dataclasses.replace(self.defaults, **overrides)
        images = [] if self.current is None else [self.current]
        started = time.time()
        result = self.kontext.run(instruction, images, settings, on_step=on_step)
        turn = self.add(self.head, instruction, result.seeds[0],
                        _settings_dict(settings, result.seeds[0]), image=result.images[0],
                        seconds=round(result.seconds, 3), created_at=started)
        self.head = turn.number
        return turn

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.original is not None:
            self.original_file = "turn_0.png"
            atomic_write(folder / self.original_file, _png(self.original))
        for t in self.turns:
            if t.image is not None:
                t.file = f"turn_{t.number}.png"
                atomic_write(folder / t.file, _png(t.image))
        doc = {**self.to_dict(), "defaults": dataclasses.asdict(self.defaults)}
        atomic_write(folder / "session.json", (json.dumps(doc, indent=2) + "\n").encode())
        return folder

    @classmethod
    def load(cls, kontext: Kontext, folder: str | Path) -> Session:
        """A saved session (version 1 or 2), such as a folder unpacked from a server's zip. A
        local session keeps turn pictures only: references are dropped."""
        folder = Path(folder)
        path = folder / "session.json"
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict):
                raise SessionError(f"{path}: damaged session file (not a JSON object)")
            session = cls(kontext, None, Settings(**doc.get("defaults", {})))
            session.read_dict(doc, str(path))
            if session.original_file:
                session.original = imaging.load_image(folder / session.original_file,
                                                      kontext.limits)
            for t in session.turns:
                t.references = []
                if t.file:
                    t.image = imaging.load_image(folder / t.file, kontext.limits)
        except FileNotFoundError as e:
            raise SessionError(f"{folder}: not a saved session ({e.filename} missing)") from None
        except (TypeError, json.JSONDecodeError, imaging.ImageError) as e:
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
