"""How long the `openkontext` command takes to start, next to `python -c "import torch"`.

Each command runs as its own process, `--repeats` times, the commands taking turns so that
background load hits them all alike (one untimed round first warms the disk cache). The table
gives each command's median and fastest wall time and its median as a multiple of the median of
`import torch`; the edit is a whole `openkontext edit` of a 64 px Shapes World scene on the
embedded model. Then one more edit runs under `python -X importtime`: the time it spent in the
modules of torch, transformers, fastapi and sqlalchemy (or that it did not import them), and the
imports it spent the most time on (cumulative: each with everything it imported).

Usage: python benchmarks/startup.py [--repeats 5] [--top 10] [--timeout 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

SCENE = Path(__file__).resolve().parent.parent / "docs" / "scene.json"
INSTRUCTION = "make the circle blue"


def openkontext_command() -> list[str]:
    """The installed console script beside this Python, else the same entry point by -c."""
    script = Path(sys.executable).parent / "openkontext"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from openkontext.cli import main; sys.exit(main())"]


def commands(work: Path) -> dict[str, list[str]]:
    cli, py = openkontext_command(), sys.executable
    scene, out = str(work / "scene.png"), str(work / "out.png")
    return {
        'python -c "import torch"': [py, "-c", "import torch"],
        "openkontext --help": [*cli, "--help"],
        "openkontext edit --help": [*cli, "edit", "--help"],
        "openkontext edit (embedded model)": [*cli, "edit", scene, INSTRUCTION, "-o", out],
        "Kontext.load() in python -c": [
            py,
            "-c",
            "from openkontext import Kontext; Kontext.load()",
        ],
    }


def run_once(argv: list[str], timeout: float) -> float:
    """Wall seconds of one run; a failing command stops the benchmark with its output."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


HEAVY = ("torch", "transformers", "fastapi", "sqlalchemy")


def import_breakdown(argv: list[str], timeout: float, top: int) -> tuple[list[tuple], dict]:
    """(the `top` slowest imports the command's own code made, as (cumulative s, self s, name);
    for each HEAVY package, the seconds spent in its own modules, None if it was not imported).
    Imports nested in another import count in that one's cumulative time, so only the outermost
    are ranked."""
    if Path(argv[0]).name == "openkontext":  # run the script's file under -X importtime
        argv = [sys.executable, argv[0], *argv[1:]]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    rows, heavy = [], dict.fromkeys(HEAVY)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        package = name.strip().partition(".")[0]
        if package in heavy:
            heavy[package] = (heavy[package] or 0) + int(own) / 1e6
        if not name.startswith("  ", 1):  # outermost: one space after the bar, no indent
            rows.append((int(cumulative) / 1e6, int(own) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:top], heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--top", type=int, default=10, help="slowest imports to list")
    parser.add_argument("--timeout", type=float, default=60, help="seconds one run may take")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="openkontext-startup-"))
    try:
        cli = openkontext_command()
        subprocess.run(
            [*cli, "world", "render", str(SCENE), "-o", str(work / "scene.png")],
            check=True,
            capture_output=True,
            timeout=args.timeout,
        )
        runs = commands(work)
        load = os.getloadavg()[0]
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        print(
            f"python {sys.version.split()[0]}, torch {version('torch')}, {os.cpu_count()} "
            f"CPUs, OMP_NUM_THREADS={threads}; load average at start {load:.1f}"
        )
        started = time.perf_counter()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.repeats + 1):  # round 0 warms the disk cache, untimed
            for name, argv in runs.items():
                seconds = run_once(argv, args.timeout)
                if round_:
                    times[name].append(seconds)
        base = statistics.median(times['python -c "import torch"'])
        width = max(map(len, runs))
        print(f"{'command':{width}}  median (s)  fastest (s)  x import torch")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:{width}}  {median:10.2f}  {min(values):11.2f}  {median / base:14.2f}")
        edit = runs["openkontext edit (embedded model)"]
        slowest, heavy = import_breakdown(edit, args.timeout, args.top)
        packages = ", ".join(
            f"{m} {'not imported' if t is None else f'{t:.2f} s'}" for m, t in heavy.items()
        )
        print("\nimports of one edit (python -X importtime)")
        print(f"time in each package's own modules: {packages}")
        print(f"the {args.top} slowest imports, outermost only:")
        print(f"{'cumulative (s)':>14}  {'self (s)':>8}  module")
        for cumulative, own, name in slowest:
            print(f"{cumulative:14.3f}  {own:8.3f}  {name}")
        print(
            f"\n{args.repeats} timed rounds; load average at end {os.getloadavg()[0]:.1f}; "
            f"total {time.perf_counter() - started:.0f} s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
