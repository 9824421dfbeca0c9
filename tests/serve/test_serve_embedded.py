"""`openkontext serve` as a new user starts it: the real CLI in its own process, the shipped
mini weights (no --weights), SQLite under --data-dir, the default image classifier."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from openkontext.world.render import render
from openkontext.world.scene import Scene

CLI = Path(sys.executable).with_name("openkontext")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png_b64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _wait(url: str, deadline: float) -> dict:
    while (body := httpx.get(url).json())["status"] == "Pending":
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


def test_serve_cli_with_the_embedded_model_edits_and_generates(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                health = httpx.get(f"{url}/health")
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became healthy"
            time.sleep(0.2)
        assert health.json()["model"] == "mini-fine"
        scene = Scene.from_json(
            '{"background": "yellow", "objects": [{"shape": "circle", "color": "red", '
            '"cell": "center", "size": "large"}]}'
        )
        source = render(scene, 64)
        edit = httpx.post(f"{url}/v1/flux-kontext-pro", json={
            "prompt": "make the circle blue", "input_image": _png_b64(source), "seed": 3,
        })
        gen = httpx.post(f"{url}/v1/flux-kontext-pro", json={
            "prompt": "a large green square in the top left on a white background",
            "aspect_ratio": "1:1", "seed": 4, "output_format": "jpeg",
        })
        assert edit.status_code == gen.status_code == 200
        for job, fmt in ((edit.json(), "PNG"), (gen.json(), "JPEG")):
            body = _wait(job["polling_url"], deadline)
            assert body["status"] == "Ready", body
            image = httpx.get(body["result"]["sample"])
            assert image.status_code == 200
            picture = Image.open(io.BytesIO(image.content))
            assert picture.format == fmt and picture.size == (64, 64)
        out = np.asarray(Image.open(io.BytesIO(image.content)).convert("RGB"))
        assert out.std() > 1.0  # a picture, not a flat fill
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=30)[0]
    assert "image classifier:" in log
