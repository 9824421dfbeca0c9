"""How many CPU threads torch gets: the one place the pipeline's thread count is chosen.

The rule, from measurement (benchmarks/threads.py; figures in docs/benchmarks.md, "Threads"):
a model whose transformer step is small work runs on **one thread**; a larger one on every
physical core this process may use (torch's own default). Work is multiply-adds of one step
at the preset's native size: transformer parameters x tokens (the output's and one reference's)
x images in the batch. Below SMALL_WORK (5e11) it is small: the embedded mini model does about
1.2e9 per image (9.2M parameters x 128 tokens), FLUX.1 Kontext [dev] about 1e14 (12B x 8,192).

Why, measured on 2 cores with another process keeping one of them busy: torch splits every
operation between its threads and waits for the slowest, and the thread that shares the busy
core waits its turn from the scheduler at each of the thousands of small operations of an edit.
A mini edit with 2 threads went from 0.29 s quiet to 2.7 s (batch 4: 0.82 s to 7.1 s; other
runs saw up to 35 s); with one thread from 0.41 s to 0.45 s: within 1.1x of its own quiet time
and 1.5-1.9x of the fastest quiet time, at batch 1 and 4. One thread costs a quiet machine
1.4-1.9x at these sizes. Per transformer step, 2 threads under load took 14x, 2.7x, 2.0x, 1.4x,
1.4x and 1.16x as long as one thread at 1.2e9, 1.9e10, 7.4e10, 1.5e11, 2.9e11 and 5.9e11
multiply-adds, and about half as long when quiet (from 1.9e10): from about SMALL_WORK more
threads cost little under load and halve the time on a quiet machine.

An explicit count wins, then OMP_NUM_THREADS (the standard way to pin a process), then the rule.
Inter-op threads are left alone: the pipeline starts no inter-op work (no `torch.jit.fork`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from openkontext.model import LoadedModel

SMALL_WORK = 5e11  # multiply-adds of one transformer step; below it, one thread


def step_work(model: LoadedModel, batch: int = 1, tokens: int | None = None) -> float:
    """Multiply-adds of one transformer step, roughly: parameters x image tokens x images. The
    tokens default to the preset's native size: the output's and one same-sized reference's."""
    if tokens is None:
        side = model.preset.native_size // model.preset.latent_multiple  # tokens along a side
        tokens = 2 * side * side
    parameters = sum(p.numel() for p in model.flux.parameters())
    return float(parameters * tokens * batch)


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyperthread siblings count once);
    the CPU count where /proc/cpuinfo or the affinity mask is not available."""
    try:
        allowed = os.sched_getaffinity(0)
        text = Path("/proc/cpuinfo").read_text()
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for block in text.strip().split("\n\n"):
        lines = (line.partition(":") for line in block.split("\n"))
        fields = {key.strip(): value.strip() for key, _, value in lines}
        if fields.get("processor", "").isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
    return len(cores) or len(allowed)


def threads_for_work(work: float) -> int:
    """The rule: 1 thread below SMALL_WORK multiply-adds a step, else every physical core."""
    return 1 if work < SMALL_WORK else physical_cores()


def choose_threads(model: LoadedModel, batch: int = 1) -> int:
    """The rule for `model` at its native size, `batch` images at a time."""
    return threads_for_work(step_work(model, batch))


def env_threads() -> int | None:
    """OMP_NUM_THREADS when it names a positive count (its first level, as in "4,2"), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def check(threads: int | None) -> int | None:
    """`threads` if None or a positive count, else ValueError."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return threads


def apply(threads: int | None, model: LoadedModel) -> int:
    """Set torch's thread count for running `model`: `threads` when given, else
    OMP_NUM_THREADS when set, else `choose_threads(model)`. -> the count set.

    torch keeps the count per OS thread once that thread has run an operation, so call this
    on the thread that will run the model (the CLI's, the HTTP worker's)."""
    count = check(threads) or env_threads() or choose_threads(model)
    torch.set_num_threads(count)
    return count
