"""`openkontext ui`: the web page on this machine. Starts the server on 127.0.0.1 (the embedded
model unless --weights says otherwise, data in ./openkontext-data as for `serve`), prints the
page's address and opens it in the browser once the server accepts connections.

The port stays the same from one run to the next (DEFAULT_PORT, or the next free one after it),
because a browser keeps the page's open session and key per address."""

from __future__ import annotations

import socket
import threading
import time
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_PORT = 8765


def first_free_port(start: int, tries: int = 20) -> int:
    """`start`, or the first port after it that 127.0.0.1 can bind; 0 (any) if none is."""
    for port in range(start, start + tries):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return 0


def ui_command(
    port: Annotated[int | None, typer.Option(
        help=f"port on 127.0.0.1; 0: any free one [default: {DEFAULT_PORT}, or the next free]"
    )] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="sessions, jobs and pictures")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="FLUX weights; default: the embedded mini model")
    ] = None,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="open the page in the browser")
    ] = True,
) -> None:
    """Open the web editor: a server on 127.0.0.1 and the page in your browser."""
    import uvicorn

    from openkontext.serve.app import create_app
    from openkontext.serve.classifiers import ClassifierError
    from openkontext.serve.settings import load_settings

    if port is None:
        port = first_free_port(DEFAULT_PORT)
    try:
        settings = load_settings(None, host="127.0.0.1", port=port, data_dir=data_dir,
                                 weights=weights)
        app = create_app(settings)
    except (FileNotFoundError, ValueError, ClassifierError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    # Warnings only: the page polls twice a second while a turn runs, which would fill the
    # terminal with access-log lines.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port,
                                           proxy_headers=False, log_level="warning"))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{bound}/"
        typer.echo(f"openkontext ui: {url}  (Ctrl+C stops it)")
        if browser:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
