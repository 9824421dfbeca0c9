"""The worker: a graceful stop puts the running job back, unless it was cancelled; cancel
stops a job inside a step; the `threads` setting is the model's thread count (batching:
test_serve_batching; leases: test_serve_multiprocess)."""

from __future__ import annotations

import threading
import time

import httpx
import torch

from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import JobStore, State

from .conftest import Live, SlowKontext, start_server, until


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



def test_a_job_cancelled_as_the_server_stops_is_not_run_again(tmp_path, mini_model):
    gate = threading.Event()
    settings = ServeSettings(data_dir=tmp_path, image_classifier="none")
    app = create_app(settings, lambda: SlowKontext(mini_model, gate=gate))
    server, thread, url = start_server(app)
    store = app.state.services.store
    try:
        job = httpx.post(f"{url}/v1/flux-kontext-dev", json={"prompt": "x", "steps": 5}).json()
        until(lambda: store.get(job["id"]).state == State.RUNNING)  # held at the gate
        assert httpx.post(f"{url}/v1/cancel", params={"id": job["id"]}).json()["cancelled"]
    finally:
        server.should_exit = True  # the worker is told to stop before the batch starts
        until(lambda: app.state.services.worker._stop.is_set())
        gate.set()
        thread.join(30)
    after = JobStore(settings.db_url).get(job["id"])
    assert after.state == State.CANCELLED and after.details == {"error": "cancelled by request"}


def test_cancel_stops_a_running_job_inside_a_long_step(serve):
    model = LoadedModel.random("mini", seed=0)
    for block in (*model.flux.double_blocks, *model.flux.single_blocks):
        block.register_forward_pre_hook(lambda *_: time.sleep(0.5))  # a step takes 3 s
    live = serve(Kontext(model))
    job = live.submit({"prompt": "slow", "steps": 2}).json()
    store = live.services.store
    until(lambda: store.get(job["id"]).state == State.RUNNING)
    time.sleep(0.7)  # well inside the first step
    asked = time.monotonic()
    assert live.client.post("/v1/cancel", params={"id": job["id"]}).json()["cancelled"]
    until(lambda: store.get(job["id"]).state == State.CANCELLED, timeout=10)
    assert time.monotonic() - asked < 1.5  # a block and a check, not the rest of the step
    assert live.wait(job["polling_url"])["details"] == {"error": "cancelled by request"}




def test_the_threads_setting_sets_the_worker_threads_count(tmp_path, monkeypatch):
    """`threads` reaches the thread that runs the model, over OMP_NUM_THREADS and over the
    count the process had: the default model factory passes it to `Kontext.load`."""
    seen = []
    run_many = Kontext.run_many

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_many(self, *args, **kwargs)

    monkeypatch.setattr(Kontext, "run_many", recording)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)  # what a new thread would start with (the fixture restores 1)
    settings = ServeSettings(data_dir=tmp_path, weights="random", threads=1,
                             image_classifier="none")
    app = create_app(settings)
    server, thread, url = start_server(app)
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            job = client.post("/v1/flux-kontext-dev", json={"prompt": "x", "steps": 1}).json()
            body = Live(url, app, client).wait(job["polling_url"])
    finally:
        server.should_exit = True
        thread.join(30)
    assert body["status"] == "Ready"
    assert seen == [1]
