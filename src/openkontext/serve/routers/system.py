"""Health, Prometheus metrics, and what the server offers (`/v1/info`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from openkontext.resolution import aspect_ratios
from openkontext.serve.deps import ServicesDep
from openkontext.serve.schemas import Health, Info

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health,
            responses={503: {"model": Health, "description": "model loading or failed"}})
def health(services: ServicesDep):
    worker = services.worker
    model = worker.facts.preset.name if worker.facts else None
    body = Health(status=worker.state, model=model, queue_depth=services.store.queue_depth(),
                  detail=worker.load_error)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.metrics.render(services.store),
                             media_type="text/plain; version=0.0.4")


@router.get("/v1/info", response_model=Info, summary="The model, its options and the server's")
def info(services: ServicesDep) -> Info:
    """No key needed: a client reads here whether it must ask for one. Model facts are null
    until the model has loaded."""
    s, facts = services.settings, services.worker.facts
    preset = facts.preset if facts else None
    return Info(
        model=preset and preset.name, native_size=preset and preset.native_size,
        max_side=preset and preset.max_side, default_steps=preset and preset.default_steps,
        default_guidance=preset and preset.default_guidance,
        aspect_ratios=aspect_ratios(preset) if preset else None,
        style_presets=list(facts.style_presets) if facts else None,
        tiers=list(s.tiers), auth_required=s.auth_required,
        prompt_upsampling=services.prompt_upsampler is not None,
        max_input_bytes=s.max_input_bytes, state=services.worker.state,
    )
