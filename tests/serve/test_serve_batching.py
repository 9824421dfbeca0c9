"""Worker batching (compatible queued jobs share one run_many call) and the per-key limit."""

from __future__ import annotations

import io
import threading
import time

from PIL import Image

from openkontext.pipeline import Kontext, Settings

from .conftest import SlowKontext, png_b64, png_bytes, until


def _queue_behind_a_gate(live, kontext: SlowKontext, bodies: list[dict]) -> list[dict]:
    """Submit a first job that holds the worker at the gate, then `bodies`; -> their jobs."""
    before = len(kontext.batches)
    live.submit({"prompt": "first", "steps": 1})
    until(lambda: kontext.batches[before:] == [["first"]])
    return [live.submit(body).json() for body in bodies]


def test_compatible_jobs_share_a_batch(serve, mini_model):
    gate = threading.Event()
    kontext = SlowKontext(mini_model, gate=gate)
    live = serve(kontext, max_batch_images=4)
    image = png_b64()
    try:
        jobs = _queue_behind_a_gate(live, kontext, [
            {"prompt": "b", "steps": 2, "input_image": image, "seed": 1},
            {"prompt": "c", "steps": 3, "input_image": image},  # other steps
            {"prompt": "d", "steps": 2, "input_image": image, "seed": 2, "num_images": 2},
            {"prompt": "e", "steps": 2, "input_image": png_b64((96, 64))},  # other size
            {"prompt": "f", "steps": 2, "input_image": image, "num_images": 2},  # no room
            {"prompt": "g", "steps": 2},  # no input image
        ])
    finally:
        gate.set()
    bodies = [live.wait(job["polling_url"]) for job in jobs]
    assert [b["status"] for b in bodies] == ["Ready"] * 6
    assert kontext.batches == [["first"], ["b", "d"], ["c"], ["e"], ["f"], ["g"]]
    # Each job got its own prompt and seeds, and the pictures of a batch equal lone runs.
    b, d = bodies[0]["result"], bodies[2]["result"]
    assert (b["prompt"], b["seed"], d["prompt"], d["seeds"]) == ("b", 1, "d", [2, 3])
    alone = Kontext(mini_model).run("d", [png_bytes()], Settings(seed=2, steps=2, num_images=2))
    for url, expected in zip(d["samples"], alone.images, strict=True):
        got = Image.open(io.BytesIO(live.client.get(url).content))
        diff = max(abs(x - y) for x, y in zip(got.tobytes(), expected.tobytes(), strict=True))
        assert diff <= 1
    metrics = live.client.get("/metrics").text
    assert 'openkontext_batch_size_bucket{le="1"} 5' in metrics
    assert "openkontext_batch_size_count 6" in metrics


def test_batching_off_runs_one_job_at_a_time(serve, mini_model):
    gate = threading.Event()
    kontext = SlowKontext(mini_model, gate=gate)
    live = serve(kontext, max_batch_images=1)
    try:
        jobs = _queue_behind_a_gate(live, kontext, [{"prompt": p, "steps": 1} for p in "xy"])
    finally:
        gate.set()
    for job in jobs:
        assert live.wait(job["polling_url"])["status"] == "Ready"
    assert kontext.batches == [["first"], ["x"], ["y"]]


def test_cancelling_one_job_of_a_batch_leaves_the_others(serve, mini_model):
    gate = threading.Event()
    kontext = SlowKontext(mini_model, step_delay=0.05, gate=gate)
    live = serve(kontext)
    try:
        jobs = _queue_behind_a_gate(live, kontext, [{"prompt": p, "steps": 20} for p in "xyz"])
    finally:
        gate.set()
    until(lambda: live.services.worker.running == [j["id"] for j in jobs])
    r = live.client.post("/v1/cancel", params={"id": jobs[1]["id"]}).json()
    assert r["cancelled"] is True and r["status"] == "Pending"
    x, y, z = (live.wait(job["polling_url"]) for job in jobs)
    assert x["status"] == z["status"] == "Ready"
    assert y["status"] == "Error" and y["details"] == {"error": "cancelled by request"}
    assert kontext.batches[:2] == [["first"], ["x", "y", "z"]]
    # Cancelling every job of a batch stops it between steps.
    gate.clear()
    try:
        jobs = _queue_behind_a_gate(live, kontext, [{"prompt": p, "steps": 50} for p in "uv"])
    finally:
        gate.set()
    until(lambda: live.services.worker.running == [j["id"] for j in jobs])
    started = time.monotonic()
    for job in jobs:
        live.client.post("/v1/cancel", params={"id": job["id"]})
    for job in jobs:
        assert live.wait(job["polling_url"])["details"] == {"error": "cancelled by request"}
    assert time.monotonic() - started < 50 * 0.05


def test_per_key_limit_gives_429_with_retry_after(serve, mini_model):
    gate = threading.Event()
    live = serve(SlowKontext(mini_model, gate=gate), api_keys=["alpha", "beta"],
                 max_jobs_per_key=2)
    alpha, beta = {"x-key": "alpha"}, {"x-key": "beta"}
    try:
        ids = [live.submit({"prompt": "x", "steps": 1}, headers=alpha).json()["id"]
               for _ in range(2)]
        over = live.submit({"prompt": "x", "steps": 1}, headers=alpha)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
        assert "limit is 2" in over.json()["detail"]
        assert live.submit({"prompt": "x", "steps": 1}, headers=beta).status_code == 200
        usage = live.client.get("/v1/usage", headers=alpha).json()
        assert (usage["active_jobs"], usage["max_jobs"]) == (2, 2)
    finally:
        gate.set()
    for job_id in ids:
        assert live.wait(f"/v1/get_result?id={job_id}", headers=alpha)["status"] == "Ready"
    assert live.submit({"prompt": "x", "steps": 1}, headers=alpha).status_code == 200


def test_parallel_submissions_cannot_overshoot_the_limit(serve, mini_model):
    gate = threading.Event()
    live = serve(SlowKontext(mini_model, gate=gate), max_jobs_per_key=3)
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: live.submit({"prompt": "x", "steps": 1}).status_code,
                                  range(8)))
        assert sorted(codes) == [200] * 3 + [429] * 5
    finally:
        gate.set()
