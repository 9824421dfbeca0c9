"""`create_app(settings, kontext_factory)`: the FastAPI application, wired.

The factory builds the job and session stores, worker, webhook sender and metrics; the lifespan
starts the worker (which loads the model off the event loop) and resumes unsent webhooks, and
stops both on exit.
Tests pass a factory that makes a random-weight mini model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from openkontext import __version__
from openkontext.loras import LoraLibrary
from openkontext.pipeline import Kontext
from openkontext.serve.apidocs import add_reference_pages
from openkontext.serve.classifiers import load_image_classifier
from openkontext.serve.deps import Services
from openkontext.serve.errors import (
    BodyLimit,
    field_error,
    method_not_allowed,
    validation_error,
)
from openkontext.serve.inputs import FieldError
from openkontext.serve.metrics import Metrics
from openkontext.serve.moderation import (
    ImageClassifier,
    PromptUpsampler,
    TextPolicy,
    load_plugin,
)
from openkontext.serve.routers import jobs, loras, results, sessions, system, usage
from openkontext.serve.sessions import SessionStore
from openkontext.serve.settings import ServeSettings, load_settings
from openkontext.serve.store import JobStore
from openkontext.serve.upsampling import OpenAIChatUpsampler
from openkontext.serve.views import result_body
from openkontext.serve.webhooks import Webhooks
from openkontext.serve.webpage import add_web_page
from openkontext.serve.worker import Worker

log = logging.getLogger("openkontext.serve")


def draws_photographs(weights) -> bool:
    """False for the mini model (embedded, a mini export, or random): Shapes World pictures."""
    from openkontext.weights import is_mini_export

    if weights is None or str(weights).partition(":")[0] == "random":
        return False
    return not is_mini_export(weights)


def load_pipeline(s: ServeSettings) -> Kontext:
    """The pipeline the settings name (weights, device, dtype, storage, offload, threads); the
    one loader of the local worker and of each Ray replica (ray_deployment.py)."""
    return Kontext.load(s.weights, device=s.device, dtype=s.dtype, text_encoders=s.text_encoders,
                        offload=s.offload, threads=s.threads, tokenizers=s.tokenizers,
                        weights_dtype=s.weights_dtype, limits=s.image_limits,
                        compile_transformer=s.compile_transformer)


def create_app(
    settings: ServeSettings | None = None,
    kontext_factory: Callable[[], Kontext] | None = None,
    *,
    image_classifier: ImageClassifier | None = None,
    prompt_upsampler: PromptUpsampler | None = None,
    text_policy: TextPolicy | None = None,
) -> FastAPI:
    s = settings or load_settings()
    if kontext_factory is None:
        def kontext_factory() -> Kontext:
            return load_pipeline(s)
    # LoRAs by name from the operator's folder, never by path; a configured folder that is not
    # there stops start-up. Whatever the factory, the model it makes uses this library.
    if s.loras_dir is not None and not s.loras_dir.is_dir():
        raise ValueError(f"loras_dir {s.loras_dir} is not a folder")
    lora_library = LoraLibrary(s.loras_dir, allow_paths=False)

    def load_kontext() -> Kontext:
        kontext = kontext_factory()
        kontext.loras = lora_library
        return kontext

    # Before any file is made: a classifier that is configured but cannot load stops start-up.
    if image_classifier is None:
        image_classifier, classifier_summary = load_image_classifier(
            s.image_classifier,
            s.image_classifier_weights,
            s.image_classifier_threshold,
            photographic=draws_photographs(s.weights),
        )
    else:
        classifier_summary = f"{image_classifier} (passed to create_app)"
    log.info("image classifier: %s", classifier_summary)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(s.db_url)
    session_store = SessionStore(s, store)
    metrics = Metrics()
    webhooks = Webhooks(s, store, lambda job: result_body(job, job.base_url, s))
    if s.executor == "ray":  # the model runs in Ray Serve replicas (docs/scale.md)
        from openkontext.serve.ray_executor import RayExecutor

        worker = RayExecutor(s, store, metrics)
    else:
        worker = Worker(
            s, store, load_kontext, metrics, on_finished=webhooks.submit,
            on_session_job=session_store.settle_job, image_classifier=image_classifier,
        )
    upsampler = prompt_upsampler or load_plugin(s.prompt_upsampler)
    if upsampler is None and s.upsampler_url and s.upsampler_model:
        upsampler = OpenAIChatUpsampler(s.upsampler_url, s.upsampler_model,
                                        api_key=s.upsampler_api_key,
                                        timeout=s.upsampler_timeout_seconds)
    worker.prompt_upsampler = upsampler
    services = Services(s, store, worker, webhooks, metrics, text_policy or TextPolicy(),
                        upsampler, session_store, lora_library)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store.create_tables()
        s.signing_secret()  # made now, not by two requests at once
        worker.start()
        webhooks.resume()
        try:
            yield
        finally:
            worker.stop()
            webhooks.close()
            store.close()

    app = FastAPI(
        title="openkontext",
        version=__version__,
        description="Self-hosted FLUX.1 Kontext image editing, compatible with the hosted "
        "API: submit to /v1/flux-kontext-{pro,max,dev}, poll /v1/get_result, download the "
        "signed sample URL.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.image_classifier_summary = classifier_summary  # printed by `openkontext serve`
    app.include_router(jobs.build_router(list(s.tiers)))
    app.include_router(results.router)
    app.include_router(usage.router)
    app.include_router(loras.router)
    app.include_router(system.router)
    app.include_router(sessions.router)

    add_reference_pages(app)
    add_web_page(app)
    app.add_exception_handler(FieldError, field_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(405, method_not_allowed)
    app.add_middleware(BodyLimit, limit=s.body_limit)
    return app


def serve_on_free_port(app: FastAPI) -> None:
    """Run `app` with uvicorn on 127.0.0.1, on a port the system picks, and print `listening on
    http://127.0.0.1:PORT` once it accepts connections (for a parent process that started it,
    such as the load test and the restart test)."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
