"""Browser tests: Debian's Chromium driven by Playwright against a real server process.

The browser is /usr/bin/chromium (the project's set-up installs it; nothing is downloaded).
Without it the tests are skipped, unless OPENKONTEXT_BROWSER_TESTS=required (CI sets it), where
a missing browser is a failure. The server is tests/web/server_main.py: the embedded model,
SQLite in a temporary data dir, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("OPENKONTEXT_CHROMIUM", "/usr/bin/chromium"))
SERVER = Path(__file__).with_name("server_main.py")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser() -> None:
    if CHROMIUM.exists():
        return
    message = f"no browser at {CHROMIUM} (`make install` puts Debian's chromium there)"
    if os.environ.get("OPENKONTEXT_BROWSER_TESTS") == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    _need_browser()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield b
        b.close()


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    data_dir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def start_server(data_dir: Path, step_delay: float = 0.0, **settings: str) -> Server:
    """`settings` become the server's OPENKONTEXT_<NAME> environment variables."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           **{f"OPENKONTEXT_{k.upper()}": v for k, v in settings.items()}}
    proc = subprocess.Popen([sys.executable, str(SERVER), str(data_dir), str(step_delay)],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), f"server did not start: {line!r}"
    return Server(proc, line.split()[-1], data_dir)


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    s = start_server(tmp_path / "data")
    yield s
    s.stop()


def new_page(browser, width: int = 1280, height: int = 800):
    """A page in a fresh browser context (its own storage) at this viewport; close its
    `.context` when done."""
    p = browser.new_context(viewport={"width": width, "height": height}).new_page()
    p.set_default_timeout(20_000)
    return p


@pytest.fixture
def page(browser, server):
    p = new_page(browser)
    yield p
    p.context.close()
