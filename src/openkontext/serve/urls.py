"""Absolute URLs: the origin a client reached us on, polling URLs and signed download URLs.

A download URL carries its expiry and an HMAC-SHA256 over path and expiry, so results and
session pictures can be fetched without the API key (as the hosted API's sample URLs are, and
as an `<img src>` needs) but only until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote

from starlette.requests import Request

from openkontext.serve.settings import ServeSettings


def base_url(request: Request, settings: ServeSettings) -> str:
    """public_url if configured; else X-Forwarded-Proto/Host (when trusted); else the Host
    header the request came with."""
    if settings.public_url:
        return settings.public_url
    url = str(request.base_url).rstrip("/")
    if not settings.trust_forwarded_headers:
        return url
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    scheme, _, rest = url.partition("://")
    if proto in ("http", "https"):
        scheme = proto
    if host and all(c.isalnum() or c in ".-:[]" for c in host):
        rest = host
    return f"{scheme}://{rest}"


def polling_url(base: str, job_id: str) -> str:
    return f"{base}/v1/get_result?id={quote(job_id)}"


def _signature(secret: bytes, path: str, expires: int) -> str:
    mac = hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def sample_path(job_id: str, name: str) -> str:
    return f"/v1/results/{quote(job_id)}/{quote(name)}"


def session_image_path(session_id: str, name: str) -> str:
    return f"/v1/sessions/{quote(session_id)}/images/{quote(name)}"


def signed_url(base: str, path: str, secret: bytes, ttl: float) -> str:
    """`base` + `path` (already quoted) with `?exp=&sig=`, valid for `ttl` seconds."""
    expires = int(time.time() + ttl)
    return f"{base}{path}?exp={expires}&sig={_signature(secret, path, expires)}"


def signed_sample_url(base: str, job_id: str, name: str, secret: bytes, ttl: float) -> str:
    return signed_url(base, sample_path(job_id, name), secret, ttl)


def verify(path: str, expires: int, signature: str, secret: bytes) -> str | None:
    """Is `signature` this server's for `path` and `expires`? None when valid and unexpired;
    else why not ('invalid' or 'expired')."""
    expected = _signature(secret, path, expires)
    # Compared as bytes: compare_digest refuses str with characters outside ASCII.
    given = signature.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected.encode("ascii"), given):
        return "invalid"
    if expires < time.time():
        return "expired"
    return None
