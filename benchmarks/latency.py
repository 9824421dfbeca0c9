"""Latency of an edit on the embedded model, as a user meets it: p50 and p90 of a whole
`openkontext edit` process and of an edit in a process that loaded the model once, on a quiet
machine and with one core kept busy by another process, next to `python -c "import torch"`.

Three workloads take turns in every round, so background load hits them alike:

- `python -c "import torch"`: the floor for any process that runs a model;
- `openkontext edit` of the 64 px Shapes World scene of docs/scene.json ("make the circle
  blue", seed 0) as its own process: start-up, load, edit, PNG written;
- the same edit through `Kontext.edit` in this process (`Kontext.load()` once, one untimed
  warm-up edit first): what a server or a notebook pays per edit.

First --repeats quiet rounds (after one untimed round that warms the disk cache), then
--repeats rounds while a child process multiplies matrices on one core (as
`benchmarks/threads.py` does). Thread counts are the ones the processes choose themselves
(`openkontext.threads`, or OMP_NUM_THREADS when set). The table gives p50 and p90 of each
workload quiet and busy, busy/quiet at p50 and p90, and each p50 over `import torch`'s in the
same phase; the last lines say how much CPU other processes took meanwhile (from /proc/stat).

Usage: python benchmarks/latency.py [--repeats 7] [--timeout 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from openkontext.pipeline import Kontext
from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene
from startup import INSTRUCTION, SCENE, openkontext_command, run_once  # beside this script
from threads import Gauge, one_busy_core  # beside this script

IMPORT_TORCH = 'python -c "import torch"'
EDIT_PROCESS = "openkontext edit (process)"
EDIT_IN_PROCESS = "Kontext.edit (in-process)"


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (linear between the two nearest runs, as numpy's default)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def workloads(work: Path, timeout: float) -> dict:
    """name -> a function that runs it once and returns its wall seconds."""
    picture = to_pil(render(Scene.from_json(SCENE.read_text()), 64))
    picture.save(work / "scene.png")
    kontext = Kontext.load()
    kontext.edit(picture, INSTRUCTION, seed=0)  # untimed warm-up
    edit = [*openkontext_command(), "edit", str(work / "scene.png"), INSTRUCTION, "--seed", "0",
            "-o", str(work / "out.png")]

    def in_process() -> float:
        start = time.perf_counter()
        kontext.edit(picture, INSTRUCTION, seed=0)
        return time.perf_counter() - start

    return {
        IMPORT_TORCH: lambda: run_once([sys.executable, "-c", "import torch"], timeout),
        EDIT_PROCESS: lambda: run_once(edit, timeout),
        EDIT_IN_PROCESS: in_process,
    }


def rounds(runs: dict, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds, quiet and busy")
    parser.add_argument("--timeout", type=float, default=60, help="seconds one process may take")
    parser.add_argument("--busy-limit", type=float, default=300.0,
                        help="the busy process stops after this many seconds in any case")
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (for a p90)")
    began, load = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="openkontext-latency-") as tmp:
        runs = workloads(Path(tmp), args.timeout)
        rounds(runs, 1)  # untimed: disk cache
        quiet_gauge, busy_gauge = Gauge(), Gauge()
        with quiet_gauge.measure():
            quiet = rounds(runs, args.repeats)
        with one_busy_core(args.busy_limit) as child, busy_gauge.measure(child):
            busy = rounds(runs, args.repeats)

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, in-process edits at "
          f"{torch.get_num_threads()} thread(s); load average at start {load:.1f}")
    print(f"{args.repeats} rounds quiet, then {args.repeats} with one core busy; seconds")
    header = ["", "quiet p50", "quiet p90", "busy p50", "busy p90", "busy/quiet p50",
              "busy/quiet p90", "x torch quiet", "x torch busy"]
    rows = []
    for name in runs:
        q50, q90 = percentile(quiet[name], 50), percentile(quiet[name], 90)
        b50, b90 = percentile(busy[name], 50), percentile(busy[name], 90)
        rows.append([name, f"{q50:.2f}", f"{q90:.2f}", f"{b50:.2f}", f"{b90:.2f}",
                     f"{b50 / q50:.2f}", f"{b90 / q90:.2f}",
                     f"{q50 / percentile(quiet[IMPORT_TORCH], 50):.2f}",
                     f"{b50 / percentile(busy[IMPORT_TORCH], 50):.2f}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(x.ljust(wd) if i == 0 else x.rjust(wd)
                        for i, (x, wd) in enumerate(zip(r, widths, strict=True))))
    for label, gauge in (("quiet", quiet_gauge), ("busy", busy_gauge)):
        print(f"{label} rounds, cores used on average: this benchmark and its commands "
              f"{gauge.cores(gauge.own):.2f}, the busy process {gauge.cores(gauge.child):.2f}, "
              f"other processes {gauge.cores(gauge.others):.2f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}; total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
