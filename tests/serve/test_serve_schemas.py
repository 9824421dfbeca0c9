"""Bad bodies get 422 with the offending field named; bad images likewise."""

from __future__ import annotations

import base64

import pytest

from .conftest import png_b64, png_bytes

BAD_BODIES = [
    ({}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "steps": 51}, "steps"),
    ({"prompt": "x", "guidance": 30}, "guidance"),
    ({"prompt": "x", "num_images": 5}, "num_images"),
    ({"prompt": "x", "output_format": "gif"}, "output_format"),
    ({"prompt": "x", "safety_tolerance": 7}, "safety_tolerance"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "aspect_ratio": "1:9"}, "aspect_ratio"),
    ({"prompt": "x", "aspect_ratio": "wide"}, "aspect_ratio"),
    ({"prompt": "x", "width": 64}, "height"),
    ({"prompt": "x", "width": 65, "height": 64}, "width"),
    ({"prompt": "x", "width": 64, "height": 64, "aspect_ratio": "1:1"}, "aspect_ratio"),
    ({"prompt": "x", "input_image_2": "abcd"}, "input_image_2"),
    ({"prompt": "x", "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
    ({"prompt": "x", "prompt_upsampling": True}, "prompt_upsampling"),
    ({"prompt": "x", "loras": [{"name": "a", "scale": 5}]}, "scale"),
    ({"prompt": "x", "loras": [{"name": "a"}] * 5}, "loras"),
    ({"prompt": "x", "loras": [{"name": "a"}]}, "name"),  # this server has no LoRAs
    ({"prompt": "x", "speed": "warp"}, "speed"),
    ({"prompt": "x", "speed": 1}, "speed"),
]


@pytest.fixture
def live(serve):
    return serve()


def _field(response) -> str:
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["loc"][-1]


def test_bad_bodies_name_the_field(live):
    for body, field in BAD_BODIES:
        assert _field(live.submit(body)) == field, body
    assert live.client.get("/metrics").text.count('state="queued"} 0') == 1


def test_body_must_be_a_json_object(live):
    r = live.client.post("/v1/flux-kontext-pro", content=b"not json",
                         headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_malformed_and_oversize_images(serve):
    live = serve(max_input_side=48, max_input_bytes=200_000)
    cases = {
        "input_image": "not base64 at all!",
        "input_image_2": base64.b64encode(b"hello, this is text").decode(),
        "input_image_3": base64.b64encode(png_bytes()[:40]).decode(),  # truncated PNG
    }
    for field, value in cases.items():
        body = {"prompt": "x", "input_image": png_b64((32, 32)), field: value}
        r = live.submit(body)
        assert _field(r) == field
    too_wide = live.submit({"prompt": "x", "input_image": png_b64((64, 32))})
    assert _field(too_wide) == "input_image"
    assert "48 px" in too_wide.json()["detail"][0]["msg"]
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(300_000)).decode()
    r = live.submit({"prompt": "x", "input_image": big})
    assert _field(r) == "input_image" and "limit" in r.json()["detail"][0]["msg"]


def test_data_urls_and_extra_references_are_accepted(live):
    data_url = "data:image/png;base64," + png_b64((48, 32))
    r = live.submit({"prompt": "combine", "input_image": data_url,
                     "input_image_2": png_b64((32, 32)), "steps": 1})
    assert r.status_code == 200, r.text
    body = live.wait(r.json()["polling_url"])
    assert body["status"] == "Ready"
    assert body["result"]["width"] > body["result"]["height"]  # follows the first input
