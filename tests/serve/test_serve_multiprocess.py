"""Several `openkontext serve` processes on one store run each job exactly once.

Real server processes (tests/serve/server_main.py, the random mini model slowed per step) share
one SQLite data dir or one PostgreSQL database. A process that starts while another runs a job
leaves that job alone; a process that hangs (SIGSTOP) loses its jobs when its lease expires and
a process that dies (SIGKILL) loses them at once, and the survivor finishes them; the hung one,
woken, changes nothing. "Once" is read from the store: the owner that finished the job and the
usage charged for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from openkontext.serve.store import JobStore, State

from .conftest import until

SERVER = Path(__file__).with_name("server_main.py")


class Server:
    def __init__(self, data_dir: Path, db_url: str, delay: float, lease: float):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENKONTEXT_DATABASE_URL": db_url,
               "OPENKONTEXT_JOB_LEASE_SECONDS": str(lease), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(SERVER), str(data_dir), str(delay)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), f"server did not start: {line!r}"
        self.url = line.split()[-1]

    def submit(self, body: dict) -> dict:
        r = httpx.post(f"{self.url}/v1/flux-kontext-pro", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def result(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/v1/get_result", params={"id": job_id}, timeout=30).json()

    def owner_prefix(self) -> str:
        return f"{os.uname().nodename}:{self.proc.pid}:"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(30)




def _running(store: JobStore, job_id: str) -> bool:
    job = store.get(job_id)
    return job.state == State.RUNNING and job.progress > 0


def test_a_second_process_leaves_a_running_job_alone_and_finishes_a_killed_ones(
    db_url, tmp_path
):
    store = JobStore(db_url)
    a = Server(tmp_path, db_url, delay=0.15, lease=4.0)
    b = None
    try:
        first = a.submit({"prompt": "once", "steps": 20, "seed": 1})
        until(lambda: _running(store, first["id"]), 60, "the first job to start")
        b = Server(tmp_path, db_url, delay=0.0, lease=4.0)
        # B started (and reclaimed) while A runs the job: A keeps it, its progress only grows.
        seen = [store.get(first["id"]).progress]
        while (job := store.get(first["id"])).state == State.RUNNING:
            seen.append(job.progress)
            time.sleep(0.05)
        assert job.state == State.READY and job.owner.startswith(a.owner_prefix())
        assert seen == sorted(seen), "the job's progress went back: it was restarted"
        assert b.result(first["id"])["status"] == "Ready"
        # A dies in the middle of the next job: B finishes it, long before A's lease ends.
        second = a.submit({"prompt": "orphan", "steps": 40, "seed": 2})
        until(lambda: _running(store, second["id"]), 60, "the second job to start")
        a.proc.kill()
        a.proc.wait(10)
        done = until(lambda: (j := store.get(second["id"])).state.finished and j, 60,
                      "B to finish the killed process's job")
        assert done.state == State.READY and done.owner.startswith(b.owner_prefix())
        body = b.result(second["id"])
        assert body["status"] == "Ready" and body["result"]["seed"] == 2
        assert httpx.get(body["result"]["sample"], timeout=30).status_code == 200
        assert store.usage("").total.jobs == 2  # each job charged once
    finally:
        a.stop()
        if b is not None:
            b.stop()
        store.close()


def test_a_hung_process_loses_its_job_when_the_lease_expires_and_changes_nothing_after(
    db_url, tmp_path
):
    store = JobStore(db_url)
    a = Server(tmp_path, db_url, delay=0.15, lease=1.5)
    b = Server(tmp_path, db_url, delay=0.15, lease=1.5)
    try:
        # Whichever process claims it, stop that one mid-job.
        job_id = a.submit({"prompt": "hang", "steps": 30, "seed": 3})["id"]
        until(lambda: _running(store, job_id), 60, "the job to start")
        owner = store.get(job_id).owner
        hung, alive = (a, b) if owner.startswith(a.owner_prefix()) else (b, a)
        hung.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        done = until(lambda: (j := store.get(job_id)).state.finished and j, 60,
                      "the live process to finish the hung one's job")
        assert done.state == State.READY and done.owner.startswith(alive.owner_prefix())
        assert time.monotonic() - stopped >= 1.0  # not before the lease had run out
        finished_at = done.finished_at
        # Woken, the hung process finds its lease gone: nothing it does is recorded.
        hung.proc.send_signal(signal.SIGCONT)
        time.sleep(3.0)
        after = store.get(job_id)
        assert (after.state, after.owner, after.finished_at) == (State.READY, done.owner,
                                                                 finished_at)
        assert store.usage("").total.jobs == 1
        assert hung.result(job_id)["status"] == "Ready"
    finally:
        a.stop()
        b.stop()
        store.close()
