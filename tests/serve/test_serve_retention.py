"""Retention: inputs kept only while their job needs them, results expire after the TTL, and
zero retention deletes a result at its first download."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from openkontext.serve import retention
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore, State

from .conftest import SlowKontext, png_b64, until


def test_inputs_are_deleted_when_their_job_is_done(serve, mini_model):
    gate = threading.Event()
    kontext = SlowKontext(mini_model, gate=gate, fail="c")
    live = serve(kontext)
    s = live.services.settings
    try:
        running = live.submit({"prompt": "a", "input_image": png_b64(), "steps": 1}).json()
        until(lambda: kontext.batches == [["a"]])  # held at the gate
        queued = live.submit({"prompt": "b", "input_image": png_b64(), "steps": 1}).json()
        assert (retention.input_dir(s, running["id"]) / "0.img").is_file()  # needed: running
        assert (retention.input_dir(s, queued["id"]) / "0.img").is_file()  # needed: queued
        # Other people's pictures: readable by the server's user alone, whatever the umask.
        assert (retention.input_dir(s, queued["id"]) / "0.img").stat().st_mode & 0o777 == 0o600
        live.client.post("/v1/cancel", params={"id": queued["id"]})
        assert not retention.input_dir(s, queued["id"]).exists()  # cancelled: at once
    finally:
        gate.set()
    # The store says finished first and the worker deletes the inputs right after (the other
    # order could requeue a job with no inputs after a crash), so a poller may see the
    # final status a moment before the folder goes.
    assert live.wait(running["polling_url"])["status"] == "Ready"
    until(lambda: not retention.input_dir(s, running["id"]).exists())  # finished: gone
    failed = live.submit({"prompt": "c", "input_image": png_b64(), "steps": 1}).json()
    assert live.wait(failed["polling_url"])["status"] == "Error"
    until(lambda: not retention.input_dir(s, failed["id"]).exists())
    # Refused at submission (a size the model cannot make): no input is ever stored.
    refused = live.submit({"prompt": "d", "input_image": png_b64(), "width": 2048,
                           "height": 16})
    assert refused.status_code == 422
    assert list(s.inputs_dir.iterdir()) == []


def test_results_expire_after_the_ttl_and_kept_inputs_with_them(serve):
    live = serve(result_ttl_seconds=1.0, keep_inputs=True)
    s = live.services.settings
    job = live.submit({"prompt": "x", "input_image": png_b64(), "steps": 1}).json()
    body = live.wait(job["polling_url"])
    finished = time.time()
    assert body["status"] == "Ready"
    assert (retention.result_dir(s, job["id"]) / "0.png").is_file()
    assert (retention.result_dir(s, job["id"]) / "0.png").stat().st_mode & 0o777 == 0o600
    assert (retention.input_dir(s, job["id"]) / "0.img").is_file()  # kept on request
    sample = body["result"]["sample"]
    assert live.client.get(sample).status_code == 200
    # Past the TTL the job reads as gone at once, and the sweep (every ttl/2) deletes it all.
    time.sleep(max(0.0, finished + 1.05 - time.time()))
    gone = live.client.get(job["polling_url"])
    assert gone.status_code == 404 and gone.json()["status"] == "Task not found"
    assert live.client.get(sample).status_code == 404
    until(lambda: not retention.result_dir(s, job["id"]).exists()
           and not retention.input_dir(s, job["id"]).exists())
    assert live.services.store.get(job["id"]) is None


def test_zero_retention_deletes_a_result_at_its_first_download(serve):
    live = serve(zero_retention=True)
    body = live.wait(live.submit({"prompt": "x", "steps": 1, "num_images": 2,
                                  "seed": 3}).json()["polling_url"])
    first, second = body["result"]["samples"]
    folder = retention.result_dir(live.services.settings, body["id"])
    got = live.client.get(first)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert got.headers["cache-control"] == "no-store"
    assert not (folder / "0.png").exists() and (folder / "1.png").exists()
    again = live.client.get(first)
    assert again.status_code == 410 and "first download" in again.json()["detail"]
    # A fresh link from get_result does not bring it back; the other image is still there once.
    fresh = live.client.get(f"/v1/get_result?id={body['id']}").json()["result"]["sample"]
    assert live.client.get(fresh).status_code == 410
    assert live.client.get(second).status_code == 200
    assert live.client.get(second).status_code == 410
    assert not folder.exists()


def test_take_once_gives_the_bytes_to_exactly_one_caller(tmp_path):
    path = tmp_path / "job" / "0.png"
    for _ in range(20):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"image")
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: retention.take_once(path), range(4)))
        assert sorted(got, key=lambda x: x is None) == [b"image", None, None, None]
        assert not path.parent.exists()


def test_sweep_removes_inputs_no_job_needs(tmp_path):
    settings = ServeSettings(data_dir=tmp_path)
    store = JobStore(settings.db_url)
    store.create_tables()

    def job(state: State) -> str:
        j = Job(id=JobStore.new_id(), tier="pro", state=state, params={"prompt": "p"},
                base_url="http://h", api_key_hash="", progress=0.0, created_at=time.time(),
                finished_at=time.time() if state.finished else None)
        store.add(j)
        (retention.input_dir(settings, j.id)).mkdir(parents=True)
        return j.id

    queued, done = job(State.QUEUED), job(State.ERROR)
    orphan_new = retention.input_dir(settings, "in-flight")
    orphan_old = retention.input_dir(settings, "left-behind")
    orphan_new.mkdir()
    orphan_old.mkdir()
    old = time.time() - retention.ORPHAN_SECONDS - 5
    os.utime(orphan_old, (old, old))
    assert retention.sweep(settings, store) == []
    left = sorted(p.name for p in settings.inputs_dir.iterdir())
    assert left == sorted([queued, "in-flight"])  # done's inputs and the old orphan went
    assert store.get(done) is not None  # the job itself stays until its TTL
    store.close()


def test_zero_retention_and_keep_inputs_contradict():
    with pytest.raises(ValueError, match="contradict"):
        ServeSettings(zero_retention=True, keep_inputs=True)
