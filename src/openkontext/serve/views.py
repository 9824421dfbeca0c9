"""What the API shows: a job as the hosted API does (the get_result body, also sent to webhooks),
and a session (docs/web.md)."""

from __future__ import annotations

from openkontext.serve import urls
from openkontext.serve.schemas import (
    ResultResponse,
    SessionSummary,
    SessionView,
    Status,
    TurnView,
)
from openkontext.serve.sessions import SessionRow
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore, State
from openkontext.session import PENDING, READY


def result_body(job: Job, base: str, settings: ServeSettings) -> dict:
    """`{"id", "status", "result", "progress"}` (+ "details" when there is a reason to give),
    with freshly signed, absolute sample URLs when the job is Ready."""
    result = None
    if job.state == State.READY and job.result:
        r = job.result
        secret, ttl = settings.signing_secret(), settings.signed_url_expiry_seconds
        samples = [urls.signed_sample_url(base, job.id, f, secret, ttl) for f in r["files"]]
        result = {
            "sample": samples[0],
            "prompt": r["prompt"],
            "seed": r["seeds"][0],
            "start_time": r["start_time"],
            "end_time": r["end_time"],
            "duration": round(r["end_time"] - r["start_time"], 3),
            "width": r["width"],
            "height": r["height"],
        }
        if len(samples) > 1:
            result["samples"] = samples
            result["seeds"] = r["seeds"]
    progress = job.progress if job.state in (State.QUEUED, State.RUNNING, State.READY) else None
    body = ResultResponse(id=job.id, status=job.state.status, result=result, progress=progress,
                          details=job.details)
    return body.model_dump(exclude_none=False)


def not_found_body(job_id: str) -> dict:
    return ResultResponse(id=job_id, status=Status.NOT_FOUND).model_dump()


def session_body(row: SessionRow, base: str, settings: ServeSettings, store: JobStore) -> dict:
    """A session as the sessions API shows it, with freshly signed picture URLs and the live
    progress of its pending turns."""
    secret, ttl = settings.signing_secret(), settings.signed_url_expiry_seconds

    def url(name: str | None) -> str | None:
        if name is None:
            return None
        return urls.signed_url(base, urls.session_image_path(row.id, name), secret, ttl)

    jobs: dict[str, Job | None] = {}
    turns = []
    for t in row.tree.turns:
        progress, details = (1.0 if t.status == READY else None), t.details
        if t.status == PENDING and t.job_id is not None:
            if t.job_id not in jobs:
                jobs[t.job_id] = store.get(t.job_id)
            job = jobs[t.job_id]
            progress, details = (job.progress, job.details) if job else (0.0, None)
        turns.append(TurnView(
            number=t.number, parent=t.parent, instruction=t.instruction, status=t.status,
            progress=progress, details=details, seed=t.seed, settings=t.settings,
            image=url(t.file), references=[url(r) for r in t.references], seconds=t.seconds,
            created_at=t.created_at, job_id=t.job_id,
        ))
    return SessionView(id=row.id, name=row.name, created_at=row.created_at,
                       updated_at=row.updated_at, head=row.tree.head,
                       original=url(row.tree.original_file), turns=turns).model_dump()


def session_summary(row: SessionRow, base: str, settings: ServeSettings) -> SessionSummary:
    """One entry of the session list: the thumbnail is the head's picture, else the latest
    picture, else the original."""
    tree = row.tree
    pictures = [t.file for t in tree.turns if t.file]
    head = tree.turn(tree.head).file if tree.head else tree.original_file
    name = head or (pictures[-1] if pictures else tree.original_file)
    thumbnail = None if name is None else urls.signed_url(
        base, urls.session_image_path(row.id, name), settings.signing_secret(),
        settings.signed_url_expiry_seconds)
    return SessionSummary(id=row.id, name=row.name, created_at=row.created_at,
                          updated_at=row.updated_at, turns=len(tree.turns), thumbnail=thumbnail)
