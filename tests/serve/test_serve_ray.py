"""Scale-out on Ray Serve: real Ray, real PostgreSQL, real `openkontext serve` processes, all on
127.0.0.1.

The random mini model runs in CPU replicas of one Ray CPU and one thread each. What is checked
is read from the store (the owner that finished each job: a replica's process, and the usage
charged) and from the files: every accepted job ends Ready, once. A job was run at most once
when it was sent to the deployment once (`openkontext_dispatched_total`): a replica runs a job
only after taking over the claim that call carried, and a claim is handed over once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lora_files import write_lora
from openkontext.serve.store import JobStore, State

from .conftest import postgres_database, until

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (make install adds it)")
OPENKONTEXT = [sys.executable, "-c", "from openkontext.cli import main; main()"]
QUICK = {"steps": 4, "width": 64, "height": 64}  # ~0.1 s a job on one thread
SLOW = {"steps": 50, "width": 128, "height": 128}  # ~2 s a job: long enough to kill mid-job


@pytest.fixture(scope="module")
def pg_url():
    """A fresh PostgreSQL database for this file, dropped after."""
    with postgres_database("okx_ray") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    """The test's Ray on loopback only (Ray on Linux otherwise listens on every interface), with
    token authentication (the token in ~/.ray), and one torch thread everywhere."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return {**out, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_USAGE_STATS_ENABLED": "0"}


class Api:
    """`openkontext serve --executor ray` in its own process, on one shared data dir."""

    def __init__(self, data_dir: Path, db_url: str, *flags: str, lease: float = 4.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir.parent / f"api-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [*OPENKONTEXT, "serve", "--executor", "ray", "--weights", "random:mini",
             "--port", str(self.port), "--data-dir", str(data_dir), "--threads", "1", *flags],
            env={**env(), "OPENKONTEXT_DATABASE_URL": db_url,
                 "OPENKONTEXT_IMAGE_CLASSIFIER": "none",
                 "OPENKONTEXT_JOB_LEASE_SECONDS": str(lease)},
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        try:
            until(self._healthy, 150, f"the API on port {self.port} and its replicas")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
        try:
            return self.client.get("/health").json()["status"] == "ok"
        except httpx.HTTPError:
            return False

    def submit(self, body: dict) -> str:
        r = self.client.post("/v1/flux-kontext-pro", json=body)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def metric(self, name: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"no {name} in /metrics")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def finished(store: JobStore, ids: list[str]) -> bool:
    return all(s.finished for s in store.states(ids).values())


def replica_pid(owner: str) -> int:
    return int(owner.split(":")[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_twenty_jobs_on_two_local_replicas_each_run_and_stored_once(pg_url, tmp_path):
    """`serve --executor ray --replicas 2` with no address: a local Ray, stopped after."""
    data, store = tmp_path / "data", JobStore(pg_url)
    api = Api(data, pg_url, "--replicas", "2")
    try:
        # Two batch keys (two output sizes), seeds all different.
        ids = [api.submit({"prompt": f"a red circle {i}", "seed": i,
                           **QUICK, "width": 64 if i % 2 else 80}) for i in range(20)]
        until(lambda: finished(store, ids), 120, "the 20 jobs")
        jobs = [store.get(i) for i in ids]
        assert [j.state for j in jobs] == [State.READY] * 20
        owners = {j.owner for j in jobs}
        assert len(owners) == 2 and all(replica_pid(o) != api.proc.pid for o in owners)
        for job in jobs:  # one file per job, where the API process serves it from
            assert sorted(p.name for p in (data / "results" / job.id).iterdir()) == ["0.png"]
        body = api.client.get("/v1/get_result", params={"id": ids[7]}).json()
        assert body["status"] == "Ready" and body["result"]["seed"] == 7
        sample = api.client.get(body["result"]["sample"])
        assert sample.status_code == 200 and sample.content[:8] == b"\x89PNG\r\n\x1a\n"
        usage = store.usage("").total
        assert (usage.jobs, usage.images) == (20, 20)
        assert api.metric("openkontext_dispatched_total") == 20
        assert api.metric('openkontext_replicas{state="RUNNING"}') == 2
        assert api.metric("openkontext_in_flight_jobs") == 0
    finally:
        api.stop()
        store.close()
    # The local Ray went with the server, replicas and all.
    assert api.proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    until(lambda: not any(alive(replica_pid(o)) for o in owners), 30, "the replicas to exit")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 (2 CPUs), in a session of its own; every process of that session
    is ended after."""
    port = free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard", "false", "--disable-usage-stats"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        until(lambda: _listening(port), 60, "the Ray head")
        yield f"127.0.0.1:{port}"
    finally:
        _end_session(head)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _end_session(head: subprocess.Popen) -> None:
    """SIGTERM to the head (it stops what it started, but waits ~30 s for Serve's actors), then
    SIGKILL to whatever of its session is left after a few seconds."""
    sid = head.pid
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(5)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # the session id
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def api_a(cluster, pg_url, tmp_path_factory, mini_model):
    """The first API process on the cluster: it deploys two replicas, with a LoRA folder that
    holds one LoRA made for another model (`other`)."""
    shared = tmp_path_factory.mktemp("shared")
    (shared / "loras").mkdir()
    write_lora(shared / "loras" / "other.safetensors", mini_model.flux,
               ["single_blocks.1.linear1"], wrong_in={"single_blocks.1.linear1"})
    api = Api(shared / "data", pg_url, "--replicas", "2", "--ray-address", cluster,
              "--loras-dir", str(shared / "loras"))
    yield api, shared / "data", cluster
    api.stop()


def test_the_api_checks_requests_against_the_replicas_model(api_a, pg_url, serve):
    """The API process holds no model but has the replicas' model facts: /v1/info and /health
    say what a local server says, and what the model would refuse is a 422 naming the field
    at submission, with nothing queued."""
    api, _, _ = api_a
    local = serve()
    until(lambda: local.services.worker.facts is not None, what="the local model")
    assert api.client.get("/v1/info").json() == local.client.get("/v1/info").json()
    assert api.client.get("/health").json()["model"] == "mini"
    store = JobStore(pg_url)
    try:
        before = store.count_by_state()
        refused = [
            (api.client.post("/v1/flux-kontext-pro", json={"prompt": "x", **QUICK, **body}),
             where) for body, where in [
                ({"width": 256, "height": 256}, ["body", "width"]),
                ({"loras": [{"name": "other"}]}, ["body", "loras", 0, "name"]),
            ]]
        sid = api.client.post("/v1/sessions", json={"name": "styles"}).json()["id"]
        refused.append((api.client.post(f"/v1/sessions/{sid}/turns",
                                        json={"prompt": "x", "style_preset": "velvet"}),
                        ["body", "style_preset"]))
        for r, where in refused:
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == where, r.text
        assert "between 16 and 128, got 256" in refused[0][0].text  # mini's largest side
        assert "does not fit single_blocks.1.linear1" in refused[1][0].text
        assert store.count_by_state() == before  # nothing queued, nothing ran
        # A request that fits is sized at submission, as a local server sizes it.
        r = api.client.post("/v1/flux-kontext-pro", json={"prompt": "sized", **QUICK})
        assert r.status_code == 200 and r.json()["output_mp"] == 64 * 64 / 1e6, r.text
        until(lambda: finished(store, [r.json()["id"]]), 60, "the sized job")
    finally:
        store.close()


def test_a_killed_replica_loses_no_job(api_a, pg_url):
    api, _, _ = api_a
    store = JobStore(pg_url)
    try:
        before = store.usage("").total.jobs
        ids = [api.submit({"prompt": f"slow {i}", "seed": 100 + i, **SLOW}) for i in range(6)]
        # A job a replica has taken over and is running: kill that replica's process.
        victim = until(lambda: next((j for i in ids if (j := store.get(i)).progress > 0.1
                                     and j.state == State.RUNNING), None), 60, "a running job")
        os.kill(replica_pid(victim.owner), signal.SIGKILL)
        until(lambda: finished(store, ids), 150, "every job after the kill")
        jobs = [store.get(i) for i in ids]
        assert [j.state for j in jobs] == [State.READY] * 6
        again = store.get(victim.id)
        assert again.owner != victim.owner and again.result["seeds"] == [victim.params["seed"]]
        assert store.usage("").total.jobs == before + 6  # each charged once
    finally:
        store.close()


def test_progress_and_cancel_reach_the_replica(api_a):
    api, _, _ = api_a
    job_id = api.submit({"prompt": "cancel me", "seed": 5, **SLOW, "num_images": 4})
    poll = {"id": job_id}
    # Progress written by the replica, read through the API process.
    seen = until(lambda: (b := api.client.get("/v1/get_result", params=poll).json())
                 ["progress"] > 0.05 and b, 60, "progress from the replica")
    assert seen["status"] == "Pending"
    asked = time.monotonic()
    r = api.client.post("/v1/cancel", params=poll)
    assert r.status_code == 200 and r.json()["cancelled"], r.text
    done = until(lambda: (b := api.client.get("/v1/get_result", params=poll).json())
                 ["status"] != "Pending" and b, 30, "the cancel to reach the replica")
    assert done["status"] == "Error" and done["details"]["error"] == "cancelled by request"
    assert time.monotonic() - asked < 5  # stopped within a block, not at the job's end


def test_two_api_processes_on_one_postgresql_run_each_job_once(api_a, pg_url):
    a, data, address = api_a
    b = Api(data, pg_url, "--replicas", "2", "--ray-address", address)
    store = JobStore(pg_url)
    try:
        before = (store.usage("").total.jobs, a.metric("openkontext_dispatched_total"))
        ids = [(a if i % 2 else b).submit({"prompt": f"twice? {i}", "seed": i, **QUICK})
               for i in range(12)]
        until(lambda: finished(store, ids), 120, "the 12 jobs")
        assert [store.get(i).state for i in ids] == [State.READY] * 12
        sent = (a.metric("openkontext_dispatched_total") - before[1]
                + b.metric("openkontext_dispatched_total"))
        assert sent == 12, "a job was sent to the deployment twice"
        assert store.usage("").total.jobs == before[0] + 12
        # Either API process answers for every job, and serves its file.
        body = a.client.get("/v1/get_result", params={"id": ids[0]}).json()
        assert a.client.get(body["result"]["sample"]).status_code == 200
        # B is killed with jobs in its hands: A takes them back, and nothing is lost.
        slow = [b.submit({"prompt": f"orphan {i}", "seed": 200 + i, **SLOW}) for i in range(4)]
        until(lambda: any(store.get(i).state == State.RUNNING for i in slow), 60, "B to send")
        b.stop(signal.SIGKILL)
        until(lambda: finished(store, slow), 150, "A to finish what B had taken")
        assert [store.get(i).state for i in slow] == [State.READY] * 4
        assert store.usage("").total.jobs == before[0] + 16
    finally:
        b.stop()
        store.close()
