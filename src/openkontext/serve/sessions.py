"""Editing sessions on the server: one row per session, its turn tree as a document, pictures
as files.

A row holds the session's API key hash, name, timestamps and its `session.Tree` as JSON (the
session.json document, so a session exported as a zip loads with `Session.load`). Its pictures
live under data_dir/sessions/<id>/, each written to a temporary file and renamed, 0600: the
starting picture as it was given (`turn_0.<ext>`), each turn's picture copied from its job's
result (`turn_<n>.<ext>`), and references named by their content (`ref_<sha256>.<ext>`).

Every change to a tree is made in one transaction that re-reads the row under a lock (SQLite's
write lock, taken by BEGIN IMMEDIATE; PostgreSQL's row lock, SELECT ... FOR UPDATE), so
processes sharing the database never lose each other's changes. Pictures are written before
the tree that names them, so a tree never names a missing file.

A turn is a job (the job's params carry {"session": {"id", "parent"}}; the turns name the job,
the i-th turn of a job getting its i-th picture). `settle` brings the turns still Pending whose
job has finished up to date: the worker calls it as each such job finishes, and every read
calls it too, so a turn is never left Pending by a restart, a crash or another process.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import Column, Float, Index, String, Table, Text, func, select, text, update

from openkontext.files import PRIVATE, atomic_write
from openkontext.serve import retention
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore, State, well_formed
from openkontext.session import PENDING, Tree, Turn

# Picture formats a session keeps: PIL's name -> (file suffix, MIME type).
FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"),
           "MPO": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp"),
           "GIF": ("gif", "image/gif"), "AVIF": ("avif", "image/avif")}
MIME = {suffix: mime for suffix, mime in FORMATS.values()}


class TooMany(Exception):
    """A session or a turn beyond the server's limits (max_sessions_per_key, max_session_turns)."""


@dataclass
class SessionRow:
    id: str
    api_key_hash: str
    name: str
    created_at: float
    updated_at: float
    tree: Tree


def picture_name(stem: str, data: bytes) -> str:
    """`stem` with the suffix of the (already validated) picture's format."""
    kind = Image.open(io.BytesIO(data)).format
    return f"{stem}.{FORMATS.get(kind, ('png',))[0]}"


def reference_name(data: bytes) -> str:
    return picture_name(f"ref_{hashlib.sha256(data).hexdigest()[:32]}", data)


class SessionStore:
    def __init__(self, settings: ServeSettings, jobs: JobStore):
        self.settings = settings
        self.jobs = jobs
        self.engine = jobs.engine
        self.t = Table(
            f"{jobs.t.name}_sessions", jobs.metadata,
            Column("id", String(36), primary_key=True),
            Column("api_key_hash", String(80), nullable=False),
            Column("name", Text, nullable=False),
            Column("created_at", Float, nullable=False),
            Column("updated_at", Float, nullable=False),
            Column("tree", Text, nullable=False),
        )  # made by JobStore.create_tables, with the jobs table
        Index(f"{self.t.name}_key", self.t.c.api_key_hash, self.t.c.updated_at)

    def folder(self, session_id: str) -> Path:
        return self.settings.data_dir / "sessions" / session_id

    # -- rows --------------------------------------------------------------------------------------

    def create(self, key_hash: str, name: str, original: bytes | None) -> SessionRow:
        """A new session, its starting picture written first; TooMany past the key's limit."""
        sid, now = str(uuid.uuid4()), time.time()
        tree = Tree()
        if original is not None:
            tree.original_file = picture_name("turn_0", original)
            atomic_write(self.folder(sid) / tree.original_file, original, mode=PRIVATE)
        row = SessionRow(sid, key_hash, name, now, now, tree)
        limit = self.settings.max_sessions_per_key
        try:
            with self.engine.begin() as conn:
                if limit is not None:
                    self._lock_key(conn, key_hash)
                    count = conn.execute(select(func.count()).where(
                        self.t.c.api_key_hash == key_hash)).scalar_one()
                    if count >= limit:
                        raise TooMany(f"this API key has {count} sessions, the server's limit "
                                      "(max_sessions_per_key); delete one first")
                conn.execute(self.t.insert().values(
                    id=sid, api_key_hash=key_hash, name=name, created_at=now, updated_at=now,
                    tree=json.dumps(tree.to_dict())))
        except BaseException:
            shutil.rmtree(self.folder(sid), ignore_errors=True)
            raise
        return row

    def get(self, session_id: str, key_hash: str | None) -> SessionRow | None:
        """The session, if it exists and (unless `key_hash` is None) is that key's."""
        if not well_formed(session_id):
            return None
        with self.engine.connect() as conn:
            found = conn.execute(select(self.t).where(self.t.c.id == session_id)).first()
        row = None if found is None else _row(found)
        return row if row is not None and key_hash in (None, row.api_key_hash) else None

    def for_key(self, key_hash: str) -> list[SessionRow]:
        """The key's sessions, most recently updated first."""
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.api_key_hash == key_hash)
                                .order_by(t.c.updated_at.desc(), t.c.created_at.desc())).all()
        return [_row(r) for r in rows]

    def update(self, session_id: str, key_hash: str | None,
               change: Callable[[SessionRow], bool | None]) -> SessionRow | None:
        """Apply `change` to the session as it is now, under its lock, and store the result;
        None (nothing changed) when there is no such session of that key. An exception from
        `change` leaves the session as it was; so does a `change` that returns False (it found
        nothing to do), without touching `updated_at`."""
        if not well_formed(session_id):
            return None
        with self.engine.begin() as conn:
            query = select(self.t).where(self.t.c.id == session_id)
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                query = query.with_for_update()
            found = conn.execute(query).first()
            if found is None or key_hash not in (None, found.api_key_hash):
                return None
            row = _row(found)
            if change(row) is False:
                return row
            row.updated_at = max(time.time(), row.updated_at)
            conn.execute(update(self.t).where(self.t.c.id == session_id).values(
                name=row.name, updated_at=row.updated_at, tree=json.dumps(row.tree.to_dict())))
        return row

    def delete(self, session_id: str, key_hash: str) -> SessionRow | None:
        """Delete the row, then the pictures; -> the session as it was (None: no such one)."""
        row = self.get(session_id, key_hash)
        if row is None:
            return None
        with self.engine.begin() as conn:
            gone = conn.execute(self.t.delete().where(
                self.t.c.id == session_id, self.t.c.api_key_hash == key_hash)).rowcount
        shutil.rmtree(self.folder(session_id), ignore_errors=True)
        return row if gone else None

    def _lock_key(self, conn, key_hash: str) -> None:
        """Serialise session creation for one key, in every process (for its count)."""
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            lock_id = zlib.crc32(f"{self.t.name}:{key_hash}".encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})

    # -- turns and their jobs ------------------------------------------------------------------

    def add_turns(self, session_id: str, key_hash: str, job: Job, parent: int, settings: dict,
                  references: list[str]) -> tuple[SessionRow, list[int]] | None:
        """One Pending turn per image of `job`, from `parent`; the head moves to the first.
        TooMany past max_session_turns."""
        made: list[int] = []
        n, limit = job.params.get("num_images", 1), self.settings.max_session_turns

        def add(row: SessionRow) -> None:
            tree, seed = row.tree, job.params.get("seed")
            if len(tree.turns) + n > limit:
                raise TooMany(f"this session has {len(tree.turns)} turns; the server's limit "
                              f"is {limit} (max_session_turns): start a new session")
            for i in range(n):
                made.append(tree.add(
                    parent, job.params["prompt"], None if seed is None else seed + i, settings,
                    status=PENDING, job_id=job.id, references=references,
                    created_at=job.created_at).number)
            tree.head = made[0]

        row = self.update(session_id, key_hash, add)
        return None if row is None else (row, made)

    def settle(self, row: SessionRow) -> SessionRow | None:
        """Bring the turns still Pending whose jobs have finished (or are gone) up to date,
        their pictures copied in; -> the session now (None: it was deleted meanwhile)."""
        outcomes: dict[int, dict] = {}
        jobs: dict[str, Job | None] = {}
        for turn in row.tree.turns:
            if turn.status != PENDING or turn.job_id is None:
                continue
            if turn.job_id not in jobs:
                jobs[turn.job_id] = self.jobs.get(turn.job_id)
            job = jobs[turn.job_id]
            if job is None or job.state.finished:
                outcomes[turn.number] = self._outcome(row, turn, job)
        if not outcomes:
            return row

        def apply(current: SessionRow) -> bool:
            changed = False
            for number, changes in outcomes.items():
                turn = current.tree.turn(number)
                if turn.status == PENDING:  # not settled meanwhile by another reader
                    for name, value in changes.items():
                        setattr(turn, name, value)
                    changed = True
            return changed  # a turn another reader settled first is no change to record

        settled = self.update(row.id, None, apply)
        if settled is None:  # deleted while the pictures were copied: remove the copies
            shutil.rmtree(self.folder(row.id), ignore_errors=True)
        return settled

    def settle_job(self, job_id: str) -> None:
        """The worker's hook: a job that makes session turns has finished."""
        job = self.jobs.get(job_id)
        session_id = (job.params.get("session") or {}).get("id") if job else None
        row = self.get(session_id, None) if isinstance(session_id, str) else None
        if row is not None:
            self.settle(row)

    def _outcome(self, row: SessionRow, turn: Turn, job: Job | None) -> dict:
        """The fields a finished job gives its turn; a Ready turn's picture is copied first."""
        if job is None:
            return {"status": "Error", "details": {"error": "its job is gone: it expired "
                                                            "before the session was read"}}
        changes = {"status": job.state.status.value, "details": job.details}
        if job.state != State.READY:
            return changes
        mine = [t.number for t in row.tree.turns if t.job_id == job.id]
        i = mine.index(turn.number)
        result = job.result or {}
        name = result["files"][i]
        try:
            data = (retention.result_dir(self.settings, job.id) / name).read_bytes()
        except FileNotFoundError:
            return {"status": "Error", "details": {"error": "its picture was deleted before "
                                                            "the session kept it"}}
        file = f"turn_{turn.number}.{name.rsplit('.', 1)[-1]}"
        atomic_write(self.folder(row.id) / file, data, mode=PRIVATE)
        seconds = round(result["end_time"] - result["start_time"], 3)
        return {**changes, "file": file, "seed": result["seeds"][i], "seconds": seconds}

    # -- export --------------------------------------------------------------------------------

    def write_zip(self, row: SessionRow, out) -> None:
        """session.json (the tree, as `Session.save` writes it) and every picture, into the
        binary file `out`."""
        with zipfile.ZipFile(out, "w") as z:
            doc = {**row.tree.to_dict(), "name": row.name, "id": row.id,
                   "created_at": row.created_at, "updated_at": row.updated_at}
            z.writestr("session.json", json.dumps(doc, indent=2) + "\n",
                       compress_type=zipfile.ZIP_DEFLATED)
            for name in row.tree.files():
                path = self.folder(row.id) / name
                if path.is_file():  # pictures are stored compressed already
                    z.write(path, name, compress_type=zipfile.ZIP_STORED)


def _row(found) -> SessionRow:
    m = found._mapping
    return SessionRow(m["id"], m["api_key_hash"], m["name"], m["created_at"], m["updated_at"],
                      Tree.from_dict(json.loads(m["tree"])))
