"""The job store: one SQL table, the source of truth for every job's state.

Works on SQLite (the default: a file in WAL mode, so readers never wait for the worker) and
PostgreSQL (`postgresql+psycopg://...`). Timestamps are Unix seconds (floats). A job moves
queued -> running -> one of the terminal states; `claim_next` moves it atomically, so two
workers never take the same job.

Several processes may share one store. A claim records its owner (`owner_id()`: host, process,
token) and a lease that the owner renews with `heartbeat`; only a job whose lease has expired,
or whose owner is known to be dead (`reclaim`), is put back in the queue, so a process that
starts never takes the job another live process is running. Every write about a running job
names its owner and changes nothing once the job has another owner or has finished, so a job
is finished, charged and reported exactly once.
Admission (the queue bound and the per-key limit) is checked in the inserting transaction under a
database-wide lock, so it holds across every process that shares the database.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from openkontext.serve.schemas import Status
from openkontext.serve.usage import Usage, UsageReport, add_usage, read_usage, usage_table


@dataclass(frozen=True)
class Admission:
    """Limits checked when a queued job is added: jobs queued or running, in all and per key."""

    queue_max: int
    per_key: int | None = None


class LimitReached(Exception):
    """The job was not added: the queue or the key is at its limit (`depth`: the queue)."""

    def __init__(self, message: str, depth: int):
        super().__init__(message)
        self.depth = depth


class State(StrEnum):
    """Internal job states; `status` maps them onto the hosted API's strings."""

    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    REQUEST_MODERATED = "request_moderated"
    CONTENT_MODERATED = "content_moderated"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def status(self) -> Status:
        return {
            State.QUEUED: Status.PENDING,
            State.RUNNING: Status.PENDING,
            State.READY: Status.READY,
            State.REQUEST_MODERATED: Status.REQUEST_MODERATED,
            State.CONTENT_MODERATED: Status.CONTENT_MODERATED,
            State.ERROR: Status.ERROR,
            State.CANCELLED: Status.ERROR,
        }[self]

    @property
    def finished(self) -> bool:
        return self not in (State.QUEUED, State.RUNNING)


@dataclass
class Job:
    id: str
    tier: str
    state: State
    params: dict  # the request without its images (KontextRequest.job_params), input_mp,
    # output_mp
    base_url: str  # origin the job was submitted on, for webhook URLs
    api_key_hash: str  # "" when submitted without a key
    progress: float
    created_at: float
    idempotency_key: str | None = None
    fingerprint: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: dict | None = None  # files, seeds, prompt, width, height
    details: dict | None = None  # why it was moderated, failed or cancelled
    cancel_requested: bool = False
    webhook_state: str | None = None  # pending, delivered, failed
    webhook_secret: str | None = None
    owner: str | None = None  # the process running it (owner_id())
    lease_until: float | None = None  # it is put back in the queue after this


def well_formed(job_id: str) -> bool:
    """Could this be a job id? Ids are 36 printable ASCII characters (`new_id`); anything else a
    client sends is no job, and is never passed to the database (PostgreSQL refuses NUL)."""
    return len(job_id) <= 36 and job_id.isascii() and job_id.isprintable()


def owner_id() -> str:
    """'host:pid:token', unique to this process; the token tells a restarted process that
    reuses a pid (pid 1 in a container) from the one before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str, me: str) -> bool:
    """True when `owner` is a process of this host that no longer runs. Owners on other hosts
    are never judged: their jobs come back when their lease expires."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    my_host, my_pid, _ = me.split(":")
    if host != my_host or not pid_text.isdigit():
        return False
    if pid_text == my_pid:
        return owner != me  # this pid, an earlier process: it died and the pid came back
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _table(metadata: MetaData, name: str) -> Table:
    table = Table(
        name,
        metadata,
        Column("id", String(36), primary_key=True),
        Column("tier", String(16), nullable=False),
        Column("state", String(24), nullable=False, index=True),
        Column("params", Text, nullable=False),
        Column("base_url", String(512), nullable=False),
        Column("api_key_hash", String(80), nullable=False, default=""),
        Column("idempotency_key", String(255)),
        Column("fingerprint", String(64)),
        Column("progress", Float, nullable=False, default=0.0),
        Column("created_at", Float, nullable=False),
        Column("started_at", Float),
        Column("finished_at", Float),
        Column("result", Text),
        Column("details", Text),
        Column("cancel_requested", Boolean, nullable=False, default=False),
        Column("webhook_state", String(16)),
        Column("webhook_secret", String(256)),
        Column("owner", String(128)),
        Column("lease_until", Float),
    )
    # NULL keys are distinct in both databases, so jobs without a key never collide.
    Index(f"{name}_idem", table.c.api_key_hash, table.c.idempotency_key, unique=True)
    return table


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class JobStore:
    def __init__(self, url: str, table: str = "openkontext_jobs", engine: Engine | None = None):
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"check_same_thread": False})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
        self.engine = engine
        self.metadata = MetaData()
        self.t = _table(self.metadata, table)
        self.usage_t = usage_table(self.metadata, f"{table}_usage_hourly")

    def create_tables(self) -> None:
        """Create missing tables, and add the columns a table made by an older version lacks."""
        self.metadata.create_all(self.engine)
        have = {c["name"] for c in inspect(self.engine).get_columns(self.t.name)}
        with self.engine.begin() as conn:
            for column in self.t.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(
                        f'ALTER TABLE "{self.t.name}" ADD COLUMN "{column.name}" {kind}'
                    )

    def drop_tables(self) -> None:
        self.metadata.drop_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing -----------------------------------------------------------------------------------

    def add(self, job: Job, admission: Admission | None = None) -> tuple[Job, bool]:
        """Insert `job`; -> (job, True). With an idempotency key already used by the same API
        key -> (the earlier job, False). With `admission`, raises `LimitReached` instead of adding
        a job beyond its limits; concurrent adds, from any process, are serialised."""
        try:
            with self.engine.begin() as conn:
                if admission is not None:
                    self._admit(conn, job.api_key_hash, admission)
                conn.execute(self.t.insert().values(**_row(job)))
            return job, True
        except IntegrityError:
            if job.idempotency_key is None:
                raise
            earlier = self.find_idempotent(job.api_key_hash, job.idempotency_key)
            if earlier is None:
                raise
            return earlier, False

    def check_admission(self, key_hash: str, admission: Admission) -> None:
        """Raise `LimitReached` when a job of `key_hash` would go beyond `admission` now (an
        early, unlocked check; `add` makes the binding one)."""
        with self.engine.connect() as conn:
            self._check(conn, key_hash, admission)

    def _admit(self, conn: Connection, key_hash: str, admission: Admission) -> None:
        # Take the database's admission lock for the rest of the transaction: SQLite's write
        # lock (BEGIN IMMEDIATE, before anything is read), or a PostgreSQL advisory lock.
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            lock_id = zlib.crc32(f"{self.t.name}:admission".encode())
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        else:
            raise NotImplementedError(f"admission on {conn.dialect.name} is not supported")
        self._check(conn, key_hash, admission)

    def _check(self, conn: Connection, key_hash: str, admission: Admission) -> None:
        t, active = self.t, self.t.c.state.in_([State.QUEUED, State.RUNNING])
        depth = conn.execute(select(func.count()).where(active)).scalar_one()
        if depth >= admission.queue_max:
            raise LimitReached(f"the queue is full ({depth} jobs); retry later", depth)
        if admission.per_key is not None:
            mine = conn.execute(
                select(func.count()).where(active, t.c.api_key_hash == key_hash)
            ).scalar_one()
            if mine >= admission.per_key:
                raise LimitReached(
                    f"this API key has {mine} jobs queued or running, its limit is "
                    f"{admission.per_key}; retry later",
                    depth,
                )

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def claim_next(self, owner: str = "", lease: float = 30.0) -> Job | None:
        """Move the oldest queued job to running under `owner`'s lease of `lease` seconds and
        return it; None when nothing is queued."""
        t = self.t
        while True:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(t.c.id).where(t.c.state == State.QUEUED)
                    .order_by(t.c.created_at).limit(1)
                ).first()
            if row is None:
                return None
            job = self.claim(row.id, owner, lease)
            if job is not None:
                return job

    def claim(self, job_id: str, owner: str = "", lease: float = 30.0) -> Job | None:
        """Move this job from queued to running under `owner`'s lease; None when it is no
        longer queued (another worker took it, or it was cancelled)."""
        t, now = self.t, time.time()
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t).where(t.c.id == job_id, t.c.state == State.QUEUED)
                .values(state=State.RUNNING, started_at=now, progress=0.0, owner=owner,
                        lease_until=now + lease)
            ).rowcount
        return self.get(job_id) if taken else None

    def heartbeat(self, job_ids: Iterable[str], owner: str, lease: float) -> set[str]:
        """Renew `owner`'s lease on these running jobs; -> the ids it still holds (a job it
        lost was taken back after its lease expired, or has finished)."""
        t, ids = self.t, list(job_ids)
        if not ids:
            return set()
        mine = (t.c.id.in_(ids), t.c.owner == owner, t.c.state == State.RUNNING)
        with self.engine.begin() as conn:
            conn.execute(update(t).where(*mine).values(lease_until=time.time() + lease))
            rows = conn.execute(select(t.c.id).where(*mine)).all()
        return {r.id for r in rows}

    def hand_over(self, job_id: str, owner: str, new_owner: str, lease: float) -> Job | None:
        """Pass a running job from `owner` to `new_owner` under a fresh lease (a dispatcher
        handing a claimed job to the process that runs it); None, changing nothing, when the
        job is no longer `owner`'s (taken back, finished, or handed over already)."""
        t = self.t
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t).where(t.c.id == job_id, t.c.owner == owner, t.c.state == State.RUNNING)
                .values(owner=new_owner, lease_until=time.time() + lease)
            ).rowcount
        return self.get(job_id) if taken else None

    def set_progress(self, job_ids: str | list[str], progress: float,
                     owner: str | None = None) -> None:
        ids = [job_ids] if isinstance(job_ids, str) else job_ids
        where = [self.t.c.id.in_(ids), self.t.c.state == State.RUNNING]
        if owner is not None:
            where.append(self.t.c.owner == owner)
        with self.engine.begin() as conn:
            conn.execute(update(self.t).where(*where).values(progress=progress))

    def finish(
        self,
        job_id: str,
        state: State,
        result: dict | None = None,
        details: dict | None = None,
        webhook: bool = False,
        charge: tuple[str, Usage] | None = None,
        owner: str | None = None,
    ) -> bool:
        """Record a job's outcome, with `charge` = (API key hash, usage to add) in the same
        transaction; -> False, changing nothing, when the job has already finished or (with
        `owner`) is no longer that owner's."""
        t = self.t
        values = dict(
            state=state,
            finished_at=time.time(),
            result=_dumps(result),
            details=_dumps(details),
            lease_until=None,
        )
        if state == State.READY:
            values["progress"] = 1.0
        if webhook:
            values["webhook_state"] = "pending"
        where = [t.c.id == job_id, t.c.state.in_([State.QUEUED, State.RUNNING])]
        if owner is not None:
            where += [t.c.owner == owner, t.c.state == State.RUNNING]
        with self.engine.begin() as conn:
            if not conn.execute(update(t).where(*where).values(**values)).rowcount:
                return False
            if charge is not None:
                add_usage(conn, self.usage_t, *charge)
        return True

    def requeue(self, job_id: str, owner: str | None = None) -> bool:
        """Put a running job back in the queue (with `owner`: only if it is still theirs)."""
        t = self.t
        where = [t.c.id == job_id, t.c.state == State.RUNNING]
        if owner is not None:
            where.append(t.c.owner == owner)
        with self.engine.begin() as conn:
            return bool(conn.execute(update(t).where(*where).values(**_QUEUED_AGAIN)).rowcount)

    def reclaim(self, is_dead: Callable[[str], bool] = lambda owner: False,
                now: float | None = None) -> int:
        """Take back running jobs whose lease has expired or whose owner `is_dead`: back in the
        queue, or cancelled if their owner asked; -> how many."""
        t, now = self.t, time.time() if now is None else now
        with self.engine.connect() as conn:
            owners = conn.execute(
                select(t.c.owner).where(t.c.state == State.RUNNING).distinct()
            ).scalars().all()
        dead = [o for o in owners if o and is_dead(o)]
        lapsed = (t.c.lease_until.is_(None) | (t.c.lease_until < now) | t.c.owner.in_(dead))
        running = (t.c.state == State.RUNNING, lapsed)
        with self.engine.begin() as conn:
            cancelled = conn.execute(
                update(t).where(*running, t.c.cancel_requested.is_(True))
                .values(state=State.CANCELLED, finished_at=now, lease_until=None,
                        details=_dumps({"error": "cancelled by request"}))
            ).rowcount
            return cancelled + conn.execute(
                update(t).where(*running).values(**_QUEUED_AGAIN)
            ).rowcount

    def request_cancel(self, job_id: str) -> State | None:
        """Cancel a queued job at once, or flag a running one for the worker; -> state after."""
        if not well_formed(job_id):
            return None
        t = self.t
        with self.engine.begin() as conn:
            conn.execute(
                update(t).where(t.c.id == job_id, t.c.state == State.QUEUED)
                .values(state=State.CANCELLED, finished_at=time.time(),
                        details=_dumps({"error": "cancelled by request"}))
            )
            conn.execute(
                update(t).where(t.c.id == job_id, t.c.state == State.RUNNING)
                .values(cancel_requested=True)
            )
            row = conn.execute(select(t.c.state).where(t.c.id == job_id)).first()
        return None if row is None else State(row.state)

    def set_webhook_state(self, job_id: str, state: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.t).where(self.t.c.id == job_id).values(webhook_state=state))

    def delete(self, job_ids: list[str]) -> None:
        if job_ids:
            with self.engine.begin() as conn:
                conn.execute(self.t.delete().where(self.t.c.id.in_(job_ids)))

    # -- reading -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        if not well_formed(job_id):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t).where(self.t.c.id == job_id)).first()
        return None if row is None else _job(row)

    def find_idempotent(self, api_key_hash: str, key: str) -> Job | None:
        t = self.t
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t).where(t.c.api_key_hash == api_key_hash, t.c.idempotency_key == key)
            ).first()
        return None if row is None else _job(row)

    def queued(self, limit: int) -> list[Job]:
        """The oldest `limit` queued jobs, oldest first."""
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t).where(t.c.state == State.QUEUED).order_by(t.c.created_at).limit(limit)
            ).all()
        return [_job(r) for r in rows]

    def states(self, job_ids: list[str]) -> dict[str, State]:
        """The state of each of these jobs that exists."""
        if not job_ids:
            return {}
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.state).where(t.c.id.in_(job_ids))).all()
        return {r.id: State(r.state) for r in rows}

    def usage(
        self,
        api_key_hash: str,
        start: float | None = None,
        end: float | None = None,
        interval: str | None = None,
    ) -> UsageReport:
        return read_usage(self.engine, self.usage_t, api_key_hash, start, end, interval)

    def cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(self.t.c.cancel_requested).where(self.t.c.id == job_id)
            ).first()
        return bool(row and row.cancel_requested)

    def cancel_requested_among(self, job_ids: list[str]) -> set[str]:
        """Those of these jobs whose owner asked to cancel them."""
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id).where(t.c.id.in_(job_ids), t.c.cancel_requested.is_(True))
            ).all()
        return {r.id for r in rows}

    def count_by_state(self) -> dict[State, int]:
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.state, func.count()).group_by(t.c.state)).all()
        counts = dict.fromkeys(State, 0)
        counts.update({State(state): n for state, n in rows})
        return counts

    def queue_depth(self, api_key_hash: str | None = None) -> int:
        """Jobs queued or running: all of them, or those of one API key."""
        t = self.t
        query = select(func.count()).where(t.c.state.in_([State.QUEUED, State.RUNNING]))
        if api_key_hash is not None:
            query = query.where(t.c.api_key_hash == api_key_hash)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def finished_before(self, cutoff: float) -> list[str]:
        t = self.t
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id).where(t.c.finished_at.is_not(None), t.c.finished_at < cutoff)
            ).all()
        return [r.id for r in rows]

    def pending_webhooks(self) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.t).where(self.t.c.webhook_state == "pending")).all()
        return [_job(r) for r in rows]


_QUEUED_AGAIN = dict(state=State.QUEUED, started_at=None, progress=0.0, owner=None,
                     lease_until=None)


def _dumps(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


def _loads(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _row(job: Job) -> dict:
    return dict(
        id=job.id, tier=job.tier, state=job.state, params=json.dumps(job.params),
        base_url=job.base_url, api_key_hash=job.api_key_hash,
        idempotency_key=job.idempotency_key, fingerprint=job.fingerprint,
        progress=job.progress, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, result=_dumps(job.result), details=_dumps(job.details),
        cancel_requested=job.cancel_requested, webhook_state=job.webhook_state,
        webhook_secret=job.webhook_secret, owner=job.owner, lease_until=job.lease_until,
    )


def _job(row) -> Job:
    m = row._mapping
    return Job(
        id=m["id"], tier=m["tier"], state=State(m["state"]), params=json.loads(m["params"]),
        base_url=m["base_url"], api_key_hash=m["api_key_hash"], progress=m["progress"],
        created_at=m["created_at"], idempotency_key=m["idempotency_key"],
        fingerprint=m["fingerprint"], started_at=m["started_at"],
        finished_at=m["finished_at"], result=_loads(m["result"]), details=_loads(m["details"]),
        cancel_requested=bool(m["cancel_requested"]), webhook_state=m["webhook_state"],
        webhook_secret=m["webhook_secret"], owner=m["owner"], lease_until=m["lease_until"],
    )
