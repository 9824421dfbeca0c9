"""Submit / poll / download round trips against a real server, and the API's edges."""

from __future__ import annotations

import io
import math
import time

from PIL import Image

from openkontext.pipeline import Kontext
from openkontext.serve import urls
from openkontext.speed import SPEEDS

from .conftest import SlowKontext, png_b64


def test_edit_round_trip(serve):
    live = serve()
    r = live.submit({"prompt": "make the square green", "input_image": png_b64(), "seed": 7,
                     "steps": 2, "extra_field": "ignored"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["polling_url"] == f"{live.url}/v1/get_result?id={job['id']}"
    body = live.wait(job["polling_url"])
    assert body["status"] == "Ready", body
    assert body["progress"] == 1.0
    result = body["result"]
    assert result["seed"] == 7 and result["prompt"] == "make the square green"
    assert result["end_time"] >= result["start_time"]
    assert result["duration"] == round(result["end_time"] - result["start_time"], 3)
    assert result["sample"].startswith(f"{live.url}/v1/results/{job['id']}/0.png?exp=")
    assert "samples" not in result
    image = live.client.get(result["sample"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(image.content))
    assert png.size == (64, 64)
    assert png.text["Seed"] == "7"


def test_generation_batch_is_deterministic(serve):
    live = serve()
    body = {"prompt": "a red circle", "seed": 11, "steps": 1, "num_images": 2,
            "aspect_ratio": "16:9", "output_format": "jpeg"}
    first = live.wait(live.submit(body).json()["polling_url"])
    second = live.wait(live.submit(body).json()["polling_url"])
    assert first["status"] == second["status"] == "Ready"
    result = first["result"]
    assert result["seeds"] == [11, 12]
    assert result["sample"] == result["samples"][0] and len(result["samples"]) == 2
    images = [live.client.get(u) for u in result["samples"]]
    again = [live.client.get(u) for u in second["result"]["samples"]]
    for img, img2 in zip(images, again, strict=True):
        assert img.headers["content-type"] == "image/jpeg"
        assert img.content[:3] == b"\xff\xd8\xff"
        assert img.content == img2.content
    w, h = Image.open(io.BytesIO(images[0].content)).size
    assert w > h
    assert images[0].content != images[1].content  # different seeds


def test_speed_is_an_optional_field_with_the_servers_default(serve, mini_model):
    """`speed` reaches the pipeline (here with a `fast` that skips every step it can, so its
    picture differs from quality's); a request without it gets the server's setting."""
    body = {"prompt": "make the square green", "input_image": png_b64(), "seed": 7, "steps": 4}

    def picture(live, **extra) -> bytes:
        r = live.submit({**body, **extra})
        assert r.status_code == 200, r.text
        done = live.wait(r.json()["polling_url"])
        assert done["status"] == "Ready", done
        return live.client.get(done["result"]["sample"]).content

    kontext = Kontext(mini_model, speeds={**SPEEDS, "fast": math.inf})
    live = serve(kontext)
    quality, fast = picture(live), picture(live, speed="fast")
    assert picture(live, speed="quality") == quality != fast
    assert picture(serve(kontext, speed="fast")) == fast


def test_runtime_error_status(serve, mini_model):
    live = serve(SlowKontext(mini_model, fail="a line"))
    r = live.submit({"prompt": "a line", "steps": 1})
    body = live.wait(r.json()["polling_url"])
    assert body["status"] == "Error"
    assert body["details"]["error"] == "the model cannot do 'a line'"
    assert body["result"] is None


def test_sizes_the_model_cannot_make_are_refused_at_submission(serve):
    live = serve()
    # Valid fields, but a 128:1 shape, and a side over the mini model's 128.
    line = live.submit({"prompt": "a line", "width": 2048, "height": 16, "steps": 1})
    assert line.status_code == 422
    assert line.json()["detail"][0]["loc"] == ["body", "width"]
    assert "between 16 and 128" in line.json()["detail"][0]["msg"]
    big = live.submit({"prompt": "big", "width": 2048, "height": 2048, "num_images": 4,
                       "steps": 50})
    assert big.status_code == 422 and "128" in big.json()["detail"][0]["msg"]
    assert live.services.store.queue_depth() == 0


def test_work_over_the_budget_is_refused_at_submission(serve):
    live = serve(max_job_megapixel_steps=1.0)
    # 128 x 128 x 4 images x 20 steps = 1.31 megapixel-steps; one image fits.
    over = live.submit({"prompt": "x", "width": 128, "height": 128, "num_images": 4,
                        "steps": 20})
    assert over.status_code == 422
    detail = over.json()["detail"][0]
    assert detail["loc"] == ["body", "num_images"]
    assert detail["msg"].startswith("this job is 1.31 megapixel-steps")
    assert "limit of 1 (max_job_megapixel_steps)" in detail["msg"]
    ok = live.submit({"prompt": "x", "width": 128, "height": 128, "steps": 20})
    assert ok.status_code == 200
    assert live.wait(ok.json()["polling_url"])["status"] == "Ready"


def test_unknown_job_and_signed_urls(serve):
    live = serve()
    missing = live.client.get("/v1/get_result", params={"id": "nope"})
    assert missing.status_code == 404
    assert missing.json()["status"] == "Task not found"
    body = live.wait(live.submit({"prompt": "x", "steps": 1, "seed": 1}).json()["polling_url"])
    sample = body["result"]["sample"]
    assert live.client.get(sample).status_code == 200
    assert live.client.get(sample.replace("sig=", "sig=A")).status_code == 403
    assert live.client.get(sample.split("?")[0]).status_code == 422  # no signature at all
    secret = live.services.settings.signing_secret()
    expired = urls.signed_sample_url(live.url, body["id"], "0.png", secret, ttl=-5)
    assert live.client.get(expired).status_code == 410
    other = urls.signed_sample_url(live.url, body["id"], "1.png", secret, ttl=60)
    assert live.client.get(other).status_code == 404


def test_polling_url_follows_forwarded_headers_and_public_url(serve):
    live = serve()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "edit.example.com"}
    job = live.submit({"prompt": "x", "steps": 1}, headers=headers).json()
    assert job["polling_url"] == f"https://edit.example.com/v1/get_result?id={job['id']}"
    body = live.wait(f"/v1/get_result?id={job['id']}", headers=headers)
    assert body["result"]["sample"].startswith("https://edit.example.com/v1/results/")
    fixed = serve(public_url="https://api.example.org/")
    job = fixed.submit({"prompt": "x", "steps": 1}, headers=headers).json()
    assert job["polling_url"].startswith("https://api.example.org/v1/get_result?id=")


def test_health_metrics_and_docs(serve):
    live = serve()
    health = live.client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": "mini", "queue_depth": 0, "detail": None}
    live.wait(live.submit({"prompt": "x", "steps": 1}).json()["polling_url"])
    text = live.client.get("/metrics").text
    assert "openkontext_queue_depth 0" in text
    assert 'openkontext_jobs{state="ready"} 1' in text
    assert "openkontext_job_duration_seconds_count 1" in text
    assert 'openkontext_job_duration_seconds_bucket{le="+Inf"} 1' in text
    spec = live.client.get("/openapi.json").json()
    for path in ("/v1/flux-kontext-pro", "/v1/flux-kontext-max", "/v1/flux-kontext-dev",
                 "/v1/get_result", "/v1/cancel", "/health", "/metrics"):
        assert path in spec["paths"], path
    assert live.client.get("/docs").status_code == 200


def test_health_reports_a_model_that_failed_to_load(serve, tmp_path):
    from openkontext.serve.app import create_app
    from openkontext.serve.settings import ServeSettings

    from .conftest import start_server

    def broken():
        raise RuntimeError("no weights here")

    app = create_app(ServeSettings(data_dir=tmp_path / "broken"), broken)
    server, thread, url = start_server(app)
    try:
        import httpx

        deadline = time.monotonic() + 10
        while (r := httpx.get(f"{url}/health")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r.status_code == 503
        assert r.json()["status"] == "error" and "no weights here" in r.json()["detail"]
        submit = httpx.post(f"{url}/v1/flux-kontext-pro", json={"prompt": "x"})
        assert submit.status_code == 503 and "no weights here" in submit.json()["detail"]
    finally:
        server.should_exit = True
        thread.join(30)


def test_reference_pages_need_no_internet(serve):
    import re

    live = serve()
    for page in ("/docs", "/redoc"):
        html = live.client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        urls = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)["\']', html.text)
        assert urls, html.text
        assert not [u for u in urls if "://" in u], f"{page} loads from elsewhere: {urls}"
        for url in urls:
            r = live.client.get(url)
            assert r.status_code == 200 and len(r.content) > 100, url
    assert live.client.get("/openapi.json").json()["info"]["title"] == "openkontext"


def test_a_picture_outside_shapes_world_gets_a_notice_in_details(serve):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from openkontext.world.likeness import NOTICE

    noise = np.random.default_rng(1)
    photo = Image.fromarray((noise.random((120, 160, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    live = serve()
    job = live.submit({"prompt": "make the car red", "steps": 1,
                       "input_image": base64.b64encode(buf.getvalue()).decode()}).json()
    body = live.wait(job["polling_url"])
    assert body["status"] == "Ready" and body["details"] == {"notice": NOTICE}
    plain = live.wait(live.submit({"prompt": "x", "steps": 1, "input_image": png_b64()})
                      .json()["polling_url"])
    assert plain["status"] == "Ready" and plain["details"] is None
