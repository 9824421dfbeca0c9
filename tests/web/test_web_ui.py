"""`openkontext ui`: a real process that serves the page on 127.0.0.1 and says where."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from openkontext.cli_ui import first_free_port


def test_ui_serves_the_page_and_prints_its_address(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("openkontext")), "ui", "--no-browser", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("openkontext ui: http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[2]
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "openkontext" in page.text
        assert httpx.get(f"{url}v1/info", timeout=30).json()["auth_required"] is False
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_port_stays_put_unless_taken():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        free = first_free_port(taken)
        assert free != taken and (free == 0 or taken < free <= taken + 20)
