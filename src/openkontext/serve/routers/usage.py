"""Usage of the caller's API key (`GET /v1/usage`); without configured keys, the anonymous
bucket that every request shares."""

from __future__ import annotations

from fastapi import APIRouter

from openkontext.serve.deps import KeyHash, ServicesDep
from openkontext.serve.schemas import UsageResponse
from openkontext.serve.settings import HASH_PREFIX

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage", response_model=UsageResponse, summary="Usage of the caller's API key")
def usage(services: ServicesDep, key_hash: KeyHash) -> UsageResponse:
    u = services.store.usage(key_hash)
    return UsageResponse(
        key=key_hash[: len(HASH_PREFIX) + 12] if key_hash else "anonymous",
        jobs=u.jobs,
        images=u.images,
        megapixels=round(u.megapixels, 6),
        compute_seconds=round(u.compute_seconds, 3),
        since=u.since,
        active_jobs=services.store.queue_depth(key_hash),
        max_jobs=services.settings.max_jobs_per_key,
    )
