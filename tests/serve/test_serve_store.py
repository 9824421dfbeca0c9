"""The job store on SQLite and on the real PostgreSQL (skipped when it cannot be reached)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from sqlalchemy.exc import OperationalError

from openkontext.serve.store import Admission, Job, JobStore, LimitReached, State

PG_URL = os.environ.get("OPENKONTEXT_TEST_POSTGRES",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    table = f"okx_test_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        s = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}", table)
    else:
        pytest.importorskip("psycopg", reason="psycopg is not installed")
        s = JobStore(PG_URL, table)
        try:
            with s.engine.connect():
                pass
        except OperationalError as e:
            pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {e.orig}")
    s.create_tables()
    yield s
    s.drop_tables()
    s.close()


def _job(created: float, key: str | None = None, owner: str = "", **kw) -> Job:
    return Job(id=JobStore.new_id(), tier="pro", state=State.QUEUED, params={"prompt": "p"},
               base_url="http://h", api_key_hash=owner, progress=0.0, created_at=created,
               idempotency_key=key, **kw)


def test_add_get_and_round_trip(store):
    job = _job(1.0, webhook_secret="s")
    assert store.add(job) == (job, True)
    got = store.get(job.id)
    assert got == job
    assert store.get("missing") is None


def test_sqlite_uses_wal(tmp_path):
    s = JobStore(f"sqlite:///{tmp_path / 'j.sqlite3'}")
    s.create_tables()
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    s.close()


def test_idempotency_keys_are_per_api_key(store):
    first = _job(1.0, key="k", owner="a")
    store.add(first)
    again, created = store.add(_job(2.0, key="k", owner="a"))
    assert (again.id, created) == (first.id, False)
    other, created = store.add(_job(3.0, key="k", owner="b"))
    assert created and other.id != first.id
    assert store.add(_job(4.0))[1] and store.add(_job(5.0))[1]  # no key: never a clash
    assert store.find_idempotent("a", "k").id == first.id


def test_claim_in_order_and_only_once(store):
    jobs = [_job(float(i)) for i in range(6)]
    for job in reversed(jobs):
        store.add(job)
    claimed: list[str] = []
    lock = threading.Lock()

    def take():
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.id for j in jobs) and len(set(claimed)) == 6
    assert store.count_by_state()[State.RUNNING] == 6
    assert store.get(jobs[0].id).started_at is not None


def test_lifecycle(store):
    a, b = _job(1.0), _job(2.0)
    store.add(a)
    store.add(b)
    assert store.queue_depth() == 2
    running = store.claim_next()
    assert running.id == a.id and running.state == State.RUNNING
    store.set_progress(a.id, 0.5)
    assert store.get(a.id).progress == 0.5
    # Cancel: a queued job at once, a running one by flag.
    assert store.request_cancel(b.id) == State.CANCELLED
    assert store.request_cancel(a.id) == State.RUNNING and store.cancel_requested(a.id)
    assert store.request_cancel("missing") is None
    store.finish(a.id, State.READY, {"files": ["0.png"]}, webhook=True)
    done = store.get(a.id)
    assert done.state == State.READY and done.progress == 1.0 and done.finished_at
    assert done.result == {"files": ["0.png"]}
    assert [j.id for j in store.pending_webhooks()] == [a.id]
    store.set_webhook_state(a.id, "delivered")
    assert store.pending_webhooks() == []
    counts = store.count_by_state()
    assert counts[State.READY] == 1 and counts[State.CANCELLED] == 1 and counts[State.QUEUED] == 0
    # Expiry.
    assert set(store.finished_before(time.time() + 1)) == {a.id, b.id}
    store.delete([a.id, b.id])
    assert store.get(a.id) is None and store.queue_depth() == 0


def test_reclaim_takes_back_only_expired_or_dead_claims(store):
    a, b, c = _job(1.0), _job(2.0), _job(3.0)
    for job in (a, b, c):
        store.add(job)
    store.claim_next("host:1:aaaa", lease=30)
    store.claim_next("host:2:bbbb", lease=0.2)
    store.claim_next("host:3:cccc", lease=30)
    store.set_progress(a.id, 0.4, "host:1:aaaa")
    store.set_progress(a.id, 0.9, "host:9:zzzz")  # not the owner: ignored
    assert store.get(a.id).progress == 0.4
    store.request_cancel(c.id)
    # A live owner keeps its job; b's lease runs out; c's owner is dead and c was cancelled.
    time.sleep(0.3)
    assert store.reclaim(lambda owner: owner == "host:3:cccc") == 2
    assert store.get(a.id).state == State.RUNNING and store.get(a.id).owner == "host:1:aaaa"
    back = store.get(b.id)
    assert (back.state, back.progress, back.started_at, back.owner) == (State.QUEUED, 0.0, None,
                                                                        None)
    assert store.get(c.id).state == State.CANCELLED
    # The heartbeat renews what the owner still holds and reports what it lost.
    assert store.heartbeat([a.id, b.id], "host:1:aaaa", 30) == {a.id}
    assert store.claim_next("host:4:dddd").id == b.id
    assert store.heartbeat([b.id], "host:2:bbbb", 30) == set()


def test_hand_over_passes_a_claim_once_and_only_from_its_owner(store):
    a = _job(1.0)
    store.add(a)
    store.claim_next("host:1:disp", lease=0.5)
    assert store.hand_over(a.id, "host:9:other", "host:2:rep", 30) is None
    got = store.hand_over(a.id, "host:1:disp", "host:2:rep", 30)
    assert got.owner == "host:2:rep" and got.lease_until > time.time() + 20
    # A second hand-over of the same claim (a retried call) finds it gone.
    assert store.hand_over(a.id, "host:1:disp", "host:3:rep", 30) is None
    # The dispatcher's heartbeat no longer holds it; the replica's does, past the old lease.
    assert store.heartbeat([a.id], "host:1:disp", 30) == set()
    time.sleep(0.6)
    assert store.reclaim() == 0
    assert store.heartbeat([a.id], "host:2:rep", 30) == {a.id}
    # Taken back from a dead replica, it cannot be handed over again by the old claim.
    assert store.reclaim(lambda owner: owner == "host:2:rep") == 1
    assert store.hand_over(a.id, "host:1:disp", "host:2:rep", 30) is None
    assert store.get(a.id).state == State.QUEUED


def test_finish_is_idempotent_and_only_for_the_owner(store):
    from openkontext.serve.usage import Usage

    a = _job(1.0, owner="k")
    store.add(a)
    store.claim_next("host:1:aaaa")
    charge = ("k", Usage(jobs=1, images=1))
    assert not store.finish(a.id, State.READY, {"files": ["0.png"]}, charge=charge,
                            owner="host:2:bbbb")
    assert store.get(a.id).state == State.RUNNING
    assert store.finish(a.id, State.READY, {"files": ["0.png"]}, charge=charge,
                        owner="host:1:aaaa", webhook=True)
    # A second finisher, owner or not, changes nothing and charges nothing.
    assert not store.finish(a.id, State.ERROR, None, {"error": "x"}, charge=charge,
                            owner="host:1:aaaa")
    assert not store.finish(a.id, State.ERROR, None, {"error": "x"}, charge=charge)
    assert not store.requeue(a.id)
    done = store.get(a.id)
    assert done.state == State.READY and done.details is None
    assert store.usage("k").total.jobs == 1


def test_owner_dead_judges_only_this_host():
    import os
    import socket

    from openkontext.serve.store import owner_dead, owner_id

    me = owner_id()
    host = socket.gethostname()
    assert not owner_dead(me, me)
    assert owner_dead(f"{host}:{os.getpid()}:0ther0ne", me)  # this pid, an earlier process
    assert not owner_dead(f"{host}:1:abcd1234", me)  # pid 1 runs
    assert owner_dead(f"{host}:{2**22 + 12345}:abcd1234", me)  # above pid_max: no such pid
    assert not owner_dead(f"other-{host}:{2**22 + 12345}:abcd1234", me)


def test_create_tables_adds_the_lease_columns_to_an_older_table(tmp_path):
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE openkontext_jobs (id VARCHAR(36) PRIMARY KEY, tier VARCHAR(16) NOT "
            "NULL, state VARCHAR(24) NOT NULL, params TEXT NOT NULL, base_url VARCHAR(512) NOT "
            "NULL, api_key_hash VARCHAR(80) NOT NULL, idempotency_key VARCHAR(255), "
            "fingerprint VARCHAR(64), progress FLOAT NOT NULL, created_at FLOAT NOT NULL, "
            "started_at FLOAT, finished_at FLOAT, result TEXT, details TEXT, cancel_requested "
            "BOOLEAN NOT NULL, webhook_state VARCHAR(16), webhook_secret VARCHAR(256))"
        )
        conn.exec_driver_sql(
            "INSERT INTO openkontext_jobs VALUES ('j1', 'pro', 'running', '{}', 'http://h', '', "
            "NULL, NULL, 0.5, 1.0, 2.0, NULL, NULL, NULL, 0, NULL, NULL)"
        )
    engine.dispose()
    store = JobStore(url)
    store.create_tables()
    old = store.get("j1")
    assert old.state == State.RUNNING and old.owner is None and old.lease_until is None
    assert store.reclaim() == 1  # a claim without a lease is taken back
    assert store.claim_next("host:1:aaaa").id == "j1"
    store.close()


def test_usage_accumulates_per_key_in_the_finishing_transaction(store):
    from openkontext.serve.usage import Usage

    a, b = _job(1.0, owner="k1"), _job(2.0, owner="k1")
    store.add(a)
    store.add(b)
    assert store.usage("k1").total == Usage()
    store.claim_next()
    store.finish(a.id, State.READY, {"files": ["0.png"]},
                 charge=("k1", Usage(jobs=1, images=2, megapixels=0.5, compute_seconds=1.25)))
    store.finish(b.id, State.ERROR, None, {"error": "x"},
                 charge=("k1", Usage(jobs=1, compute_seconds=0.25)))
    got = store.usage("k1").total
    assert (got.jobs, got.images, got.megapixels, got.compute_seconds) == (2, 2, 0.5, 1.5)
    assert got.since is not None and store.usage("k2").total == Usage()
    store.delete([a.id, b.id])  # usage outlives the jobs
    assert store.usage("k1").total.jobs == 2


def test_usage_windows_and_intervals(store):
    from openkontext.serve.usage import Usage, add_usage

    day = 86_400 * 20_000  # a UTC midnight
    uses = [(day + 60, 1), (day + 3_600 + 5, 2), (day + 3_600 + 99, 4), (day + 86_400 + 7, 8)]
    with store.engine.begin() as conn:
        for when, images in uses:
            add_usage(conn, store.usage_t, "k", Usage(jobs=1, images=images), now=when)
    whole = store.usage("k")
    assert (whole.total.jobs, whole.total.images, whole.total.since) == (4, 15, day + 60)
    assert whole.start is None and whole.end is None
    # Whole hours: a window inside the second hour covers all of it.
    second = store.usage("k", start=day + 3_700, end=day + 3_800)
    assert (second.total.images, second.start, second.end) == (6, day + 3_600, day + 7_200)
    assert store.usage("k", start=day + 7_200, end=day + 86_400).total == Usage(0, 0, 0.0, 0.0)
    hours = store.usage("k", end=day + 86_400, interval="hour").intervals
    assert [(s - day, u.images) for s, u in hours] == [(0, 1), (3_600, 6)]
    days = store.usage("k", interval="day").intervals
    assert [(s - day, u.jobs, u.images) for s, u in days] == [(0, 3, 7), (86_400, 1, 8)]
    assert days[1][1].since == day + 86_400 + 7


def test_batch_helpers(store):
    jobs = [_job(float(i), owner="k" if i < 2 else "other") for i in range(4)]
    for job in jobs:
        store.add(job)
    assert [j.id for j in store.queued(3)] == [j.id for j in jobs[:3]]
    assert store.claim(jobs[2].id).state == State.RUNNING
    assert store.claim(jobs[2].id) is None  # taken once
    assert store.claim_next().id == jobs[0].id
    assert store.queue_depth("k") == 2 and store.queue_depth("other") == 2
    store.set_progress([jobs[0].id, jobs[2].id], 0.5)
    assert store.get(jobs[2].id).progress == 0.5 and store.get(jobs[1].id).progress == 0.0
    store.request_cancel(jobs[2].id)
    assert store.cancel_requested_among([j.id for j in jobs]) == {jobs[2].id}
    store.finish(jobs[0].id, State.READY)
    assert store.states([jobs[0].id, jobs[1].id, "missing"]) == {
        jobs[0].id: State.READY, jobs[1].id: State.QUEUED}


def _add_from_another_process(url: str, table: str, barrier, results, tries: int) -> None:
    store = JobStore(url, table)
    barrier.wait(30)
    accepted = 0
    for _ in range(tries):
        try:
            store.add(_job(time.time(), owner="k"), Admission(queue_max=100, per_key=4))
            accepted += 1
        except LimitReached:
            pass
    results.put(accepted)
    store.close()


def test_admission_limits_hold_across_processes(store):
    """Six processes race to add 3 jobs each for one key limited to 4: exactly 4 get in (each
    process counts and inserts; without the database lock several see room for the last
    places at once)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    url = store.engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_add_from_another_process,
                         args=(url, store.t.name, barrier, results, 3)) for _ in range(6)]
    for p in procs:
        p.start()
    accepted = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(accepted) == 4
    assert store.queue_depth("k") == 4


def test_admission_refuses_with_the_reason(store):
    store.add(_job(1.0, owner="a"), Admission(queue_max=2, per_key=1))
    with pytest.raises(LimitReached, match="this API key has 1 jobs queued or running, its "
                       "limit is 1") as refused:
        store.add(_job(2.0, owner="a"), Admission(queue_max=2, per_key=1))
    assert refused.value.depth == 1
    store.add(_job(3.0, owner="b"), Admission(queue_max=2, per_key=1))
    with pytest.raises(LimitReached, match=r"the queue is full \(2 jobs\)"):
        store.add(_job(4.0, owner="c"), Admission(queue_max=2))
    assert store.queue_depth() == 2
    store.add(_job(5.0, owner="c"))  # no admission: always added (refusals are finished jobs)
