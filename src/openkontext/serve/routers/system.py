"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from openkontext.serve.deps import ServicesDep
from openkontext.serve.schemas import Health

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "model loading or failed"}})
def health(services: ServicesDep):
    worker = services.worker
    model = worker.kontext.model.preset.name if worker.kontext else None
    body = Health(status=worker.state, model=model, queue_depth=services.store.queue_depth(),
                  detail=worker.load_error)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.metrics.render(services.store),
                             media_type="text/plain; version=0.0.4")
