"""A server killed with SIGKILL in the middle of a job finishes the job after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVER = Path(__file__).with_name("server_main.py")


def _start(data_dir: Path, delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(data_dir), str(delay)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), f"server did not start: {line!r}"
    return proc, line.split()[-1]


def test_sigkill_mid_job_then_restart_finishes_it(tmp_path):
    proc, url = _start(tmp_path, delay=0.2)
    try:
        job = httpx.post(f"{url}/v1/flux-kontext-pro",
                         json={"prompt": "survive", "steps": 20, "seed": 5}).json()
        deadline = time.monotonic() + 60
        while httpx.get(job["polling_url"]).json()["progress"] in (None, 0.0):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    proc, url = _start(tmp_path, delay=0.0)
    try:
        deadline = time.monotonic() + 60
        while (body := httpx.get(f"{url}/v1/get_result", params={"id": job["id"]}).json())[
            "status"
        ] == "Pending":
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body["status"] == "Ready" and body["result"]["seed"] == 5
        assert body["result"]["sample"].startswith(url)
        assert httpx.get(body["result"]["sample"]).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises after shutting down
