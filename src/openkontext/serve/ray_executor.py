"""The Ray executor: this API process's dispatcher to a Ray Serve deployment of the model.

It stands where the local `Worker` stands (the routers read `state`, `load_error`, `facts`
and call `wake`), but runs no model: the model lives in `KontextReplica`s (ray_deployment.py),
one pipeline each, on whatever nodes Ray gives them. The FastAPI app stays the API in front,
stateless: any number of API processes may share one store and one deployment. The model's
facts (its sizes, style presets and layers, facts.py) are asked of a replica once the
deployment is up, so requests are checked here at submission as the local worker's are; until
then this process reports "loading", as a local worker does while its model loads.

A dispatcher thread claims queued jobs in the store under this process's owner id and a lease
(as the local worker claims them), renews that lease while they wait, and sends each job's id
to the deployment; the replica that gets it takes the claim over (`JobStore.hand_over`) and
from then on holds the lease itself. So a job is always owned by a live process or put back:
a replica that dies is seen at once on this host (its pid is gone) or when its lease expires
elsewhere, and its jobs are taken back and dispatched again; a job is recorded only by its
owner, so it finishes exactly once. Up to `capacity` jobs are out at once (two batches for
each replica the deployment may have), so Serve's queue, and with it the autoscaler, follows
the store's queue.

Without `ray_address` a local Ray is started (loopback only) and stopped with the server;
with one, the first API process deploys the application and the others use it, and it keeps
running (and finishing its jobs) when they stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openkontext.serve import retention
from openkontext.serve.facts import ModelFacts
from openkontext.serve.metrics import Metrics
from openkontext.serve.settings import ServeSettings
from openkontext.serve.store import JobStore, State, owner_dead, owner_id

log = logging.getLogger("openkontext.serve.ray")
RECLAIM_SECONDS = 2.0  # most time between two looks for jobs of dead or hung processes
STATUS_SECONDS = 2.0  # how long a look at the deployment's replicas is reused for /metrics
DEPLOYMENT = "KontextReplica"


class RayExecutor:
    def __init__(self, settings: ServeSettings, store: JobStore, metrics: Metrics):
        # Replicas find inputs and write results by path: the same absolute path everywhere.
        self.settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        self.store = store
        self.facts: ModelFacts | None = None  # the replicas' model's, once one answers
        self.load_error: str | None = None
        self.prompt_upsampler = None  # the replicas load their own, from the settings
        self.owner = owner_id()
        self.lease = settings.job_lease_seconds
        self.in_flight: set[str] = set()  # sent to the deployment, its call not yet back
        self._calls: dict[str, object] = {}  # job id -> its DeploymentResponse
        self.dispatched = 0  # calls made since start
        self._handle = None
        self._started_ray = False
        self._ray_processes: set[tuple[int, str]] = set()  # the local Ray's (pid, start time)
        self._replicas: tuple[float, dict[str, int]] = (0.0, {})  # (when looked, by state)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="openkontext-ray")
        self._thread = threading.Thread(target=self._main, name="openkontext-dispatch",
                                        daemon=True)
        self._beat = threading.Thread(target=self._heartbeat, name="openkontext-lease",
                                      daemon=True)
        self._last_sweep = 0.0
        self._last_reclaim = 0.0
        metrics.sources.append(self.metric_lines)

    @property
    def capacity(self) -> int:
        """Jobs out to the deployment at once: two batches for each replica it may have."""
        s = self.settings
        replicas = s.ray_autoscale[1] if s.ray_autoscale else s.ray_replicas
        return 2 * s.max_batch_images * replicas

    @property
    def state(self) -> str:
        return "error" if self.load_error else "ok" if self.facts is not None else "loading"

    @property
    def running(self) -> list[str]:
        return sorted(self.in_flight)

    def start(self) -> None:
        self._reclaim()
        self._thread.start()
        self._beat.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dispatching and give back the jobs not yet handed to a replica. A local Ray is
        shut down (its replicas' jobs go back in the queue); a cluster's replicas finish
        theirs."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._beat):
            if thread.is_alive():
                thread.join(timeout)
        # Calls still out are cancelled (Ray must not shut down under them; a replica that
        # has taken its job over runs it to the end all the same) and their jobs given back.
        for response in list(self._calls.values()):
            response.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for job_id in list(self.in_flight):  # calls that were never made
            self._give_back(job_id)
        if self._started_ray:
            # The whole local cluster goes (serve.shutdown() would wait 30 s for its controller
            # here); its replicas' jobs go back in the queue as soon as their processes exit.
            ours = self._ray_processes | _descendants(os.getpid())
            _shutdown_ray()
            _kill(ours)  # what ray.shutdown() leaves: Ray's agents outlive their raylet
            deadline = time.monotonic() + 5.0
            while self.store.count_by_state()[State.RUNNING] and time.monotonic() < deadline:
                self._reclaim()
                time.sleep(0.2)
        else:
            _shutdown_ray()

    # -- Ray ---------------------------------------------------------------------------------------

    def _connect(self) -> None:
        """Join the cluster (or start a local one) and deploy the model, or find it deployed."""
        # Ray's C++ fatal-signal handler would turn the SIGTERM that stops this server into an
        # abort in the middle of the graceful stop.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        # Nor does this process export Ray's own metrics: the exporter's thread is what
        # ray.shutdown() hangs on (its join in the core worker's destructor).
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
        if not self.settings.ray_address:
            # A one-machine Ray on loopback only (on Linux Ray otherwise listens on every
            # interface, for other nodes to join; the variable's name says macOS and Windows).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        from ray import serve

        from openkontext.serve.ray_deployment import build

        s = self.settings
        if s.ray_address:
            ray.init(address=s.ray_address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            replicas = s.ray_autoscale[1] if s.ray_autoscale else s.ray_replicas
            # "local": a new Ray even where `ray start` left a cluster's address behind.
            ray.init(address="local", num_cpus=max(1, math.ceil(replicas * s.ray_num_cpus)),
                     include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
            self._started_ray = True
        # The API is this process's FastAPI app: Serve runs no HTTP proxy of its own.
        serve.start(proxy_location="Disabled")
        app = serve.status().applications.get(s.ray_app_name)
        if app is not None and app.status in ("RUNNING", "DEPLOYING"):
            log.info("using the running Serve application %r", s.ray_app_name)
            self._handle = serve.get_app_handle(s.ray_app_name)
        else:
            log.info("deploying the model to Ray Serve as %r", s.ray_app_name)
            self._handle = serve.run(build(s), name=s.ray_app_name, route_prefix=None)
            if self._started_ray:  # the raylet may be gone before stop() looks for its children
                self._ray_processes = _descendants(os.getpid())
        # Waits for a replica that has loaded the model (one still deploying, or scaled to zero).
        self.facts = self._handle.facts.remote().result()

    def replicas(self) -> dict[str, int]:
        """The deployment's replicas by state (RUNNING, STARTING, ...), looked up at most every
        STATUS_SECONDS."""
        when, counts = self._replicas
        if self._handle is None or time.monotonic() - when < STATUS_SECONDS:
            return counts
        from ray import serve

        try:
            app = serve.status().applications.get(self.settings.ray_app_name)
            deployment = app.deployments.get(DEPLOYMENT) if app else None
            counts = {str(k): n for k, n in (deployment.replica_states if deployment else {})
                      .items()}
        except Exception:  # the cluster is unreachable: say so by reporting none
            log.exception("reading the Serve status failed")
            counts = {}
        self._replicas = (time.monotonic(), counts)
        return counts

    # -- the loop ----------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._connect()
        except Exception as e:
            log.exception("starting the Ray Serve deployment failed")
            self.load_error = f"{type(e).__name__}: {e}"
            return
        interval = retention.sweep_interval(self.settings)
        while not self._stop.is_set():
            try:
                now = time.time()
                if now - self._last_sweep >= interval:
                    self._last_sweep = now
                    retention.sweep(self.settings, self.store, now)
                if time.monotonic() - self._last_reclaim >= min(self.lease / 2, RECLAIM_SECONDS):
                    self._reclaim()
                if not self._dispatch():
                    self._wake.wait(min(1.0, interval))
                    self._wake.clear()
            except Exception:  # the store or the cluster failed; keep trying
                log.exception("dispatching jobs failed")
                time.sleep(0.5)

    def _dispatch(self) -> int:
        """Claim queued jobs while there is room and send them; -> how many were sent."""
        sent = 0
        while len(self.in_flight) < self.capacity and not self._stop.is_set():
            job = self.store.claim_next(self.owner, self.lease)
            if job is None:
                break
            with self._lock:
                self.in_flight.add(job.id)
                self.dispatched += 1
            self._pool.submit(self._call, job.id)
            sent += 1
        return sent

    def _call(self, job_id: str) -> None:
        """One job's round trip to a replica; a call that fails gives the job back."""
        try:
            response = self._calls[job_id] = self._handle.run.remote((job_id, self.owner))
            response.result()
        except Exception as e:  # the replica died, the cluster went away, or we stop
            if not self._stop.is_set():
                log.warning("job %s: its call to the deployment failed (%s: %s)", job_id,
                            type(e).__name__, e)
            self._give_back(job_id)
            self._reclaim()
        finally:
            with self._lock:
                self.in_flight.discard(job_id)
                self._calls.pop(job_id, None)
            self._wake.set()

    def _give_back(self, job_id: str) -> None:
        """A job still this process's (never handed to a replica): cancelled if its owner asked,
        else back in the queue."""
        if self.store.cancel_requested(job_id):
            self.store.finish(job_id, State.CANCELLED, None, {"error": "cancelled by request"},
                              owner=self.owner)
            retention.job_done(self.settings, job_id)
        else:
            self.store.requeue(job_id, self.owner)

    # -- leases ------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew the lease on the jobs waiting for a replica, every third of a lease."""
        while not self._stop.wait(self.lease / 3):
            try:
                self.store.heartbeat(list(self.in_flight), self.owner, self.lease)
            except Exception:  # the store is down: retry; the lease may run out meanwhile
                log.exception("renewing the lease on waiting jobs failed")

    def _reclaim(self) -> None:
        """Put back in the queue the jobs of replicas and API processes that died or hung."""
        self._last_reclaim = time.monotonic()
        n = self.store.reclaim(lambda owner: owner_dead(owner, self.owner))
        if n:
            log.info("took back %d job(s) from processes that stopped", n)
            self._wake.set()

    # -- metrics -----------------------------------------------------------------------------------

    def metric_lines(self) -> list[str]:
        s = self.settings
        low, high = s.ray_autoscale or (s.ray_replicas, s.ray_replicas)
        return [
            "# HELP openkontext_replicas Model replicas of the Ray Serve deployment, by state.",
            "# TYPE openkontext_replicas gauge",
            *(f'openkontext_replicas{{state="{k}"}} {n}' for k, n in self.replicas().items()),
            "# HELP openkontext_replicas_min Fewest replicas the deployment may scale to.",
            "# TYPE openkontext_replicas_min gauge",
            f"openkontext_replicas_min {low}",
            "# HELP openkontext_replicas_max Most replicas the deployment may scale to.",
            "# TYPE openkontext_replicas_max gauge",
            f"openkontext_replicas_max {high}",
            "# HELP openkontext_in_flight_jobs Jobs this API process has sent to replicas and "
            "not yet heard back about.",
            "# TYPE openkontext_in_flight_jobs gauge",
            f"openkontext_in_flight_jobs {len(self.in_flight)}",
            "# HELP openkontext_dispatched_total Calls this API process made to replicas.",
            "# TYPE openkontext_dispatched_total counter",
            f"openkontext_dispatched_total {self.dispatched}",
        ]


def _shutdown_ray(timeout: float = 20.0) -> None:
    """ray.shutdown(), waited for at most `timeout` s: now and then it hangs in the core
    worker's destructor, and a server must still stop."""
    import ray

    if not ray.is_initialized():
        return
    done = threading.Thread(target=ray.shutdown, name="openkontext-ray-shutdown", daemon=True)
    done.start()
    done.join(timeout)
    if done.is_alive():
        log.warning("ray.shutdown() did not return within %.0f s; going on", timeout)


def _descendants(pid: int) -> set[tuple[int, str]]:
    """The processes started by process `pid`, and by those, ..., as (pid, start time): here,
    the local Ray's (GCS, raylet, agents, workers). Empty where there is no /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for pid_, parent, started in _processes():
        children.setdefault(parent, []).append((pid_, started))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child[0])
    return out


def _kill(processes: set[tuple[int, str]]) -> None:
    """SIGKILL each of these processes that still runs, the same one (its start time) and not
    a later process that got its pid."""
    alive = {(pid, started) for pid, _, started in _processes()}
    for pid, _ in processes & alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, start time) of every process, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            out.append((int(stat.parent.name), int(fields[1]), fields[19]))
    return out
