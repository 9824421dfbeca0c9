"""Usage per API key at GET /v1/usage, and input_mp / output_mp in submit responses."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from openkontext.serve.settings import hash_key

from .conftest import SlowKontext, png_b64


def test_anonymous_usage_counts_images_megapixels_and_compute(serve, mini_model):
    live = serve(SlowKontext(mini_model, fail="z"))
    empty = live.client.get("/v1/usage").json()
    assert empty == {"key": "anonymous", "jobs": 0, "images": 0, "megapixels": 0.0,
                     "compute_seconds": 0.0, "since": None, "start": None, "end": None,
                     "intervals": None, "active_jobs": 0, "max_jobs": None}
    a = live.wait(live.submit({"prompt": "x", "steps": 1, "num_images": 2,
                               "width": 96, "height": 64}).json()["polling_url"])
    b = live.wait(live.submit({"prompt": "y", "steps": 1,
                               "input_image": png_b64()}).json()["polling_url"])
    failed = live.wait(live.submit({"prompt": "z", "steps": 1}).json()["polling_url"])
    live.submit({"prompt": "add gore", "safety_tolerance": 0})  # refused: never ran
    assert (a["status"], b["status"], failed["status"]) == ("Ready", "Ready", "Error")
    usage = live.client.get("/v1/usage").json()
    assert usage["jobs"] == 3 and usage["images"] == 3
    assert usage["megapixels"] == pytest.approx((2 * 96 * 64 + 64 * 64) / 1e6)
    assert usage["compute_seconds"] > 0 and usage["since"] > 0


def test_each_key_sees_its_own_usage(serve):
    live = serve(api_keys=["alpha", "beta"])
    alpha, beta = {"x-key": "alpha"}, {"x-key": "beta"}
    job = live.submit({"prompt": "x", "steps": 1}, headers=alpha).json()
    live.wait(job["polling_url"], headers=alpha)
    mine = live.client.get("/v1/usage", headers=alpha).json()
    assert mine["key"] == hash_key("alpha")[:19] and mine["images"] == 1
    theirs = live.client.get("/v1/usage", headers=beta).json()
    assert theirs["key"] == hash_key("beta")[:19] and theirs["images"] == 0
    assert live.client.get("/v1/usage").status_code == 401
    assert live.client.get("/v1/usage", headers={"x-key": "gamma"}).status_code == 403


def test_submit_reports_input_and_output_megapixels(serve):
    live = serve()
    edit = live.submit({"prompt": "x", "steps": 1, "input_image": png_b64((64, 48)),
                        "input_image_2": png_b64((32, 32))}).json()
    assert edit["input_mp"] == pytest.approx((64 * 48 + 32 * 32) / 1e6)
    result = live.wait(edit["polling_url"])["result"]
    assert edit["output_mp"] == pytest.approx(result["width"] * result["height"] / 1e6)
    body = {"prompt": "x", "steps": 1, "width": 96, "height": 64, "num_images": 3}
    gen = live.submit(body, headers={"Idempotency-Key": "k"}).json()
    assert gen["input_mp"] == 0 and gen["output_mp"] == pytest.approx(3 * 96 * 64 / 1e6)
    assert live.submit(body, headers={"Idempotency-Key": "k"}).json() == gen
    ratio = live.submit({"prompt": "x", "steps": 1, "aspect_ratio": "16:9"}).json()
    size = live.wait(ratio["polling_url"])["result"]
    assert ratio["output_mp"] == pytest.approx(size["width"] * size["height"] / 1e6)
    refused = live.submit({"prompt": "add gore", "safety_tolerance": 0}).json()
    assert refused["input_mp"] is None and refused["output_mp"] is None


def test_usage_window_and_daily_breakdown(serve):
    live = serve()
    before = time.time()
    live.wait(live.submit({"prompt": "x", "steps": 1}).json()["polling_url"])
    today = datetime.fromtimestamp(before, UTC).date().isoformat()
    body = live.client.get("/v1/usage", params={"start": today, "interval": "day"}).json()
    midnight = datetime.fromisoformat(today).replace(tzinfo=UTC).timestamp()
    assert body["start"] == midnight and body["end"] is None and body["images"] == 1
    assert [(i["start"], i["images"], i["jobs"]) for i in body["intervals"]] == [
        (midnight, 1, 1)]
    # A window that ends before the job was run sees nothing.
    old = live.client.get("/v1/usage", params={"end": str(midnight - 3600)}).json()
    assert (old["jobs"], old["images"], old["since"]) == (0, 0, None)
    hourly = live.client.get("/v1/usage", params={"start": str(before), "interval": "hour"})
    assert [i["images"] for i in hourly.json()["intervals"]] == [1]


@pytest.mark.parametrize("params, field, fragment", [
    ({"start": "yesterday"}, "start", "'yesterday' is neither Unix seconds nor an ISO 8601"),
    ({"end": "2026-13-01"}, "end", "'2026-13-01' is neither"),
    ({"start": "2026-11-02", "end": "2026-11-01"}, "end", "start (2026-11-02) must be before"),
    ({"start": "inf"}, "start", "'inf' is outside 1970-01-01 .. 9999-12-31"),
    ({"start": "nan"}, "start", "'nan' is outside"),
    ({"start": "1e300"}, "start", "'1e300' is outside"),
    ({"start": "-1e300"}, "start", "'-1e300' is outside"),
    ({"end": "-inf"}, "end", "'-inf' is outside"),
])
def test_bad_usage_windows_are_422_naming_the_field(serve, params, field, fragment):
    r = serve().client.get("/v1/usage", params=params)
    assert r.status_code == 422
    [detail] = r.json()["detail"]
    assert detail["loc"] == ["query", field] and fragment in detail["msg"]


def test_unknown_usage_interval_is_422(serve):
    r = serve().client.get("/v1/usage", params={"interval": "week"})
    assert r.status_code == 422 and "interval" in r.text
