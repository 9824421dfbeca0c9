"""The executor: one thread that takes jobs from the store and runs the pipeline in batches.

HTTP handlers only write jobs to the store and `wake()` the worker. The worker claims the oldest
queued job, claims the queued jobs that can share its batch, runs them all with one
`Kontext.run_many` call off the event loop, writes progress and outcomes back, and hands
finished jobs with a webhook to `Webhooks` and those that make session turns to the sessions
(`on_session_job`).

Every job it runs is held under a lease in the store (see store.py), renewed by a heartbeat
thread while the model runs. On start, and every few seconds after, it takes back jobs whose
lease expired or whose process on this host is gone, so a killed or hung process's jobs are
finished by whichever process is alive, once. A job whose lease this worker lost is dropped
without a word: its new owner finishes it. Cancellation is checked between the transformer's
blocks; a job cancelled while the server shuts down is recorded as cancelled, not requeued.

Batching rule: jobs share a batch when the pipeline plans them to the same steps, guidance,
output size, input-image sizes, LoRAs and speed (`Plan.batch_key`), up to `max_batch_images` output
images in all. Only the next BATCH_WINDOW queued jobs are looked at; a job that fits may run
before an older one that does not. A batch whose jobs were not all cancelled runs to the end,
and the cancelled ones are then recorded as cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from openkontext import flow
from openkontext.files import PRIVATE, atomic_write
from openkontext.imaging import ImageError, load_image
from openkontext.pipeline import Kontext, Result, Settings
from openkontext.serve import retention
from openkontext.serve.facts import ModelFacts
from openkontext.serve.inputs import over_budget
from openkontext.serve.metrics import Metrics
from openkontext.serve.moderation import ImageClassifier, PromptUpsampler
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import Job, JobStore, State, owner_dead, owner_id
from openkontext.serve.upsampling import UpsamplingError
from openkontext.serve.usage import Usage

log = logging.getLogger("openkontext.serve.worker")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
PROGRESS_INTERVAL = 0.2  # seconds between progress writes
BATCH_WINDOW = 16  # queued jobs looked at for companions of the oldest one
RECLAIM_SECONDS = 2.0  # most time between two looks for jobs of dead or hung processes
Outcome = tuple[State, dict | None, dict | None]  # state, result, details


class _Stopping(Exception):
    """The job was interrupted by shutdown, not by its owner: it goes back in the queue."""


class _LeaseLost(Exception):
    """Another process took the batch's jobs back after this one's lease expired."""


@dataclass
class _Prepared:
    """A claimed job with its inputs read and its prompt final, ready to join a batch."""

    job: Job
    prompt: str
    images: list[Image.Image]
    settings: Settings
    key: tuple  # Plan.batch_key


class Worker:
    def __init__(
        self,
        settings: ServeSettings,
        store: JobStore,
        kontext_factory: Callable[[], Kontext],
        metrics: Metrics,
        on_finished: Callable[[str], None] = lambda job_id: None,
        on_session_job: Callable[[str], None] = lambda job_id: None,
        image_classifier: ImageClassifier | None = None,
        prompt_upsampler: PromptUpsampler | None = None,
    ):
        self.settings = settings
        self.store = store
        self.kontext_factory = kontext_factory
        self.metrics = metrics
        self.on_finished = on_finished  # called with the id of every job that has a webhook
        self.on_session_job = on_session_job  # ... and of every job that makes session turns
        self.image_classifier = image_classifier
        self.prompt_upsampler = prompt_upsampler
        self.kontext: Kontext | None = None
        self.facts: ModelFacts | None = None  # what the routers check requests against
        self.load_error: str | None = None
        self.running: list[str] = []  # ids of the jobs being run
        self.owner = owner_id()  # this process, as the store's claims name it
        self.lease = settings.job_lease_seconds
        self._lost: set[str] = set()  # running jobs whose lease went to another process
        self._keys: dict[str, tuple | None] = {}  # batch keys of queued jobs looked at
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="openkontext-worker", daemon=True)
        self._beat = threading.Thread(target=self._heartbeat, name="openkontext-lease",
                                      daemon=True)
        self._last_sweep = 0.0
        self._last_reclaim = 0.0

    @property
    def state(self) -> str:
        return "error" if self.load_error else "ok" if self.facts else "loading"

    @property
    def current(self) -> str | None:
        """The oldest job of the running batch."""
        return self.running[0] if self.running else None

    def start(self) -> None:
        self._reclaim()
        self._thread.start()
        self._beat.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._beat.is_alive():
            self._beat.join(timeout)

    # -- leases ------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew the lease on the running jobs every third of a lease; note the ones lost."""
        while not self._stop.wait(self.lease / 3):
            running = list(self.running)
            try:
                held = self.store.heartbeat(running, self.owner, self.lease)
            except Exception:  # the store is down: retry; the lease may run out meanwhile
                log.exception("renewing the lease on jobs %s failed", running)
                continue
            lost = set(running) - held
            if lost:
                log.warning("jobs %s were taken back by another process", sorted(lost))
                self._lost |= lost

    def _reclaim(self) -> None:
        """Put back in the queue the jobs of processes that died or stopped renewing."""
        self._last_reclaim = time.monotonic()
        n = self.store.reclaim(lambda owner: owner_dead(owner, self.owner))
        if n:
            log.info("took back %d job(s) from processes that stopped", n)

    # -- the loop ----------------------------------------------------------------------------------

    def _load(self) -> None:
        self.kontext = self.kontext_factory()
        self.facts = ModelFacts.of(self.kontext)

    def _main(self) -> None:
        try:
            self._load()
        except Exception as e:
            log.exception("loading the model failed")
            self.load_error = f"{type(e).__name__}: {e}"
            return
        interval = retention.sweep_interval(self.settings)
        while not self._stop.is_set():
            try:
                self._sweep(interval)
                if time.monotonic() - self._last_reclaim >= min(self.lease / 2, RECLAIM_SECONDS):
                    self._reclaim()
                batch = self._claim_batch()
                if not batch:
                    self._wake.wait(min(1.0, interval))
                    self._wake.clear()
                    continue
                self._run_batch(batch)
            except Exception:  # the store or the disk failed; keep serving other jobs
                log.exception("jobs %s could not be recorded", self.running)
                time.sleep(0.1)
            finally:
                self.running = []
                self._lost.clear()

    def _sweep(self, interval: float) -> None:
        now = time.time()
        if now - self._last_sweep >= interval:
            self._last_sweep = now
            retention.sweep(self.settings, self.store, now)

    # -- forming a batch ---------------------------------------------------------------------------

    def _claim_batch(self) -> list[_Prepared]:
        """The oldest queued job that can run, and queued jobs that fit in its batch; [] when
        nothing is queued."""
        while (job := self.store.claim_next(self.owner, self.lease)) is not None:
            self.running = [job.id]
            first = self._prepare(job)
            if first is not None:
                return [first, *self._companions(first)]
        return []

    def _companions(self, first: _Prepared) -> list[_Prepared]:
        room = self.settings.max_batch_images - first.settings.num_images
        if room <= 0:
            return []
        queued = self.store.queued(BATCH_WINDOW)
        self._keys = {j.id: self._keys[j.id] for j in queued if j.id in self._keys}
        found: list[_Prepared] = []
        for job in queued:
            n = job.params.get("num_images", 1)
            if n > room or self._key_of(job) != first.key:
                continue
            claimed = self.store.claim(job.id, self.owner, self.lease)
            ready = self._prepare(claimed) if claimed is not None else None
            if ready is None:
                continue
            if ready.key != first.key:  # not expected: the key does not depend on the prompt
                self.store.requeue(job.id, self.owner)
                continue
            self.running.append(job.id)
            found.append(ready)
            room -= n
            if room <= 0:
                break
        return found

    def _key_of(self, job: Job) -> tuple | None:
        """The batch key a queued job would get (None when it cannot be planned), cached."""
        if job.id not in self._keys:
            try:
                plan = self.kontext.plan(job.params["prompt"], self._inputs(job),
                                         self._run_settings(job))
                self._keys[job.id] = plan.batch_key
            except Exception:  # it fails on its own turn, with the reason recorded
                self._keys[job.id] = None
        return self._keys[job.id]

    def _prepare(self, job: Job) -> _Prepared | None:
        """Read a claimed job's inputs, upsample its prompt and plan it; a job that cannot run
        is finished here with the reason, and None returned."""
        try:
            images = self._inputs(job)
            prompt = job.params["prompt"]
            if job.params.get("prompt_upsampling"):
                if self.prompt_upsampler is None:
                    raise ValueError("prompt_upsampling is not available on this server")
                prompt = self.prompt_upsampler(prompt, images)
            settings = self._run_settings(job)
            plan = self.kontext.plan(prompt, images, settings)
            if plan.megapixel_steps > self.settings.max_job_megapixel_steps:
                raise ValueError(over_budget(plan.megapixel_steps,
                                             self.settings.max_job_megapixel_steps))
            key = plan.batch_key
        except (ValueError, ImageError, UpsamplingError) as e:  # SizeError too: cannot do it
            self._finish(job, (State.ERROR, None, {"error": str(e)}), 0.0)
            return None
        except Exception as e:
            log.exception("job %s failed", job.id)
            self._finish(job, (State.ERROR, None, {"error": f"internal error: {e}"}), 0.0)
            return None
        return _Prepared(job, prompt, images, settings, key)

    def _inputs(self, job: Job) -> list[Image.Image]:
        """The input images, stored as files at submission."""
        folder = retention.input_dir(self.settings, job.id)
        paths = sorted(folder.iterdir(), key=lambda f: f.name) if folder.exists() else []
        return [load_image(f.read_bytes(), self.settings.image_limits) for f in paths]

    def _run_settings(self, job: Job) -> Settings:
        params, tier = job.params, self.settings.tiers.get(job.tier)
        return Settings(
            seed=params.get("seed"),
            steps=params.get("steps") or (tier.steps if tier else None),
            guidance=params.get("guidance") or (tier.guidance if tier else None),
            aspect_ratio=params.get("aspect_ratio"), width=params.get("width"),
            height=params.get("height"), num_images=params.get("num_images", 1),
            style_preset=params.get("style_preset"),
            loras=[(c["name"], c["scale"]) for c in params.get("loras") or []],
            speed=params.get("speed") or self.settings.speed,
        )

    # -- running a batch ---------------------------------------------------------------------------

    def _run_batch(self, batch: list[_Prepared]) -> None:
        kontext = self.kontext
        assert kontext is not None
        ids = [p.job.id for p in batch]
        self.metrics.batch_size.observe(len(batch))
        last = [0.0]

        def on_step(i: int, n: int) -> None:
            now = time.monotonic()
            if i == n or now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self.store.set_progress(ids, round(0.99 * i / n, 4), self.owner)

        def cancelled() -> bool:
            if self._stop.is_set():
                raise _Stopping
            if self._lost & set(ids):
                raise _LeaseLost
            return len(self.store.cancel_requested_among(ids)) == len(ids)

        # 1. The pipeline, once for the whole batch.
        started = time.monotonic()
        failure: Outcome | None = None
        results: list[Result] = []
        try:
            results = kontext.run_many([(p.prompt, p.images, p.settings) for p in batch],
                                       on_step=on_step, cancelled=cancelled)
        except _Stopping:
            cancelled_ids = self.store.cancel_requested_among(ids)
            for p in batch:
                if p.job.id in cancelled_ids:
                    outcome = (State.CANCELLED, None, {"error": "cancelled by request"})
                    self._finish(p.job, outcome, time.monotonic() - started)
                else:
                    self.store.requeue(p.job.id, self.owner)
            return
        except _LeaseLost:
            log.warning("dropped jobs %s: their lease went to another process", ids)
            return
        except flow.Cancelled:
            failure = (State.CANCELLED, None, {"error": "cancelled by request"})
        except Exception as e:
            if len(batch) > 1:  # e.g. out of memory: each job gets its own try
                log.warning("a batch of %d jobs failed (%s); running them one by one",
                            len(batch), e)
                for p in batch:
                    self.running = [p.job.id]
                    self._run_batch([p])
                return
            if isinstance(e, ValueError | ImageError):
                message = str(e)
            else:
                log.exception("job %s failed", ids[0])
                message = f"internal error: {e}"
            failure = (State.ERROR, None, {"error": message})
        seconds = time.monotonic() - started
        self.metrics.throughput.record(len(batch), seconds)
        # 2. Each job's outcome, with its share of the batch's time.
        images = sum(p.settings.num_images for p in batch)
        cancelled_ids = self.store.cancel_requested_among(ids) if failure is None else set()
        for i, p in enumerate(batch):
            if failure is not None:
                outcome = failure
            elif p.job.id in cancelled_ids:
                outcome = (State.CANCELLED, None, {"error": "cancelled by request"})
            else:
                outcome = self._deliver(p, results[i])
            self._finish(p.job, outcome, seconds * p.settings.num_images / images)

    def _deliver(self, p: _Prepared, out: Result) -> Outcome:
        """Moderate the outputs, then write them atomically."""
        params = p.job.params
        try:
            if self.image_classifier is not None:
                verdict = self.image_classifier(out.images, params.get("safety_tolerance", 2))
                if verdict.flagged:
                    return State.CONTENT_MODERATED, None, {"reason": verdict.reason}
            fmt = params.get("output_format", "png")
            files = []
            for i, data in enumerate(out.encode(fmt, params.get("output_quality", 95))):
                name = f"{i}.{EXTENSIONS[fmt]}"
                atomic_write(retention.result_dir(self.settings, p.job.id) / name, data,
                             mode=PRIVATE)
                files.append(name)
        except Exception as e:
            log.exception("job %s failed", p.job.id)
            return State.ERROR, None, {"error": f"internal error: {e}"}
        return State.READY, {
            "files": files, "seeds": out.seeds, "prompt": out.prompt, "width": out.width,
            "height": out.height, "start_time": p.job.started_at or time.time(),
            "end_time": time.time(),
        }, {"notice": out.notice} if out.notice else None

    def _finish(self, job: Job, outcome: Outcome, compute_seconds: float) -> None:
        state, result, details = outcome
        usage = Usage(jobs=1, compute_seconds=compute_seconds)
        if state == State.READY and result is not None:
            usage.images = len(result["files"])
            usage.megapixels = usage.images * result["width"] * result["height"] / 1e6
        webhook = bool(job.params.get("webhook_url"))
        if not self.store.finish(job.id, state, result, details, webhook=webhook,
                                 charge=(job.api_key_hash, usage), owner=self.owner):
            log.warning("job %s was finished or taken back elsewhere; its outcome here (%s) "
                        "is dropped", job.id, state)
            return
        if job.started_at is not None:
            self.metrics.job_seconds.observe(time.time() - job.started_at)
        retention.job_done(self.settings, job.id)
        if job.params.get("session"):
            try:
                self.on_session_job(job.id)
            except Exception:  # the next read of the session brings its turns up to date
                log.exception("the session turns of job %s could not be updated", job.id)
        if webhook:
            self.on_finished(job.id)
