"""Load test of the HTTP service, next to direct pipeline calls measured in the same run.

1. Starts `openkontext serve`'s app in a child process on 127.0.0.1 (a free port; SQLite in a
   temporary data dir) with the random-weight mini model, or with `--weights` (a path, or
   `embedded` for the shipped mini model).
2. Sequential phase: one client submits an edit, polls its polling_url every --poll seconds
   and downloads the sample; repeated. The mean of these latencies minus the direct time below
   is the API's overhead per request (HTTP, JSON, base64, store, worker hand-off, PNG encode
   and write, polling granularity, download).
3. Load phase: --concurrency clients do the same in a loop; sustained edits/s = edits
   completed / wall time of the phase, with p50/p99 latency. The server's worker may batch
   compatible queued edits (max_batch_images); the mean batch size is read from /metrics.
4. Stops the server, then times `Kontext.run` in this process on the same inputs, one edit at
   a time: the direct cost of an edit with no API around it.

With --batch-sizes 1,2,4 instead: throughput against batch size. For each size B, a server
with max_batch_images B and B clients polling every --poll seconds for --duration seconds
(edits/s sustained, mean batch from /metrics), next to direct `Kontext.run_many` of B edits in
this process (edits/s of the pipeline's batching with no API around it).

With --paired N instead: the API's overhead per request measured in pairs, so that background
load that changes during the run hits both sides alike: N times, one edit through the API (the
sequential phase's submit, poll, download), then one direct `Kontext.run` in this process while
the server idles. The overhead is the median of the N differences.

Every phase is bounded by a request count and a time limit, so the script ends by itself.
Everything stays on the loopback interface. Run it nice'd next to other work, with
OMP_NUM_THREADS=1 (both the server and the direct calls then use one torch thread).

Usage: python benchmarks/load_serve.py [--concurrency 4] [--duration 40] [--requests 300]
           [--sequential 15] [--direct 15] [--steps 16] [--size 64] [--poll 0.05]
           [--max-batch-images 4] [--weights PATH|embedded] [--speed quality]
       python benchmarks/load_serve.py --batch-sizes 1,2,4 [--duration 20] [--poll 0.25]
       python benchmarks/load_serve.py --paired 15
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import torch
from PIL import Image


def make_kontext(weights: str | None):
    from openkontext.model import LoadedModel
    from openkontext.pipeline import Kontext

    if weights is None:
        return Kontext(LoadedModel.random("mini", seed=0))
    return Kontext.load(None if weights == "embedded" else weights, device="cpu")


def input_png(size: int) -> bytes:
    img = Image.new("RGB", (size, size), (200, 40, 40))
    img.paste((20, 20, 220), (size // 4, size // 4, size // 2, size // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# -- the server, in a child process -------------------------------------------------------------


def serve(data_dir: str, weights: str | None, max_batch_images: int) -> None:
    """Child process: run the app on 127.0.0.1 and print the URL once it listens."""


    from openkontext.serve.app import create_app, serve_on_free_port
    from openkontext.serve.settings import ServeSettings

    torch.set_num_threads(1)
    # NudeNet checks every output, as on a service with a photographic model ("auto" leaves it
    # off for the mini model, whose pictures it misreads).
    settings = ServeSettings(data_dir=data_dir, queue_max_size=1000,
                             max_batch_images=max_batch_images, image_classifier="nudenet")
    app = create_app(settings, lambda: make_kontext(weights))
    serve_on_free_port(app)


def start_server(args, data_dir: str, max_batch_images: int | None = None
                 ) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, __file__, "--serve-dir", data_dir,
           "--max-batch-images", str(max_batch_images or args.max_batch_images)]
    if args.weights:
        cmd += ["--weights", args.weights]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[-1]


# -- the client ---------------------------------------------------------------------------------


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    wall: float = 0.0


async def one_edit(client: httpx.AsyncClient, body: dict, poll: float, timeout: float) -> float:
    """Submit, poll until Ready, download: -> seconds. Raises on any other outcome."""
    started = time.perf_counter()
    r = await client.post("/v1/flux-kontext-pro", json=body)
    r.raise_for_status()
    polling_url = r.json()["polling_url"]
    while True:
        result = (await client.get(polling_url)).json()
        if result["status"] == "Ready":
            break
        if result["status"] != "Pending" or time.perf_counter() - started > timeout:
            raise RuntimeError(f"job ended as {result['status']}: {result.get('details')}")
        await asyncio.sleep(poll)
    image = await client.get(result["result"]["sample"])
    image.raise_for_status()
    return time.perf_counter() - started


async def run_phase(url: str, body: dict, concurrency: int, requests: int, duration: float,
                    poll: float) -> Phase:
    phase, issued = Phase(), 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 trust_env=False) as client:

        async def loop(worker: int) -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                try:
                    seconds = await one_edit(client, {**body, "seed": issued}, poll,
                                             timeout=max(5.0, deadline - time.perf_counter()))
                    phase.latencies.append(seconds)
                except (httpx.HTTPError, RuntimeError) as e:
                    phase.failures += 1
                    print(f"  client {worker}: {e}", file=sys.stderr)

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        phase.wall = time.perf_counter() - started
    return phase


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def batch_totals(url: str) -> tuple[float, float]:
    """(jobs, batches) the server has run so far, from its batch-size histogram."""
    text = httpx.get(f"{url}/metrics", trust_env=False).text
    total = re.search(r"^openkontext_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^openkontext_batch_size_count (\S+)$", text, re.M)
    return float(total.group(1)), float(count.group(1))


# -- the whole run ------------------------------------------------------------------------------


def paired_overhead(args, body: dict, png: bytes, pairs: int) -> None:
    """API edit, then direct edit, `pairs` times: the median difference is the overhead."""
    from openkontext.pipeline import Settings

    load_start = os.getloadavg()[0]
    kontext = make_kontext(args.weights)
    api, direct = [], []
    with tempfile.TemporaryDirectory(prefix="load-serve-") as data_dir:
        proc, url = start_server(args, data_dir)
        try:
            asyncio.run(run_phase(url, body, 1, 2, 60, args.poll))  # warm-up
            kontext.run(body["prompt"], [png], Settings(seed=0, steps=args.steps, speed=args.speed))
            for i in range(pairs):
                phase = asyncio.run(run_phase(url, {**body, "seed": i}, 1, 1, 60, args.poll))
                api += phase.latencies
                started = time.perf_counter()
                kontext.run(body["prompt"], [png],
                            Settings(seed=i, steps=args.steps, speed=args.speed))
                direct.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(30)
    gaps = [a - d for a, d in zip(api, direct, strict=True)]
    d = statistics.median(direct)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model "
          f"{kontext.model.preset.name} ({'random' if not args.weights else args.weights}); "
          f"{args.size}x{args.size} input, {args.steps} steps, speed {args.speed}; load average "
          f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{pairs} pairs (API edit, then direct Kontext.run): direct p50 {d * 1000:.1f} ms, API "
          f"p50 {statistics.median(api) * 1000:.1f} ms; overhead per request p50 "
          f"{statistics.median(gaps) * 1000:.1f} ms ({statistics.median(gaps) / d * 100:.0f}% of "
          f"the direct edit), p10-p90 {percentile(gaps, 10) * 1000:.0f}-"
          f"{percentile(gaps, 90) * 1000:.0f} ms; polls every {args.poll * 1000:.0f} ms")


def batch_sweep(args, body: dict, png: bytes, sizes: list[int]) -> None:
    """Edits/s against batch size: through the API and as direct `run_many` calls."""
    from openkontext.pipeline import Settings

    load_start, rows = os.getloadavg()[0], []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="load-serve-") as data_dir:
            proc, url = start_server(args, data_dir, max_batch_images=size)
            try:
                asyncio.run(run_phase(url, body, 1, 2, 60, args.poll))  # warm-up
                jobs_before, batches_before = batch_totals(url)
                load = asyncio.run(run_phase(url, body, size, args.requests, args.duration,
                                             args.poll))
                jobs_after, batches_after = batch_totals(url)
            finally:
                proc.terminate()
                proc.wait(30)
        batches = batches_after - batches_before
        rows.append((size, len(load.latencies) / load.wall, load.failures,
                     (jobs_after - jobs_before) / batches if batches else 0.0,
                     percentile(load.latencies, 50)))
    kontext = make_kontext(args.weights)
    direct = {}
    for size in sizes:
        requests = [(body["prompt"], [png], Settings(seed=i, steps=args.steps,
                                                     speed=args.speed)) for i in range(size)]
        kontext.run_many(requests)  # warm-up
        times = []
        for _ in range(max(1, args.direct // size)):
            started = time.perf_counter()
            kontext.run_many(requests)
            times.append(time.perf_counter() - started)
        direct[size] = size / statistics.median(times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model "
          f"{kontext.model.preset.name} ({'random' if not args.weights else args.weights}); "
          f"{args.size}x{args.size} input, {args.steps} steps, speed {args.speed}; load average "
          f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'batch':>5}  {'direct run_many':>16}  {'API edits/s':>11}  {'mean batch':>10}  "
          f"{'API p50 (ms)':>12}  failures  (API: B clients, polls every {args.poll:g} s, "
          f"{args.duration:g} s)")
    for size, rate, failures, batch, p50 in rows:
        print(f"{size:>5}  {direct[size]:>10.2f} /s  {rate:>11.2f}  {batch:>10.2f}  "
              f"{p50 * 1000:>12.0f}  {failures:>8}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=40.0, help="load phase limit, s")
    parser.add_argument("--requests", type=int, default=300, help="load phase limit, edits")
    parser.add_argument("--sequential", type=int, default=15, help="edits one at a time")
    parser.add_argument("--direct", type=int, default=15, help="direct Kontext.run calls")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="input side, px")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--max-batch-images", type=int, default=4)
    parser.add_argument("--weights", default=None, help="a path, or 'embedded'")
    parser.add_argument("--speed", default="quality", choices=("quality", "balanced", "fast"))
    parser.add_argument("--batch-sizes", help="comma-separated: throughput against batch size")
    parser.add_argument("--paired", type=int, help="API overhead from N (API, direct) pairs")
    parser.add_argument("--serve-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_dir:
        serve(args.serve_dir, args.weights, args.max_batch_images)
        return
    torch.set_num_threads(1)
    png = input_png(args.size)
    body = {"prompt": "make the square green", "steps": args.steps, "speed": args.speed,
            "input_image": base64.b64encode(png).decode("ascii")}
    if args.batch_sizes:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        if any(b < 1 for b in sizes):
            parser.error("--batch-sizes must be positive")
        batch_sweep(args, body, png, sizes)
        return
    if args.paired:
        paired_overhead(args, body, png, args.paired)
        return
    load_start = os.getloadavg()[0]
    # 1-3. Through the API.
    with tempfile.TemporaryDirectory(prefix="load-serve-") as data_dir:
        proc, url = start_server(args, data_dir)
        try:
            asyncio.run(run_phase(url, body, 1, 2, 60, args.poll))  # warm-up
            seq = asyncio.run(run_phase(url, body, 1, args.sequential, args.duration,
                                        args.poll))
            jobs_before, batches_before = batch_totals(url)
            load = asyncio.run(run_phase(url, body, args.concurrency, args.requests,
                                         args.duration, args.poll))
            jobs_after, batches_after = batch_totals(url)
        finally:
            proc.terminate()
            proc.wait(30)
    # 4. Direct pipeline calls on the same inputs, with the server gone.
    from openkontext.pipeline import Settings

    kontext = make_kontext(args.weights)
    kontext.run(body["prompt"], [png], Settings(seed=0, steps=args.steps, speed=args.speed))
    direct = []
    for i in range(args.direct):
        started = time.perf_counter()
        kontext.run(body["prompt"], [png], Settings(seed=i, steps=args.steps, speed=args.speed))
        direct.append(time.perf_counter() - started)
    # Report.
    d = statistics.mean(direct)
    s = statistics.mean(seq.latencies)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); model "
          f"{kontext.model.preset.name} ({'random' if not args.weights else args.weights}); "
          f"{args.size}x{args.size} input, {args.steps} steps; load average "
          f"{load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"direct Kontext.run      : {d * 1000:7.1f} ms/edit (mean of {len(direct)}), "
          f"{1 / d:5.2f} edits/s")
    print(f"API, one at a time      : {s * 1000:7.1f} ms/edit mean, p50 "
          f"{percentile(seq.latencies, 50) * 1000:.1f} ms (n={len(seq.latencies)})")
    print(f"API overhead per request: {(s - d) * 1000:7.1f} ms ({(s - d) / d * 100:.0f}% of "
          f"the direct edit; polls every {args.poll * 1000:.0f} ms)")
    rate = len(load.latencies) / load.wall if load.wall else 0.0
    batches = batches_after - batches_before
    batch = (jobs_after - jobs_before) / batches if batches else 0.0
    print(f"API, {args.concurrency} concurrent clients: {rate:5.2f} edits/s sustained over "
          f"{load.wall:.1f} s (n={len(load.latencies)}, failures {load.failures}); latency "
          f"p50 {percentile(load.latencies, 50) * 1000:.0f} ms, p99 "
          f"{percentile(load.latencies, 99) * 1000:.0f} ms; mean batch {batch:.2f} jobs "
          f"(max_batch_images {args.max_batch_images})")


if __name__ == "__main__":
    main()
