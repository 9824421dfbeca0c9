"""Result files behind signed, expiring URLs (no API key needed: the signature is the pass).

With `zero_retention` a file is deleted as it is sent: a second download gets 410.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from openkontext.imaging import OUTPUT_MIME
from openkontext.serve import retention, urls
from openkontext.serve.deps import ServicesDep
from openkontext.serve.schemas import problems
from openkontext.serve.store import State

router = APIRouter(prefix="/v1/results", tags=["results"])
MIME = {"png": OUTPUT_MIME["png"], "jpg": OUTPUT_MIME["jpeg"], "webp": OUTPUT_MIME["webp"]}


@router.get("/{job_id}/{name}", summary="Download a result (signed URL from get_result)",
            response_class=FileResponse,
            responses=problems(
                s403="bad signature",
                s404="no such result (it may have been deleted)",
                s410="the link expired, or the file was deleted by its first download "
                     "(zero_retention)",
            ))
def download(
    job_id: str,
    name: str,
    services: ServicesDep,
    exp: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
):
    s = services.settings
    problem = urls.verify(urls.sample_path(job_id, name), exp, sig, s.signing_secret())
    if problem == "invalid":
        raise HTTPException(403, "invalid signature")
    if problem == "expired":
        raise HTTPException(410, "this link has expired; poll get_result for a fresh one")
    job = services.store.get(job_id)
    if (job is None or job.state != State.READY or retention.expired(job, s)
            or name not in (job.result or {}).get("files", [])):
        raise HTTPException(404, "no such result (it may have been deleted)")
    path = retention.result_dir(s, job_id) / name
    media_type = MIME[name.rsplit(".", 1)[-1]]
    if s.zero_retention:
        data = retention.take_once(path)
        if data is None:
            raise HTTPException(410, "this result was deleted by its first download "
                                     "(the server keeps no results)")
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})
    if not path.is_file():
        raise HTTPException(404, "no such result (it may have been deleted)")
    return FileResponse(path, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=600"})
