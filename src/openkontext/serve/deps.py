"""What route handlers receive: the running services and the caller's API key, as `Annotated`
dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from openkontext.loras import LoraLibrary
from openkontext.serve.metrics import Metrics
from openkontext.serve.moderation import PromptUpsampler, TextPolicy
from openkontext.serve.sessions import SessionStore
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import JobStore
from openkontext.serve.webhooks import Webhooks
from openkontext.serve.worker import Worker


@dataclass
class Services:
    settings: ServeSettings
    store: JobStore
    worker: Worker  # or a RayExecutor (ray_executor.py), which shows routers the same face
    webhooks: Webhooks
    metrics: Metrics
    text_policy: TextPolicy
    prompt_upsampler: PromptUpsampler | None
    sessions: SessionStore
    loras: LoraLibrary  # the operator's folder, by name only


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def api_key(
    services: ServicesDep,
    x_key: Annotated[str | None, Header(description="API key (when the server has keys)")] = None,
) -> str:
    """-> the hash of the caller's key, or "" when the server has no keys. 401 when a key is
    needed and missing, 403 when it is wrong."""
    settings = services.settings
    if not settings.auth_required:
        return ""
    if not x_key:
        raise HTTPException(401, "missing API key: send it in the x-key header")
    found = settings.check_key(x_key)
    if found is None:
        raise HTTPException(403, "invalid API key")
    return found


KeyHash = Annotated[str, Depends(api_key)]
