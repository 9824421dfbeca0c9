"""`openkontext serve`: run the HTTP service with uvicorn.

Without API keys the server accepts every request, so it then listens on 127.0.0.1 only,
whatever --host says, and prints that it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="jobs database and results")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="FLUX weights (as for `openkontext edit`); default: the "
                                 "embedded mini model")
    ] = None,
    text_encoders: Annotated[
        str | None, typer.Option(help="T5/CLIP folder (as for `openkontext edit`)")
    ] = None,
    tokenizers: Annotated[
        str | None, typer.Option(help="tokenizer folder (as for `openkontext edit`)")
    ] = None,
    weights_dtype: Annotated[
        str | None, typer.Option("--weights-dtype", help="fp8, bf16, fp16 or fp32")
    ] = None,
    offload: Annotated[str | None, typer.Option(help="none, model or blocks")] = None,
    loras_dir: Annotated[
        Path | None, typer.Option("--loras-dir", help="folder of NAME.safetensors LoRAs that "
                                  "requests may name (default: none)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads of the worker (default: by "
                                 "model size)")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="who runs the model: local (a thread here, the default) "
                                 "or ray (Ray Serve replicas; docs/scale.md)")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="--executor ray: model replicas (default 1)")
    ] = None,
    autoscale: Annotated[
        str | None, typer.Option(help="--executor ray: MIN:MAX replicas, scaled on queue "
                                 "depth (instead of --replicas)")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="--executor ray: a running cluster "
                                 "(default: start a local Ray, stopped with the server)")
    ] = None,
    print_key_hash: Annotated[
        str | None,
        typer.Option("--hash-key", help="print the hash of this API key for api_keys and exit"),
    ] = None,
) -> None:
    """Serve the FLUX.1 Kontext-compatible HTTP API (OpenAPI docs at /docs)."""
    from openkontext.serve.settings import hash_key, is_loopback_host, load_settings

    if print_key_hash is not None:
        typer.echo(hash_key(print_key_hash))
        return
    import uvicorn

    from openkontext.serve.app import create_app
    from openkontext.serve.classifiers import ClassifierError

    try:
        if replicas is not None and autoscale is not None:
            raise ValueError("--replicas and --autoscale exclude each other")
        settings = load_settings(config, host=host, port=port, data_dir=data_dir,
                                 weights=weights, threads=threads, text_encoders=text_encoders,
                                 tokenizers=tokenizers, weights_dtype=weights_dtype,
                                 offload=offload, loras_dir=loras_dir, executor=executor,
                                 ray_replicas=replicas, ray_address=ray_address,
                                 ray_autoscale=parse_autoscale(autoscale))
        check_weights(settings)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not settings.auth_required:
        if not is_loopback_host(settings.host):
            typer.echo(f"no API keys configured: refusing to listen on {settings.host}",
                       err=True)
        typer.echo("no API keys configured: accepting requests without a key and listening on "
                   "127.0.0.1 only (set OPENKONTEXT_API_KEYS to serve other machines)", err=True)
        settings = settings.model_copy(update={"host": "127.0.0.1"})
    try:
        app = create_app(settings)
    except (ClassifierError, ValueError) as e:  # e.g. a loras_dir that is not a folder
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"image classifier: {app.state.image_classifier_summary}", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, proxy_headers=False, log_level="info")


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """'MIN:MAX' -> (MIN, MAX); ValueError naming the flag for anything else."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not (sep and low.strip().isdigit() and high.strip().isdigit()):
        raise ValueError(f"--autoscale takes MIN:MAX, e.g. 1:4, got {text!r}")
    return int(low), int(high)


def check_weights(settings) -> None:
    """Find every part of real weights before the server starts (seconds, no weights read), so
    a missing one stops `serve` with its name and the setting that supplies it."""
    from openkontext.weights import is_mini_export
    from openkontext.weights.parts import find_parts

    w = settings.weights
    if w is None or str(w).partition(":")[0] == "random" or is_mini_export(w):
        return
    find_parts(w, settings.text_encoders, settings.tokenizers,
               fp8=settings.weights_dtype == "fp8")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
