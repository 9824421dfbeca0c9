"""The worker: a graceful stop puts the running job back; expired results are swept."""

from __future__ import annotations

import time

import httpx

from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import JobStore, State

from .conftest import SlowKontext, start_server


def test_graceful_stop_requeues_the_running_job(tmp_path, mini_model):
    settings = ServeSettings(data_dir=tmp_path)
    app = create_app(settings, lambda: SlowKontext(mini_model, step_delay=0.05))
    server, thread, url = start_server(app)
    store = app.state.services.store
    try:
        job = httpx.post(f"{url}/v1/flux-kontext-dev", json={"prompt": "x", "steps": 50}).json()
        deadline = time.monotonic() + 30
        while store.get(job["id"]).progress == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(30)
    after = JobStore(settings.db_url).get(job["id"])
    assert after.state == State.QUEUED and after.progress == 0.0


def test_expired_results_are_deleted(serve, mini_model):
    live = serve(Kontext(mini_model), result_ttl_seconds=0.01)
    body = live.wait(live.submit({"prompt": "x", "steps": 1}).json()["polling_url"])
    folder = live.services.settings.results_dir / body["id"]
    assert (folder / "0.png").is_file()
    time.sleep(0.05)
    live.services.worker._last_cleanup = 0.0
    live.services.worker._cleanup_expired()
    assert not folder.exists()
    gone = live.client.get(f"/v1/get_result?id={body['id']}")
    assert gone.status_code == 404 and gone.json()["status"] == "Task not found"
