"""Usage per API key: jobs run, images delivered, their megapixels and the model time spent.

Kept in a table of its own, one row per key hash ("" for requests without a key) and UTC hour,
so the totals outlive the jobs (deleted `result_ttl_seconds` after they finish) and can be read
over any window of whole hours, in total or hour by hour / day by day. The worker adds a job's
share in the same transaction that records its outcome, so a job is counted once even when the
process dies around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.engine import Connection, Engine

COUNTERS = ("jobs", "images", "megapixels", "compute_seconds")
HOUR = 3600
INTERVALS = {"hour": HOUR, "day": 24 * HOUR}


@dataclass
class Usage:
    jobs: int = 0  # jobs the worker ran, whatever their outcome
    images: int = 0  # images delivered (Ready jobs only)
    megapixels: float = 0.0  # of those images
    compute_seconds: float = 0.0  # model time, a batch's time shared by its images
    since: float | None = None  # Unix time of the first recorded use (in the window)


@dataclass
class UsageReport:
    total: Usage
    start: float | None  # the window, rounded out to whole hours (None: open)
    end: float | None
    intervals: list[tuple[float, Usage]] = field(default_factory=list)  # (start, usage)


def usage_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("api_key_hash", String(80), primary_key=True),
        Column("hour", Integer, primary_key=True),  # Unix time // 3600 (UTC hours)
        Column("jobs", Integer, nullable=False, default=0),
        Column("images", Integer, nullable=False, default=0),
        Column("megapixels", Float, nullable=False, default=0.0),
        Column("compute_seconds", Float, nullable=False, default=0.0),
        Column("first_use", Float, nullable=False),
    )


def add_usage(conn: Connection, table: Table, key: str, delta: Usage, now: float | None = None):
    """Add `delta` to `key`'s row for the current hour (an atomic upsert on SQLite and
    PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"usage accounting on {conn.dialect.name} is not supported")
    now = time.time() if now is None else now
    stmt = insert(table).values(
        api_key_hash=key,
        hour=int(now // HOUR),
        first_use=now,
        **{c: getattr(delta, c) for c in COUNTERS},
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.api_key_hash, table.c.hour],
        set_={c: table.c[c] + stmt.excluded[c] for c in COUNTERS},
    )
    conn.execute(stmt)


def read_usage(
    engine: Engine,
    table: Table,
    key: str,
    start: float | None = None,
    end: float | None = None,
    interval: str | None = None,
) -> UsageReport:
    """`key`'s usage in the hours that overlap [start, end) (open ends: all of it); with
    `interval` ('hour' or 'day', UTC) also one entry per interval that saw use."""
    t = table
    where = [t.c.api_key_hash == key]
    if start is not None:
        where.append(t.c.hour >= int(start // HOUR))
    if end is not None:
        where.append(t.c.hour < -int(-end // HOUR))  # the hour holding `end` is included
    sums = [func.coalesce(func.sum(t.c[c]), 0) for c in COUNTERS]
    with engine.connect() as conn:
        row = conn.execute(select(*sums, func.min(t.c.first_use)).where(*where)).one()
        buckets = []
        if interval is not None:
            width = INTERVALS[interval] // HOUR
            bucket = t.c.hour - t.c.hour % width
            buckets = conn.execute(
                select(bucket.label("b"), *sums, func.min(t.c.first_use))
                .where(*where)
                .group_by("b")
                .order_by("b")
            ).all()
    report = UsageReport(
        _usage(row),
        None if start is None else (start // HOUR) * HOUR,
        None if end is None else -(-end // HOUR) * HOUR,
    )
    report.intervals = [(b[0] * HOUR, _usage(b[1:])) for b in buckets]
    return report


def _usage(row) -> Usage:
    jobs, images, mp, seconds, first = row
    return Usage(int(jobs), int(images), float(mp), float(seconds), first)
