"""The web page (`/`, the editor of docs/web.md) and its files (`/web/*`),
served from the package's `web/` folder: plain HTML, CSS and ES modules, no build step and
nothing fetched from other servers."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).with_name("web")
# Revalidate on every load (a 304 when unchanged), so an upgraded server never mixes old and
# new modules in a browser's cache.
NO_CACHE = {"Cache-Control": "no-cache"}


class _Revalidated(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


def add_web_page(app: FastAPI) -> None:
    """Serve the page at `/` and its files at `/web/`."""
    # Browsers run ES modules only when served as JavaScript; some systems' MIME tables map
    # .js to text/plain.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/web", _Revalidated(directory=WEB), name="web")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", headers=NO_CACHE)
