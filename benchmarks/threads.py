"""How many torch threads should an edit use? Edits at 1 and 2 threads, on a quiet machine and
with one core kept busy by another process, next to what `openkontext.threads` chooses.

Workloads, each at batch (num_images) 1 and 4, through `Kontext.run` (the whole edit: text,
reference encoding, 16 denoising steps, decoding, paste-back):

- the embedded model (`Kontext.load()`), editing the 64 px Shapes World scene of
  docs/scene.json;
- the largest preset in the registry, `mini-fine-deep` with random weights, at its largest
  output (128 px: 4x the output tokens), the same 64 px scene as the reference.

With --steps, one transformer step (a forward, no edit) of models too large for the pipeline's
mini presets instead: the same layout as mini-fine with wider layers and more tokens, from the
embedded model's step up to about 6e11 multiply-adds, to see from what size 2 threads under
load stop costing more than 1 (the policy's SMALL_WORK).

For each row the quiet cells run first (one untimed run at each thread count, then the timed
ones), then the busy cells, while a child process multiplies matrices in a loop on one core
(numpy, one BLAS thread, pinned nowhere; it stops when this process stops or after
--busy-limit seconds). A cell is the median of --runs runs, or of those begun within --budget
seconds; an edit still running after --budget seconds is cancelled (between transformer
blocks), the cell ends, and it shows ">": its median counts that edit at the time it had
reached, so it is a lower bound. The table gives each cell in seconds, busy/quiet at each thread
count, and the policy's choice (`openkontext.threads`, without OMP_NUM_THREADS) with its busy
time as a multiple of its quiet time and of the fastest quiet time. The last lines say how
much CPU the busy process and all other processes took meanwhile (from /proc/stat), so a run
on a machine that was not quiet shows it.

Usage: python benchmarks/threads.py [--runs 5] [--budget 8] [--threads 1,2] [--steps]
           [--busy-limit 300] [--no-large]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from openkontext import flow
from openkontext.model import Flux
from openkontext.model.presets import get_preset
from openkontext.pipeline import Kontext, Settings
from openkontext.threads import choose_threads, physical_cores, step_work, threads_for_work
from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene

SCENE = Path(__file__).resolve().parent.parent / "docs" / "scene.json"
INSTRUCTION = "make the circle blue"
TICKS = os.sysconf("SC_CLK_TCK")
TEXT_TOKENS = 32  # the sentence encoder's padded length, in --steps forwards
# --steps: (hidden size, double blocks, single blocks, image tokens, batch)
LADDER = [(256, 2, 4, 128, 1), (256, 2, 4, 512, 4), (512, 2, 4, 512, 4), (512, 2, 4, 1024, 4),
          (1024, 2, 4, 512, 4), (1024, 2, 4, 1024, 4)]

# One core's worth of work that is not Python's: 256x256 float64 products, renormalised.
BUSY = """
import os, sys, time
import numpy as np
a = np.random.default_rng(0).random((256, 256))
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < end and os.getppid() == parent:
    a = a @ a
    a /= np.abs(a).max()
"""

Run = Callable[[float], tuple[float, bool]]  # deadline -> (seconds, cancelled)


@dataclass
class Case:
    label: str
    batch: int
    work: float  # multiply-adds of one transformer step
    chosen: int  # the policy's thread count
    run: Run


@dataclass
class Cell:
    seconds: float  # median
    runs: int
    cut: bool  # a run was cancelled: `seconds` is a lower bound

    def __str__(self) -> str:
        return f"{'>' if self.cut else ''}{self.seconds:.2f}"


def ratio(busy: Cell, quiet: Cell) -> str:
    """busy / quiet; ">" when busy is a lower bound, "?" when quiet is."""
    mark = "?" if quiet.cut else ">" if busy.cut else ""
    return f"{mark}{busy.seconds / quiet.seconds:.2f}"


def busy_jiffies() -> int:
    """CPU time of the whole machine that was not idle, in clock ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def process_jiffies(pid: int, children: bool = False) -> int:
    """CPU time of a process (all threads), with `children` also that of the children it has
    waited for (the commands a benchmark runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return own + (int(fields[13]) + int(fields[14]) if children else 0)  # cutime + cstime


class Gauge:
    """CPU taken while measuring: by this process (and the children it waited for meanwhile),
    by the busy child, by everything else."""

    def __init__(self):
        self.wall = self.machine = self.own = self.child = 0.0

    @contextmanager
    def measure(self, child: int | None = None) -> Iterator[None]:
        t0, m0 = time.monotonic(), busy_jiffies()
        o0 = process_jiffies(os.getpid(), children=True)
        c0 = process_jiffies(child) if child else 0
        yield
        c1 = process_jiffies(child) if child else 0
        self.wall += time.monotonic() - t0
        self.machine += (busy_jiffies() - m0) / TICKS
        self.own += (process_jiffies(os.getpid(), children=True) - o0) / TICKS
        self.child += (c1 - c0) / TICKS

    def cores(self, what: float) -> float:
        return what / self.wall if self.wall else 0.0

    @property
    def others(self) -> float:
        return max(0.0, self.machine - self.own - self.child)


@contextmanager
def one_busy_core(limit: float) -> Iterator[int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", BUSY, str(limit)], env=env)
    try:
        time.sleep(0.5)  # numpy imported, the loop running
        yield child.pid
    finally:
        child.kill()
        child.wait()


def measure(run: Run, threads: int, runs: int, budget: float, warm: bool) -> Cell:
    """Runs one after another until `runs` are done or `budget` seconds have passed; a run
    still going after `budget` seconds is cancelled, and the cell ends with it."""
    torch.set_num_threads(threads)
    if warm and run(time.perf_counter() + budget)[1]:
        return Cell(budget, 0, True)
    start = time.perf_counter()
    times, cut = [], False
    while len(times) < runs and not cut and time.perf_counter() - start < budget:
        seconds, cut = run(time.perf_counter() + budget)
        times.append(seconds)
    return Cell(statistics.median(times), len(times), cut)


def edit_case(label: str, kontext: Kontext, size: int, batch: int) -> Case:
    """A whole edit of the 64 px scene to a `size` px output."""
    picture = to_pil(render(Scene.from_json(SCENE.read_text()), 64))
    settings = Settings(seed=0, num_images=batch, width=size, height=size)
    m = kontext.model.preset.latent_multiple
    work = step_work(kontext.model, batch, (size // m) ** 2 + (64 // m) ** 2)

    def run(deadline: float) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            kontext.run(INSTRUCTION, [picture], settings,
                        cancelled=lambda: time.perf_counter() > deadline)
        except flow.Cancelled:
            return time.perf_counter() - started, True
        return time.perf_counter() - started, False

    return Case(label, batch, work, choose_threads(kontext.model, batch), run)


def step_case(hidden: int, double: int, single: int, tokens: int, batch: int) -> Case:
    """One forward of a mini-fine-shaped transformer `hidden` wide (random weights)."""
    base = get_preset("mini-fine").flux
    params = dataclasses.replace(base, hidden_size=hidden, num_heads=hidden // 64, depth=double,
                                 depth_single_blocks=single)
    flux = Flux(params).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    inputs = {  # (B, tokens, channels) and their (B, tokens, 3) positions
        "img": torch.randn(batch, tokens, params.in_channels, generator=gen),
        "img_ids": torch.zeros(batch, tokens, 3),
        "txt": torch.randn(batch, TEXT_TOKENS, params.context_in_dim, generator=gen),
        "txt_ids": torch.zeros(batch, TEXT_TOKENS, 3),
        "timesteps": torch.full((batch,), 0.5),
        "y": torch.randn(batch, params.vec_in_dim, generator=gen),
    }
    parameters = sum(p.numel() for p in flux.parameters())
    work = float(parameters * tokens * batch)

    def run(deadline: float) -> tuple[float, bool]:  # one forward is not cancellable
        started = time.perf_counter()
        with torch.no_grad():
            flux(**inputs)
        return time.perf_counter() - started, False

    label = f"step: {parameters / 1e6:.0f}M params, {tokens} tokens"
    return Case(label, batch, work, threads_for_work(work), run)


def cases(steps: bool, large: bool) -> Iterator[Case]:
    if steps:
        for shape in LADDER:
            yield step_case(*shape)
        return
    kontext = Kontext.load(threads=1)
    for batch in (1, 4):
        yield edit_case("mini (embedded), 64 px", kontext, 64, batch)
    if large:
        kontext = Kontext.load("random:mini-fine-deep", threads=1)
        for batch in (1, 4):
            yield edit_case("mini-fine-deep (random), 128 px", kontext, 128, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (at most)")
    parser.add_argument("--budget", type=float, default=8.0,
                        help="seconds in which a cell begins its runs, and most one edit runs")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--steps", action="store_true",
                        help="single transformer steps of growing size instead of edits")
    parser.add_argument("--busy-limit", type=float, default=300.0,
                        help="the busy process stops after this many seconds in any case")
    parser.add_argument("--no-large", dest="large", action="store_false",
                        help="only the embedded model")
    args = parser.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    began = time.monotonic()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs ({physical_cores()} physical "
          f"cores), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    what = "transformer steps" if args.steps else "edits"
    print(f"median of up to {args.runs} {what} per cell (seconds) begun within {args.budget:g} "
          "s; busy = another process keeps one core busy")
    quiet_gauge, busy_gauge = Gauge(), Gauge()
    header = (["workload", "batch", "work/step"]
              + [f"quiet {n}t" for n in counts] + [f"busy {n}t" for n in counts]
              + [f"busy/quiet {n}t" for n in counts]
              + ["policy", "busy/quiet", "busy/best quiet"])
    rows = []
    for case in cases(args.steps, args.large):
        with quiet_gauge.measure():
            quiet = {n: measure(case.run, n, args.runs, args.budget, True) for n in counts}
        with one_busy_core(args.busy_limit) as child, busy_gauge.measure(child):
            busy = {n: measure(case.run, n, args.runs, args.budget, False) for n in counts}
        policy = ["-", "-"]
        if case.chosen in counts:
            fastest = min(quiet.values(), key=lambda c: c.seconds)
            policy = [ratio(busy[case.chosen], quiet[case.chosen]),
                      ratio(busy[case.chosen], fastest)]
        rows.append([case.label, str(case.batch), f"{case.work:.1e}"]
                    + [str(quiet[n]) for n in counts] + [str(busy[n]) for n in counts]
                    + [ratio(busy[n], quiet[n]) for n in counts]
                    + [f"{case.chosen}t", *policy])
        print(f"  done: {case.label}, batch {case.batch} ({time.monotonic() - began:.0f} s)",
              file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(x.ljust(wd) if i == 0 else x.rjust(wd)
                        for i, (x, wd) in enumerate(zip(r, widths, strict=True))))
    print(f"quiet cells: other processes used {quiet_gauge.cores(quiet_gauge.others):.2f} "
          f"cores on average")
    print(f"busy cells: the busy process used {busy_gauge.cores(busy_gauge.child):.2f} cores, "
          f"other processes {busy_gauge.cores(busy_gauge.others):.2f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}; total benchmark time "
          f"{time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
