"""A job as the hosted API shows it: the get_result body, also sent to webhooks."""

from __future__ import annotations

from openkontext.serve import urls
from openkontext.serve.schemas import ResultResponse, Status
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, State


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
