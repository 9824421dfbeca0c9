"""Real servers for the HTTP tests: uvicorn on 127.0.0.1 (a free port) in a thread, SQLite in
a temporary data dir, and a random-weight mini model shared by every server of the session."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image

from openkontext.model import LoadedModel
from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """On a small shared CPU torch's default thread pool mostly waits on itself; restored
    after each test so other test folders keep their setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PG_ADMIN = os.environ.get("OPENKONTEXT_TEST_POSTGRES",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), dropped after; the test is skipped when PostgreSQL
    cannot be reached."""
    psycopg = pytest.importorskip("psycopg")
    dsn = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL at {dsn} is unreachable: {e}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database of its own: a SQLite file, or a fresh PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.sqlite3'}"
        return
    with postgres_database("okx_test") as url:
        yield url


@pytest.fixture(scope="session")
def mini_model() -> LoadedModel:
    return LoadedModel.random("mini", seed=0)


class SlowKontext(Kontext):
    """The mini model with a pause after every step (and an optional gate before each batch),
    so a test can act while a job is running. The worker runs every batch with `run_many`.
    A job whose prompt is `fail` fails when it runs (ValueError), as a job the model cannot
    do would."""

    def __init__(self, model: LoadedModel, step_delay: float = 0.0,
                 gate: threading.Event | None = None, fail: str | None = None):
        super().__init__(model)
        self.step_delay = step_delay
        self.gate = gate
        self.fail = fail
        self.batches: list[list[str]] = []  # the prompts of every batch run, in order

    def run_many(self, requests, on_step=None, cancelled=None):
        self.batches.append([prompt for prompt, _, _ in requests])
        if self.gate is not None:
            self.gate.wait(30)
        if any(prompt == self.fail for prompt, _, _ in requests):
            raise ValueError(f"the model cannot do {self.fail!r}")

        def slow_step(i: int, n: int) -> None:
            time.sleep(self.step_delay)
            if on_step is not None:
                on_step(i, n)

        return super().run_many(requests, on_step=slow_step, cancelled=cancelled)


@dataclass
class Live:
    url: str
    app: FastAPI
    client: httpx.Client
    stop: Callable[[], None] = lambda: None  # shut this server down (as a restart would)

    @property
    def services(self):
        return self.app.state.services

    def submit(self, body: dict, tier: str = "pro", **kwargs) -> httpx.Response:
        return self.client.post(f"/v1/flux-kontext-{tier}", json=body, **kwargs)

    def wait(self, polling_url: str, timeout: float = 60.0, **kwargs) -> dict:
        """Poll until the job leaves Pending; -> the last get_result body."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(polling_url, **kwargs).json()
            if body["status"] != "Pending":
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job still pending after {timeout} s: {body}")
            time.sleep(0.05)


def start_server(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def serve(tmp_path, mini_model) -> Iterator[Callable[..., Live]]:
    """serve(kontext=None, image_classifier=None, prompt_upsampler=None, **settings) -> Live;
    each server gets a data dir of its own unless `data_dir` is given."""
    running: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def make(kontext: Kontext | None = None, image_classifier=None, prompt_upsampler=None,
             **overrides) -> Live:
        # Servers run without the NudeNet classifier unless a test asks for it (it costs
        # ~0.25 s a start and ~40 ms a job; its own tests are in test_serve_classifiers.py).
        # A string is the setting ("nudenet", "auto", ...); an object is passed to create_app.
        if isinstance(image_classifier, str):
            overrides["image_classifier"], image_classifier = image_classifier, None
        overrides.setdefault("image_classifier", "none")
        overrides.setdefault("data_dir", tmp_path / f"data{len(running)}")
        settings = ServeSettings(**overrides)
        k = kontext or Kontext(mini_model)
        app = create_app(settings, lambda: k, image_classifier=image_classifier,
                         prompt_upsampler=prompt_upsampler)
        server, thread, url = start_server(app)
        client = httpx.Client(base_url=url, timeout=30, trust_env=False)
        running.append((server, thread, client))

        def stop() -> None:
            server.should_exit = True
            thread.join(30)

        return Live(url, app, client, stop)

    yield make
    for server, thread, client in running:
        client.close()
        server.should_exit = True
        thread.join(30)


def until(condition, timeout: float = 30.0, what: str = "the condition"):
    """Poll `condition` until it gives something true; -> that. Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def png_bytes(size: tuple[int, int] = (64, 64), color=(200, 40, 40)) -> bytes:
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_b64(size: tuple[int, int] = (64, 64)) -> str:
    return base64.b64encode(png_bytes(size)).decode("ascii")
