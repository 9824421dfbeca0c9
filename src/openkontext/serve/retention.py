"""How long the service keeps what it is given and what it makes.

- Input images are stored as files at submission and deleted as soon as their job no longer
  needs them: when it finishes, whatever the outcome, or when it is cancelled while queued.
  With `keep_inputs` they stay until the job expires.
- A finished job, its result files and any inputs are deleted `result_ttl_seconds` after it
  finished. Until the sweep gets to it, an expired job already reads as not found.
- With `zero_retention` each result file is deleted by its first download (`take_once`).

The worker calls `sweep` every `sweep_interval` seconds; the sweep also removes input folders
left behind by a process that died between finishing a job and deleting them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore

ORPHAN_SECONDS = 600.0  # an input folder with no job row is a submission in flight until then


def input_dir(settings: ServeSettings, job_id: str) -> Path:
    return settings.inputs_dir / job_id


def result_dir(settings: ServeSettings, job_id: str) -> Path:
    return settings.results_dir / job_id


def sweep_interval(settings: ServeSettings) -> float:
    return min(60.0, settings.result_ttl_seconds / 2)


def expired(job: Job, settings: ServeSettings, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return job.finished_at is not None and job.finished_at < now - settings.result_ttl_seconds


def job_done(settings: ServeSettings, job_id: str) -> None:
    """A job has finished or was cancelled: its inputs go, unless configured to keep them."""
    if not settings.keep_inputs:
        shutil.rmtree(input_dir(settings, job_id), ignore_errors=True)


def sweep(settings: ServeSettings, store: JobStore, now: float | None = None) -> list[str]:
    """Delete expired jobs with their files, and inputs no job needs; -> the expired ids."""
    now = time.time() if now is None else now
    gone = store.finished_before(now - settings.result_ttl_seconds)
    for job_id in gone:
        shutil.rmtree(result_dir(settings, job_id), ignore_errors=True)
        shutil.rmtree(input_dir(settings, job_id), ignore_errors=True)
    store.delete(gone)
    folders = list(settings.inputs_dir.iterdir()) if settings.inputs_dir.is_dir() else []
    states = store.states([f.name for f in folders])
    for folder in folders:
        state = states.get(folder.name)
        if state is None:
            stale = now - folder.stat().st_mtime > ORPHAN_SECONDS
        else:
            stale = state.finished and not settings.keep_inputs
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
    return gone


def take_once(path: Path) -> bytes | None:
    """Read a file and delete it, atomically: of two concurrent callers one gets the bytes and
    the other None (as does any later caller)."""
    claimed = path.with_name(f".{path.name}.{uuid.uuid4().hex}.taken")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    try:
        return claimed.read_bytes()
    finally:
        claimed.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the last file of the job

