"""How the service answers a client's mistakes: always a 4xx with a JSON body, never a 500.

- 422, `{"detail": [{"type", "loc", "msg", "input"?}]}`, for a field that fails validation
  (pydantic's errors) or a check of ours (`FieldError`). The value echoed back as `input` is
  made JSON-safe first (NaN, Infinity and huge numbers become strings, lone surrogates are
  escaped) and cut to INPUT_ECHO characters: a refused 10 MB image is not sent back.
- 413 for a request body over the server's limit, before the body is read whole: at once when
  Content-Length says so, else as soon as the streamed body passes the limit (`BodyLimit`).
- 405 names in `Allow` every method the path has (`method_not_allowed`).
"""

from __future__ import annotations

import json
import math

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openkontext.serve.inputs import FieldError

INPUT_ECHO = 200  # characters of a refused value sent back in a 422


def json_safe(value):
    """`value` with everything strict JSON cannot carry replaced by a string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= INPUT_ECHO else text[:INPUT_ECHO] + "..."
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return json_safe(str(value))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for error in exc.errors():
        entry = {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}
        if "input" in error:
            entry["input"] = error["input"]
        detail.append(json_safe(entry))
    return JSONResponse({"detail": detail}, status_code=422)


async def field_error(request: Request, exc: FieldError) -> JSONResponse:
    path = list(exc.field) if isinstance(exc.field, tuple) else [exc.field]
    detail = [{"type": "value_error", "loc": [exc.location, *path], "msg": exc.message}]
    return JSONResponse(json_safe({"detail": detail}), status_code=422)


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with every method of every route on this path in `Allow`: Starlette names only the
    first route's, and a path such as /v1/sessions has one route per method."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] != Match.NONE:
            allowed |= methods
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405,
                        headers={"Allow": ", ".join(sorted(allowed))})


def too_large(limit: int) -> str:
    return f"the request body is over this server's limit of {limit:,} bytes (max_body_bytes)"


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised where the route reads its body: FastAPI answers it as it is.
                    raise HTTPException(413, too_large(self.limit))
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except HTTPException as e:  # raised outside a route: answer here if nothing was sent
            if started or e.status_code != 413:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": too_large(self.limit)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
