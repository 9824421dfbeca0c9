"""Usage per API key: jobs run, images delivered, their megapixels and the model time spent.

Kept in a table of its own, one row per key hash ("" for requests without a key), so the
totals outlive the jobs, which are deleted `result_ttl_seconds` after they finish. The worker
adds a job's share in the same transaction that records its outcome, so a job is counted once
even when the process dies around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, select
from sqlalchemy.engine import Connection, Engine

COUNTERS = ("jobs", "images", "megapixels", "compute_seconds")


@dataclass
class Usage:
    jobs: int = 0  # jobs the worker ran, whatever their outcome
    images: int = 0  # images delivered (Ready jobs only)
    megapixels: float = 0.0  # of those images
    compute_seconds: float = 0.0  # model time, a batch's time shared by its images
    since: float | None = None  # Unix time of the first recorded use


def usage_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("api_key_hash", String(80), primary_key=True),
        Column("jobs", Integer, nullable=False, default=0),
        Column("images", Integer, nullable=False, default=0),
        Column("megapixels", Float, nullable=False, default=0.0),
        Column("compute_seconds", Float, nullable=False, default=0.0),
        Column("since", Float, nullable=False),
    )


def add_usage(conn: Connection, table: Table, key: str, delta: Usage) -> None:
    """Add `delta` to `key`'s totals (an atomic upsert on SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"usage accounting on {conn.dialect.name} is not supported")
    stmt = insert(table).values(
        api_key_hash=key, since=time.time(), **{c: getattr(delta, c) for c in COUNTERS}
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.api_key_hash],
        set_={c: table.c[c] + stmt.excluded[c] for c in COUNTERS},
    )
    conn.execute(stmt)


def read_usage(engine: Engine, table: Table, key: str) -> Usage:
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.api_key_hash == key)).first()
    if row is None:
        return Usage()
    m = row._mapping
    return Usage(m["jobs"], m["images"], m["megapixels"], m["compute_seconds"], m["since"])
