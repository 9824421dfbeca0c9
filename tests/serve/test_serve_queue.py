"""The queue: bounded (429 + Retry-After), idempotent submissions, cancellation."""

from __future__ import annotations

import threading
import time

from .conftest import SlowKontext


def _wait_running(live, job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while live.services.worker.current != job_id:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)


def test_full_queue_gives_429_with_retry_after(serve, mini_model):
    gate = threading.Event()
    live = serve(SlowKontext(mini_model, gate=gate), queue_max_size=2)
    try:
        ids = [live.submit({"prompt": f"job {i}", "steps": 1}).json()["id"] for i in range(2)]
        r = live.submit({"prompt": "one too many", "steps": 1})
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert "queue is full" in r.json()["detail"]
        assert "openkontext_queue_depth 2" in live.client.get("/metrics").text
    finally:
        gate.set()
    for job_id in ids:
        assert live.wait(f"/v1/get_result?id={job_id}")["status"] == "Ready"
    assert live.submit({"prompt": "room again", "steps": 1}).status_code == 200


def test_idempotency_key_returns_the_same_job(serve):
    live = serve()
    body = {"prompt": "a blue square", "steps": 1}
    first = live.submit(body, headers={"Idempotency-Key": "abc"}).json()
    again = live.submit(body, headers={"Idempotency-Key": "abc"}).json()
    assert again == first
    other = live.submit(body, headers={"Idempotency-Key": "def"}).json()
    assert other["id"] != first["id"]
    changed = live.submit({**body, "seed": 3}, headers={"Idempotency-Key": "abc"})
    assert changed.status_code == 409
    assert live.wait(first["polling_url"])["status"] == "Ready"
    assert live.submit(body, headers={"Idempotency-Key": "abc"}).json() == first


def test_cancel_running_and_queued_jobs(serve, mini_model):
    live = serve(SlowKontext(mini_model, step_delay=0.05))
    running = live.submit({"prompt": "long", "steps": 50}).json()
    queued = live.submit({"prompt": "next", "steps": 1}).json()
    _wait_running(live, running["id"])
    r = live.client.post("/v1/cancel", params={"id": queued["id"]}).json()
    assert r == {"id": queued["id"], "cancelled": True, "status": "Error"}
    r = live.client.post("/v1/cancel", params={"id": running["id"]}).json()
    assert r == {"id": running["id"], "cancelled": True, "status": "Pending"}
    body = live.wait(running["polling_url"])
    assert body["status"] == "Error"
    assert body["details"] == {"error": "cancelled by request"}
    assert live.wait(queued["polling_url"])["details"] == {"error": "cancelled by request"}
    assert not (live.services.settings.results_dir / running["id"]).exists()
    missing = live.client.post("/v1/cancel", params={"id": "nope"})
    assert missing.status_code == 404 and missing.json()["status"] == "Task not found"
    done = live.submit({"prompt": "quick", "steps": 1}).json()
    live.wait(done["polling_url"])
    r = live.client.post("/v1/cancel", params={"id": done["id"]}).json()
    assert r == {"id": done["id"], "cancelled": False, "status": "Ready"}


def test_progress_is_reported_while_running(serve, mini_model):
    live = serve(SlowKontext(mini_model, step_delay=0.1))
    job = live.submit({"prompt": "slow", "steps": 10}).json()
    seen = set()
    deadline = time.monotonic() + 30
    while (body := live.client.get(job["polling_url"]).json())["status"] == "Pending":
        seen.add(body["progress"])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["progress"] == 1.0
    assert any(0 < p < 1 for p in seen), seen


def test_retry_after_counts_jobs_finished_together_in_a_batch():
    from openkontext.serve.metrics import Throughput

    rate = Throughput()
    assert rate.retry_after(3) == 15  # no batch seen yet: 5 s a job
    for _ in range(3):
        rate.record(jobs=4, seconds=2.0)  # four jobs every 2 s: 2 jobs a second
    assert rate.jobs_per_second() == 2.0
    assert rate.retry_after(8) == 4  # not 8 jobs x 2 s = 16 s
    assert rate.retry_after(0) == 1 and rate.retry_after(10_000) == 600
