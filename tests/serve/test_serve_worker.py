"""The worker: a graceful stop puts the running job back (batching: test_serve_batching)."""

from __future__ import annotations

import time

import httpx

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

