"""The executor: one thread that takes jobs from the store and runs the pipeline.

HTTP handlers only write jobs to the store and `wake()` the worker; the worker claims the oldest
queued job, runs it off the event loop, writes progress and the outcome back, and hands finished
jobs with a webhook to `Webhooks`. On start it puts back jobs a killed process left running, so
they are finished after a restart. Cancellation is checked between denoising steps.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from openkontext import flow
from openkontext.files import atomic_write
from openkontext.imaging import ImageError, load_image
from openkontext.pipeline import Kontext, Settings
from openkontext.serve.metrics import Metrics
from openkontext.serve.moderation import ImageClassifier, PromptUpsampler
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore, State

log = logging.getLogger("openkontext.serve.worker")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
PROGRESS_INTERVAL = 0.2  # seconds between progress writes
CLEANUP_INTERVAL = 60.0  # seconds between sweeps for expired results


class _Stopping(Exception):
    """The job was interrupted by shutdown, not by its owner: it goes back in the queue."""


def input_dir(settings: ServeSettings, job_id: str) -> Path:
    return settings.inputs_dir / job_id


class Worker:
    def __init__(
        self,
        settings: ServeSettings,
        store: JobStore,
        kontext_factory: Callable[[], Kontext],
        metrics: Metrics,
        on_finished: Callable[[str], None] = lambda job_id: None,
        image_classifier: ImageClassifier | None = None,
        prompt_upsampler: PromptUpsampler | None = None,
    ):
        self.settings = settings
        self.store = store
        self.kontext_factory = kontext_factory
        self.metrics = metrics
        self.on_finished = on_finished  # called with the id of every job that has a webhook
        self.image_classifier = image_classifier
        self.prompt_upsampler = prompt_upsampler
        self.kontext: Kontext | None = None
        self.load_error: str | None = None
        self.current: str | None = None  # id of the job being run
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="openkontext-worker", daemon=True)
        self._last_cleanup = 0.0

    @property
    def state(self) -> str:
        return "error" if self.load_error else "ok" if self.kontext else "loading"

    def start(self) -> None:
        n = self.store.requeue_running()
        if n:
            log.info("put %d interrupted job(s) back in the queue", n)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop ----------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self.kontext = self.kontext_factory()
        except Exception as e:
            log.exception("loading the model failed")
            self.load_error = f"{type(e).__name__}: {e}"
            return
        while not self._stop.is_set():
            self._cleanup_expired()
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.current = job.id
            try:
                self._run(job)
            except Exception:  # the store or the disk failed; keep serving other jobs
                log.exception("job %s could not be recorded", job.id)
            finally:
                self.current = None

    def _run(self, job: Job) -> None:
        try:
            state, result, details = self._execute(job)
        except _Stopping:
            self.store.requeue(job.id)
            return
        except flow.Cancelled:
            state, result, details = State.CANCELLED, None, {"error": "cancelled by request"}
        except (ValueError, ImageError) as e:  # includes SizeError: a request we cannot do
            state, result, details = State.ERROR, None, {"error": str(e)}
        except Exception as e:
            log.exception("job %s failed", job.id)
            state, result, details = State.ERROR, None, {"error": f"internal error: {e}"}
        webhook = bool(job.params.get("webhook_url"))
        self.store.finish(job.id, state, result, details, webhook=webhook)
        if job.started_at is not None:
            self.metrics.job_seconds.observe(time.time() - job.started_at)
        shutil.rmtree(input_dir(self.settings, job.id), ignore_errors=True)
        if webhook:
            self.on_finished(job.id)

    def _execute(self, job: Job) -> tuple[State, dict | None, dict | None]:
        settings, params = self.settings, job.params
        kontext = self.kontext
        assert kontext is not None
        # 1. Inputs, stored as files at submission.
        folder = input_dir(settings, job.id)
        paths = sorted(folder.iterdir(), key=lambda f: f.name) if folder.exists() else []
        images = [load_image(f.read_bytes(), settings.image_limits) for f in paths]
        # 2. Prompt upsampling, when asked for.
        prompt = params["prompt"]
        if params.get("prompt_upsampling"):
            if self.prompt_upsampler is None:
                raise ValueError("prompt_upsampling is not available on this server")
            prompt = self.prompt_upsampler(prompt, images)
        # 3. The pipeline, with progress into the store and cancellation between steps.
        tier = settings.tiers.get(job.tier)
        steps = params.get("steps") or (tier.steps if tier else None)
        guidance = params.get("guidance") or (tier.guidance if tier else None)
        run_settings = Settings(
            seed=params.get("seed"), steps=steps, guidance=guidance,
            aspect_ratio=params.get("aspect_ratio"), width=params.get("width"),
            height=params.get("height"), num_images=params.get("num_images", 1),
        )
        last = [0.0]

        def on_step(i: int, n: int) -> None:
            now = time.monotonic()
            if i == n or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.store.set_progress(job.id, round(0.99 * i / n, 4))

        def cancelled() -> bool:
            if self._stop.is_set():
                raise _Stopping
            return self.store.cancel_requested(job.id)

        out = kontext.run(prompt, images, run_settings, on_step=on_step, cancelled=cancelled)
        # 4. Moderation of the outputs.
        tolerance = params.get("safety_tolerance", 2)
        if self.image_classifier is not None:
            verdict = self.image_classifier(out.images, tolerance)
            if verdict.flagged:
                return State.CONTENT_MODERATED, None, {"reason": verdict.reason}
        # 5. Files, written atomically.
        fmt = params.get("output_format", "png")
        encoded = out.encode(fmt, params.get("output_quality", 95))
        files = []
        for i, data in enumerate(encoded):
            name = f"{i}.{EXTENSIONS[fmt]}"
            atomic_write(settings.results_dir / job.id / name, data)
            files.append(name)
        started = job.started_at or time.time()
        return State.READY, {
            "files": files, "seeds": out.seeds, "prompt": out.prompt, "width": out.width,
            "height": out.height, "start_time": started, "end_time": time.time(),
        }, None

    def _cleanup_expired(self) -> None:
        now = time.time()
        if now - self._last_cleanup < CLEANUP_INTERVAL:
            return
        self._last_cleanup = now
        expired = self.store.finished_before(now - self.settings.result_ttl_seconds)
        for job_id in expired:
            shutil.rmtree(self.settings.results_dir / job_id, ignore_errors=True)
            shutil.rmtree(input_dir(self.settings, job_id), ignore_errors=True)
        self.store.delete(expired)
