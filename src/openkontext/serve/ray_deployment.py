"""The model as a Ray Serve deployment: `KontextReplica`, one pipeline per replica.

A replica is sent job ids, never images or tensors: each call is (job id, the owner id of the
dispatcher that claimed it; see ray_executor.py). Serve gathers calls with `@serve.batch`; the
replica takes each job over in the store (`JobStore.hand_over`: from then on the job is the
replica's, under a lease it renews) and runs them as the local worker does, with the local
worker's own code: the same preparing, the same batching rule (`Plan.batch_key`, at most
`max_batch_images` images a batch), the same recording of outcomes, each only by the job's
owner and so exactly once. Inputs and results are files in the shared `data_dir`; progress and
cancel go through the store, so they reach whichever process asks. A replica that dies leaves
its jobs to be taken back (its pid gone, or its lease expired) and run again elsewhere.

Ray imports this module in each replica process; nothing runs at import.
"""

from __future__ import annotations

import asyncio
import logging
import os

from ray import serve

from openkontext.loras import LoraLibrary
from openkontext.pipeline import Kontext
from openkontext.serve.app import draws_photographs, load_pipeline
from openkontext.serve.classifiers import load_image_classifier
from openkontext.serve.facts import ModelFacts
from openkontext.serve.metrics import Metrics
from openkontext.serve.moderation import load_plugin
from openkontext.serve.sessions import SessionStore
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import JobStore, State
from openkontext.serve.upsampling import OpenAIChatUpsampler
from openkontext.serve.views import result_body
from openkontext.serve.webhooks import Webhooks
from openkontext.serve.worker import Worker, _Prepared

log = logging.getLogger("openkontext.serve.ray")
BATCH_WAIT_SECONDS = 0.05  # how long Serve holds a first call for companions
Call = tuple[str, str]  # (job id, the dispatcher's owner id)


def load_kontext(s: ServeSettings) -> Kontext:
    """The pipeline the settings name, loaded as the local worker loads it, with the operator's
    LoRA folder (by name only)."""
    kontext = load_pipeline(s)
    kontext.loras = LoraLibrary(s.loras_dir, allow_paths=False)
    return kontext


def batches(prepared: list[_Prepared], max_images: int) -> list[list[_Prepared]]:
    """Jobs grouped by batch key, in order of first appearance, each group cut into batches
    of at most `max_images` output images."""
    out: list[list[_Prepared]] = []
    open_batch: dict[tuple, list[_Prepared]] = {}
    for p in prepared:
        batch = open_batch.get(p.key)
        images = sum(q.settings.num_images for q in batch) if batch else 0
        if batch is None or images + p.settings.num_images > max_images:
            batch = open_batch[p.key] = []
            out.append(batch)
        batch.append(p)
    return out


class ReplicaWorker(Worker):
    """The local worker without its loop: Serve's batched calls drive it instead. Its owner id
    names this replica's process, so the API processes see at once when it dies."""

    def open(self) -> None:
        self._load()
        self._beat.start()  # renews the lease on `self.running`

    def close(self) -> None:
        self.stop(timeout=5.0)

    def run_calls(self, calls: list[Call]) -> list[str]:
        """Take over, prepare and run these jobs; -> each one's state after (a job taken back
        or finished elsewhere meanwhile is left alone)."""
        # 1. Take each job over from its dispatcher; one cancelled on the way ends here.
        held = []
        for job_id, dispatcher in calls:
            job = self.store.hand_over(job_id, dispatcher, self.owner, self.lease)
            if job is None:
                continue
            if job.cancel_requested:
                self._finish(job, (State.CANCELLED, None, {"error": "cancelled by request"}),
                             0.0)
                continue
            held.append(job)
        # 2. Prepare them (a job that cannot run is finished with its reason) and run them in
        # batches of compatible jobs, renewing the lease on every job not yet done.
        self.running = [job.id for job in held]
        try:
            prepared = [p for job in held if (p := self._prepare(job)) is not None]
            todo = batches(prepared, self.settings.max_batch_images)
            for i, batch in enumerate(todo):
                self.running = [p.job.id for later in todo[i:] for p in later]
                self._run_batch(batch)
        finally:
            self.running = []
            self._lost.clear()
        states = self.store.states([job_id for job_id, _ in calls])
        return [states[job_id].value if job_id in states else "gone" for job_id, _ in calls]


@serve.deployment(name="KontextReplica")
class KontextReplica:
    """One pipeline; `run` is the batched entry point the API processes call."""

    def __init__(self, settings: ServeSettings):
        s = settings
        if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
            _bind_grpc_to_loopback()
        store = JobStore(s.db_url)
        sessions = SessionStore(s, store)
        self.webhooks = Webhooks(s, store, lambda job: result_body(job, job.base_url, s))
        classifier, summary = load_image_classifier(
            s.image_classifier, s.image_classifier_weights, s.image_classifier_threshold,
            photographic=draws_photographs(s.weights))
        log.info("image classifier: %s", summary)
        self.worker = ReplicaWorker(
            s, store, lambda: load_kontext(s), Metrics(), on_finished=self.webhooks.submit,
            on_session_job=sessions.settle_job, image_classifier=classifier,
            prompt_upsampler=_upsampler(s),
        )
        self.worker.open()
        self.run.set_max_batch_size(s.max_batch_images)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=BATCH_WAIT_SECONDS)
    async def run(self, calls: list[Call]) -> list[str]:
        # Off the replica's event loop, so Serve's health checks and the next calls get in.
        return await asyncio.to_thread(self.worker.run_calls, calls)

    async def facts(self) -> ModelFacts:
        """What the API processes check requests against (facts.py), asked once by each."""
        return self.worker.facts

    def __del__(self):
        self.worker.close()
        self.webhooks.close()


def _bind_grpc_to_loopback() -> None:
    """On a loopback-only Ray (the one `openkontext serve` starts for itself), keep this
    replica's inter-deployment gRPC server on 127.0.0.1 too: Ray Serve 2.60 binds it to every
    interface ("[::]:0" in ray/serve/_private/replica.py), whatever the node's address."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    replica.add_port_to_grpc_server = lambda server, address: bind(
        server, address.replace("[::]", "127.0.0.1"))


def _upsampler(s: ServeSettings):
    """The prompt upsampler the settings configure, as create_app builds it."""
    upsampler = load_plugin(s.prompt_upsampler)
    if upsampler is None and s.upsampler_url and s.upsampler_model:
        upsampler = OpenAIChatUpsampler(s.upsampler_url, s.upsampler_model,
                                        api_key=s.upsampler_api_key,
                                        timeout=s.upsampler_timeout_seconds)
    return upsampler


def build(s: ServeSettings):
    """The deployment, bound to `s`."""
    return KontextReplica.options(**deployment_options(s)).bind(s)


def deployment_options(s: ServeSettings) -> dict:
    """Serve's options from our settings: fixed replicas or autoscaling on jobs per replica
    (the queue, as the dispatchers pass it on), the CPU and GPU share of each replica, and
    OMP_NUM_THREADS for its torch."""
    per_batch = s.max_batch_images
    options: dict = dict(
        ray_actor_options={
            "num_cpus": s.ray_num_cpus,
            "num_gpus": s.ray_num_gpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(s.threads or 1)}},
        },
        # One batch running and the next one gathering.
        max_ongoing_requests=2 * per_batch,
        # A replica scaled down finishes its batch first (a kontext-dev edit on one GPU); one
        # stopped sooner gives its jobs back, to run again elsewhere.
        graceful_shutdown_timeout_s=60.0,
    )
    if s.ray_autoscale is None:
        options["num_replicas"] = s.ray_replicas
    else:
        low, high = s.ray_autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            "target_ongoing_requests": s.ray_target_jobs_per_replica or per_batch,
        }
    return options


def app_builder(args: dict[str, str]):
    """The deployment for a Serve config file or a KubeRay RayService (`import_path:
    openkontext.serve.ray_deployment:app_builder`): settings from the OPENKONTEXT_* environment
    and the config's `args` (setting names, e.g. {"weights": "kontext-dev"})."""
    from openkontext.serve.settings import load_settings

    return build(load_settings(**args))
