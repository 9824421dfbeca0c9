"""Jobs: submit (`POST /v1/flux-kontext-<tier>`), poll (`GET /v1/get_result`), cancel.

Handlers validate, store and wake the worker; they never run the model. `submit_job` is the
one way a job is made: these routes and a session's turns (routers/sessions.py) call it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from openkontext.files import PRIVATE, atomic_write
from openkontext.model.lora import check_fits
from openkontext.serve import retention, urls
from openkontext.serve.deps import KeyHash, Services, ServicesDep
from openkontext.serve.inputs import FieldError, read_image, size_and_work
from openkontext.serve.netguard import Refused, check_url
from openkontext.serve.schemas import (
    AUTH,
    CancelResponse,
    KontextRequest,
    ResultResponse,
    Status,
    SubmitResponse,
    problems,
)
from openkontext.serve.store import Admission, Job, LimitReached, State
from openkontext.serve.views import not_found_body, result_body

IdempotencyKey = Annotated[
    str | None,
    Header(max_length=255, description="the same key (per API key) returns the same job"),
]


def build_router(tiers: list[str]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["jobs"])
    for tier in tiers:
        router.add_api_route(
            f"/flux-kontext-{tier}", _submit_route(tier), methods=["POST"],
            response_model=SubmitResponse, summary=f"Submit an edit or generation ({tier})",
            responses={
                422: {"description": "a field is invalid; the detail names it"},
                **problems(
                    **AUTH,
                    s400="the body cannot be read as JSON text (it is not UTF-8)",
                    s409="this Idempotency-Key was used for a different request",
                    s413="the body is over the server's limit (max_body_bytes)",
                    s429="the queue, or the key's share of it, is full; see Retry-After",
                    s503="the model failed to load",
                ),
            },
        )
    router.add_api_route("/get_result", get_result, methods=["GET"],
                         response_model=ResultResponse, summary="Poll a job",
                         responses={404: {"model": ResultResponse,
                                          "description": "no such job (status 'Task not "
                                                         "found')"},
                                    **problems(**AUTH)})
    router.add_api_route("/cancel", cancel, methods=["POST"], response_model=CancelResponse,
                         summary="Cancel a queued or running job",
                         responses={404: {"model": CancelResponse,
                                          "description": "no such job"},
                                    **problems(**AUTH)})
    return router


def _submit_route(tier: str):
    def submit(
        body: KontextRequest,
        request: Request,
        services: ServicesDep,
        key_hash: KeyHash,
        idempotency_key: IdempotencyKey = None,
    ) -> SubmitResponse:
        base = urls.base_url(request, services.settings)
        job, _ = submit_job(services, tier, body, base, key_hash, idempotency_key)
        return _response(job, base)

    submit.__name__ = f"submit_{tier}"
    return submit


def submit_job(services: Services, tier: str, body: KontextRequest, base: str, key_hash: str,
               idempotency_key: str | None = None, *,
               first: tuple[bytes, tuple[int, int]] | None = None,
               params: dict | None = None) -> tuple[Job, list[bytes]]:
    """Check, admit and store one job, as every route that makes jobs does; -> (the job, the
    bytes of its input images). `first`, an input picture already read and its size (a session
    turn's parent picture), goes before the request's own images; `params` join the job's.
    Raises FieldError (422), HTTPException 409 (an Idempotency-Key reused for another request),
    429 (queue or key full) or 503 (no model)."""
    s, store = services.settings, services.store
    # 1. Checks that need the server's configuration.
    if len(body.prompt) > s.prompt_max_length:
        raise FieldError("prompt", f"prompt is {len(body.prompt)} characters, over the "
                                   f"{s.prompt_max_length} limit")
    if body.prompt_upsampling and services.prompt_upsampler is None:
        raise FieldError("prompt_upsampling", "prompt_upsampling is not available: no prompt "
                                              "upsampler is configured on this server")
    _check_loras(services, body)
    # 2. A repeated Idempotency-Key returns the earlier job.
    fingerprint = hashlib.sha256(
        json.dumps([tier, body.model_dump()], sort_keys=True).encode()
    ).hexdigest()
    if idempotency_key is not None:
        earlier = store.find_idempotent(key_hash, idempotency_key)
        if earlier is not None:
            return _same_job(earlier, fingerprint), []
    if body.webhook_url is not None:
        try:
            check_url(body.webhook_url, s.fetch_allow_hosts)
        except Refused as e:
            raise FieldError("webhook_url", str(e)) from None
    job = Job(
        id=store.new_id(), tier=tier, state=State.QUEUED,
        params={**body.job_params(), **(params or {})}, base_url=base,
        api_key_hash=key_hash, progress=0.0, created_at=time.time(),
        idempotency_key=idempotency_key, fingerprint=fingerprint,
        webhook_secret=body.webhook_secret,
    )
    # 3. The text policy: a refused request is a job that is finished at once.
    verdict = services.text_policy.check(body.prompt, body.safety_tolerance)
    if verdict.flagged:
        job.state, job.finished_at = State.REQUEST_MODERATED, job.created_at
        job.details = {"reason": verdict.reason}
        job.webhook_state = "pending" if body.webhook_url else None
        return _enqueue(job, services, fingerprint, inputs=[]), []
    # 4. A model to run it, capacity, then the images (which may be fetched).
    if services.worker.load_error:
        raise HTTPException(503, f"the model failed to load: {services.worker.load_error}")
    _admit(services, key_hash)
    read = [read_image(f, v, s) for f, v in body.images()]
    if first is not None:
        read.insert(0, first)
    facts = services.worker.facts
    job.params["input_mp"], job.params["output_mp"] = size_and_work(
        facts.preset if facts else None, s.tiers[tier].steps,
        [size for _, size in read], body, s.max_job_megapixel_steps,
    )
    inputs = [data for data, _ in read]
    return _enqueue(job, services, fingerprint, inputs), inputs


def _check_loras(services: Services, body: KontextRequest) -> None:
    """Each LoRA named is in the server's folder and, once the model has loaded (its facts are
    known, here or from a Ray replica), fits it (the executor checks again when it plans the
    job)."""
    facts = services.worker.facts
    for i, choice in enumerate(body.loras or []):
        try:
            services.loras.path(choice.name)
            if facts is not None:
                check_fits(facts.linear_layers, services.loras.get(choice.name))
        except (ValueError, OSError) as e:
            raise FieldError(("loras", i, "name"), str(e)) from None


def _admission(services: Services) -> Admission:
    s = services.settings
    return Admission(s.queue_max_size, s.max_jobs_per_key)


def _admit(services: Services, key_hash: str) -> None:
    """Early check, before any image is read or fetched: 429 with Retry-After when the queue
    is full or the key has its limit of jobs queued or running. The binding check is made
    again by the store, in the transaction that adds the job."""
    try:
        services.store.check_admission(key_hash, _admission(services))
    except LimitReached as full:
        raise _too_many(services, str(full), full.depth) from None


def _too_many(services: Services, message: str, depth: int) -> HTTPException:
    seconds = services.metrics.throughput.retry_after(depth)
    return HTTPException(429, message, headers={"Retry-After": str(seconds)})


def _enqueue(job: Job, services: Services, fingerprint: str, inputs: list[bytes]) -> Job:
    folder = retention.input_dir(services.settings, job.id)
    for i, data in enumerate(inputs):
        atomic_write(folder / f"{i}.img", data, mode=PRIVATE)
    try:
        # Checked again in the inserting transaction under the database's lock, so parallel
        # submissions, in this process or another, cannot all take the last place.
        admission = _admission(services) if job.state == State.QUEUED else None
        stored, created = services.store.add(job, admission)
    except LimitReached as full:
        shutil.rmtree(folder, ignore_errors=True)
        raise _too_many(services, str(full), full.depth) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if not created:  # lost a race on the same Idempotency-Key
        shutil.rmtree(folder, ignore_errors=True)
        return _same_job(stored, fingerprint)
    if stored.state == State.QUEUED:
        services.worker.wake()
    elif stored.webhook_state == "pending":
        services.webhooks.submit(stored.id)
    return stored


def _response(job: Job, base: str) -> SubmitResponse:
    return SubmitResponse(id=job.id, polling_url=urls.polling_url(base, job.id),
                          input_mp=job.params.get("input_mp"),
                          output_mp=job.params.get("output_mp"))


def _same_job(job: Job, fingerprint: str) -> Job:
    if job.fingerprint != fingerprint:
        raise HTTPException(409, "this Idempotency-Key was used for a different request")
    return job


def _owned(services: Services, job_id: str, key_hash: str) -> Job | None:
    """The job, if it is the caller's and has not expired."""
    job = services.store.get(job_id)
    if job is None or job.api_key_hash != key_hash or retention.expired(job, services.settings):
        return None
    return job


def get_result(
    request: Request, services: ServicesDep, key_hash: KeyHash, id: Annotated[str, Query()]
):
    job = _owned(services, id, key_hash)
    if job is None:
        return JSONResponse(not_found_body(id), status_code=404)
    return result_body(job, urls.base_url(request, services.settings), services.settings)


def cancel(services: ServicesDep, key_hash: KeyHash, id: Annotated[str, Query()]):
    if _owned(services, id, key_hash) is None:
        body = CancelResponse(id=id, cancelled=False, status=Status.NOT_FOUND)
        return JSONResponse(body.model_dump(), status_code=404)
    state = cancel_job(services, id)
    cancelled = state == State.CANCELLED or (
        state == State.RUNNING and services.store.cancel_requested(id)
    )
    return CancelResponse(id=id, cancelled=cancelled, status=state.status)


def cancel_job(services: Services, job_id: str) -> State | None:
    """Cancel a queued job at once (its inputs deleted) or ask the worker to stop a running
    one; -> its state after (None: no such job)."""
    state = services.store.request_cancel(job_id)
    if state == State.CANCELLED:
        retention.job_done(services.settings, job_id)
    return state
