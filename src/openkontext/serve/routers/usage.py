"""Usage of the caller's API key (`GET /v1/usage`); without configured keys, the anonymous
bucket that every request shares. Optional window (`start`, `end`: Unix seconds or ISO 8601,
UTC when no offset is given; kept in whole hours) and breakdown (`interval`: hour or day)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from openkontext.serve.deps import KeyHash, ServicesDep
from openkontext.serve.inputs import FieldError
from openkontext.serve.schemas import AUTH, UsageInterval, UsageResponse, problems
from openkontext.serve.settings import HASH_PREFIX
from openkontext.serve.usage import Usage

router = APIRouter(prefix="/v1", tags=["usage"])

TIME_HELP = "Unix seconds or ISO 8601 (e.g. 2026-11-01 or 2026-11-01T12:00:00Z); UTC by default"


LATEST = datetime(9999, 12, 31, 23, tzinfo=UTC).timestamp()  # the last whole hour a date has


def parse_time(field: str, value: str | None) -> float | None:
    """Unix seconds or ISO 8601 -> Unix seconds, between 1970 and the year 9999."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise FieldError(field, f"{value!r} is neither Unix seconds nor an ISO 8601 "
                                    "date/time", "query") from None
        seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not (math.isfinite(seconds) and 0 <= seconds <= LATEST):
        raise FieldError(field, f"{value!r} is outside 1970-01-01 .. 9999-12-31", "query")
    return seconds


def _counters(u: Usage) -> dict:
    return dict(
        jobs=u.jobs,
        images=u.images,
        megapixels=round(u.megapixels, 6),
        compute_seconds=round(u.compute_seconds, 3),
    )


@router.get("/usage", response_model=UsageResponse, summary="Usage of the caller's API key",
            responses=problems(**AUTH))
def usage(
    services: ServicesDep,
    key_hash: KeyHash,
    start: Annotated[str | None, Query(description="window start; " + TIME_HELP)] = None,
    end: Annotated[str | None, Query(description="window end (exclusive); " + TIME_HELP)] = None,
    interval: Annotated[
        Literal["hour", "day"] | None, Query(description="also break the window down (UTC)")
    ] = None,
) -> UsageResponse:
    t0, t1 = parse_time("start", start), parse_time("end", end)
    if t0 is not None and t1 is not None and t0 >= t1:
        raise FieldError("end", f"start ({start}) must be before end ({end})", "query")
    report = services.store.usage(key_hash, t0, t1, interval)
    return UsageResponse(
        key=key_hash[: len(HASH_PREFIX) + 12] if key_hash else "anonymous",
        **_counters(report.total),
        since=report.total.since,
        start=report.start,
        end=report.end,
        intervals=None
        if interval is None
        else [UsageInterval(start=s, **_counters(u)) for s, u in report.intervals],
        active_jobs=services.store.queue_depth(key_hash),
        max_jobs=services.settings.max_jobs_per_key,
    )
