"""The bad-body table: what a hostile client sends gets a 4xx naming what was wrong, never a 5xx,
on SQLite and on PostgreSQL (which refuses NUL characters the way SQLite does not).

Each row was a 500 once: a non-ASCII signature, non-ASCII base64, malformed URLs, a 422 that
echoed NaN or a lone surrogate and crashed while being written, times out of range, NUL in ids
and secrets. Also here: the body size limit (413 before the body is read whole), empty images,
and booleans and numbers taken as JSON gives them.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import png_b64

# (what, raw JSON body, status, field the detail names, words in its message)
BODIES = [
    ("NaN guidance", '{"prompt": "x", "guidance": NaN}', 422, "guidance", "less than or equal"),
    ("Infinity steps", '{"prompt": "x", "steps": Infinity}', 422, "steps", "integer"),
    ("1e400 seed", '{"prompt": "x", "seed": 1e400}', 422, "seed", "integer"),
    ("-Infinity width", '{"prompt": "x", "width": -Infinity, "height": 64}', 422, "width",
     "integer"),
    ("lone surrogate prompt", '{"prompt": "x\\ud800y"}', 422, "prompt", "unicode"),
    ("lone surrogate ratio", '{"prompt": "x", "aspect_ratio": "\\udfff"}', 422,
     "aspect_ratio", "lone surrogate"),
    ("NUL prompt", '{"prompt": "a\\u0000b"}', 422, "prompt", "NUL character"),
    ("NUL webhook secret", '{"prompt": "x", "webhook_url": "https://93.184.216.34/h", '
     '"webhook_secret": "s\\u0000"}', 422, "webhook_secret", "NUL character"),
    ("non-ASCII base64", '{"prompt": "x", "input_image": "AAA\\u00e9"}', 422, "input_image",
     "base64"),
    ("malformed image URL", '{"prompt": "x", "input_image": "http://[::1"}', 422,
     "input_image", "not a valid URL"),
    ("malformed webhook URL", '{"prompt": "x", "webhook_url": "http://[::1"}', 422,
     "webhook_url", "not a valid URL"),
    ("full-width digits", '{"prompt": "x", "input_image": "http://\\uff11\\uff12\\uff17.0.0.1/"}',
     422, "input_image", "not a valid URL"),
    ("empty input_image", '{"prompt": "x", "input_image": ""}', 422, "input_image", "is empty"),
    ("blank input_image", '{"prompt": "x", "input_image": "  "}', 422, "input_image",
     "is empty"),
    ("0 for a boolean", '{"prompt": "x", "prompt_upsampling": 0}', 422, "prompt_upsampling",
     "boolean"),
    ("true for a seed", '{"prompt": "x", "seed": true}', 422, "seed", "integer"),
    ("a string for steps", '{"prompt": "x", "steps": "4"}', 422, "steps", "integer"),
    ("a float for images", '{"prompt": "x", "num_images": 2.0}', 422, "num_images", "integer"),
]


@pytest.fixture
def live(serve, db_url):
    return serve(database_url=db_url)


@pytest.mark.parametrize("what, body, status, field, words", BODIES,
                         ids=[row[0] for row in BODIES])
def test_bad_bodies_get_4xx_naming_the_field(live, what, body, status, field, words):
    r = live.client.post("/v1/flux-kontext-pro", content=body.encode(),
                         headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    [detail] = [d for d in r.json()["detail"] if d["loc"][-1] == field]
    assert words in detail["msg"], detail
    json.dumps(r.json(), allow_nan=False)  # strict JSON: what was echoed is safe
    assert live.services.store.queue_depth() == 0


def test_query_and_path_values_no_job_can_have(live):
    c = live.client
    for path in ("/v1/get_result", "/v1/cancel"):
        method = c.get if path == "/v1/get_result" else c.post
        for bad in ("\x00", "a\x00b", "é" * 40, "x" * 5000, "\ud800".encode(
                "utf-8", "surrogatepass").decode("latin-1")):
            r = method(path, params={"id": bad})
            assert r.status_code == 404, (path, repr(bad), r.text)
            assert r.json()["status"] == "Task not found"
    # A signature with characters outside ASCII is just a wrong signature.
    r = c.get("/v1/results/x/0.png?exp=1&sig=%C3%A9")
    assert (r.status_code, r.json()) == (403, {"detail": "invalid signature"})
    r = c.get("/v1/results/%00/0.png", params={"exp": 1, "sig": "\x00"})
    assert r.status_code == 403
    assert c.get("/v1/usage", params={"start": "inf"}).status_code == 422
    assert c.get("/health").status_code == 200  # still serving, same client


def test_bodies_over_the_limit_get_413_before_they_are_read(serve):
    live = serve(max_body_bytes=100_000)
    big = json.dumps({"prompt": "x", "input_image": "A" * 200_000}).encode()
    r = live.client.post("/v1/flux-kontext-pro", content=big,
                         headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "the request body is over this server's limit of 100,000 "
                                  "bytes (max_body_bytes)"}

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"A" * 10_000

    r = httpx.post(f"{live.url}/v1/flux-kontext-pro", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    ok = live.submit({"prompt": "x", "steps": 1, "input_image": png_b64()})
    assert ok.status_code == 200
    assert live.services.store.queue_depth() <= 1


def test_the_default_body_limit_fits_four_full_size_images(serve):
    settings = serve().services.settings
    image_b64 = 4 * -(-settings.max_input_bytes // 3)
    assert settings.body_limit >= 4 * image_b64 + 10_000
    assert settings.body_limit < 4 * image_b64 + 2 * 1024 * 1024
