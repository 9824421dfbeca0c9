"""Edits per second through the HTTP API with the model on 1 and on 2 Ray Serve replicas, side by
side in one run (and the local executor beside them, for what Ray adds on one replica).

For each configuration: `openkontext serve` in a child process on 127.0.0.1 (a free port;
SQLite in a temporary data dir), the embedded mini model (or --weights), one torch thread per
replica (OMP_NUM_THREADS=1, --threads 1). --warmup edits first; then --jobs edits of a 64 px
Shapes-style picture are submitted at once and polled until every one is Ready. Edits/s =
jobs / (time from the first submission to the last job's end). Batching is on as by default
(max_batch_images 4), so a replica runs up to four compatible edits in one pass.

Each server's local Ray is stopped with it; everything stays on the loopback interface. On a
machine with fewer free cores than replicas the second replica has nothing to run on: read the
figure with the machine's load beside it (printed).

Usage: python benchmarks/ray_throughput.py [--jobs 32] [--warmup 4] [--steps N]
           [--weights PATH|random:mini] [--configs local,1,2]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

OPENKONTEXT = [sys.executable, "-c", "from openkontext.cli import main; main()"]


def picture() -> str:
    """A 64 px yellow square with a red circle, as base64 PNG."""
    img = Image.new("RGB", (64, 64), (240, 210, 50))
    ImageDraw.Draw(img).ellipse((20, 20, 44, 44), fill=(220, 40, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, config: str, data_dir: str, weights: str | None):
        self.port = free_port()
        flags = ["--executor", "local"] if config == "local" else [
            "--executor", "ray", "--replicas", config]
        if weights:
            flags += ["--weights", weights]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(OMP_NUM_THREADS="1", OPENKONTEXT_IMAGE_CLASSIFIER="none",
                   RAY_USAGE_STATS_ENABLED="0")
        self.proc = subprocess.Popen(
            [*OPENKONTEXT, "serve", "--port", str(self.port), "--data-dir", data_dir,
             "--threads", "1", *flags],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60,
                                   trust_env=False)
        started = time.monotonic()
        try:
            while not self._healthy():
                if self.proc.poll() is not None or time.monotonic() - started > 240:
                    raise RuntimeError(f"the {config} server did not start")
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _healthy(self) -> bool:
        try:
            health = self.client.get("/health").json()
        except httpx.HTTPError:
            return False
        if health["status"] == "error":
            raise RuntimeError(f"the server failed to start: {health['detail']}")
        return health["status"] == "ok"

    def run(self, n: int, body: dict) -> float:
        """Submit n edits at once, wait for all; -> edits/s."""
        start = time.monotonic()
        ids = []
        for i in range(n):
            r = self.client.post("/v1/flux-kontext-pro", json={**body, "seed": i})
            r.raise_for_status()
            ids.append(r.json()["id"])
        pending = set(ids)
        while pending:
            for job_id in list(pending):
                status = self.client.get("/v1/get_result", params={"id": job_id}).json()
                if status["status"] != "Pending":
                    assert status["status"] == "Ready", status
                    pending.discard(job_id)
            if time.monotonic() - start > 600:
                raise RuntimeError(f"{len(pending)} edits still pending after 600 s")
            time.sleep(0.05)
        return n / (time.monotonic() - start)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--weights", default=None, help="default: the embedded mini model")
    parser.add_argument("--configs", default="local,1,2",
                        help="comma-separated: local and/or replica counts")
    args = parser.parse_args()
    body = {"prompt": "make the circle blue", "input_image": picture()}
    if args.steps:
        body["steps"] = args.steps
    rows = []
    for config in args.configs.split(","):
        with tempfile.TemporaryDirectory(prefix="okx-ray-bench-") as tmp:
            server = Server(config, str(Path(tmp) / "data"), args.weights)
            try:
                server.run(args.warmup, body)
                load = os.getloadavg()[0]
                rate = server.run(args.jobs, body)
            finally:
                server.stop()
        name = "local executor" if config == "local" else f"ray, {config} replica(s)"
        rows.append((name, rate, server.start_seconds, load))
        print(f"{name}: {rate:.2f} edits/s", flush=True)
    print(f"\n{args.jobs} edits each, one thread per replica, {os.cpu_count()} cores")
    print("| executor | edits/s | x first row | start-up to healthy | load average at start |")
    print("|---|---|---|---|---|")
    for name, rate, start, load in rows:
        print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x | {start:.0f} s | {load:.1f} |")


if __name__ == "__main__":
    main()
