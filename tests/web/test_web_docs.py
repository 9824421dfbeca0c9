"""/docs and /redoc render in a real browser with every request outside the server refused."""

from __future__ import annotations

from urllib.parse import urlsplit


def _offline(page, server) -> list[str]:
    """Abort every request not to the test server; -> the URLs refused."""
    own, refused = urlsplit(server.url).netloc, []

    def route(r):
        if urlsplit(r.request.url).netloc == own:
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return refused


def test_swagger_ui_renders_offline(page, server):
    refused = _offline(page, server)
    page.goto(f"{server.url}/docs")
    title = page.locator(".swagger-ui .info .title")
    title.wait_for()
    assert title.inner_text().startswith("openkontext")
    page.get_by_text("/v1/flux-kontext-pro", exact=True).first.wait_for()
    assert refused == []


def test_redoc_renders_offline(page, server):
    refused = _offline(page, server)
    page.goto(f"{server.url}/redoc")
    page.locator("h1:has-text('openkontext')").first.wait_for()
    page.get_by_text("Submit an edit or generation (pro)").first.wait_for(state="attached")
    # ReDoc's bundle links Redocly's logo from its CDN; offline the logo is missing, nothing else.
    assert set(refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
