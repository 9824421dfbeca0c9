"""Schemathesis against a real `openkontext serve` process: every check, a fixed seed.

1. Starts the app in a child process on 127.0.0.1 (a free port) with the random-weight mini
   model and the job store at --database (default: SQLite in a temporary data dir; PostgreSQL
   with `postgresql+psycopg://...`, on a database of its own: the run leaves jobs in it).
2. Runs `schemathesis run .../openapi.json --checks all` with tests/serve/schemathesis.toml
   (which says why 422 may answer a schema-valid request), --max-examples per operation and
   --seed; its phases: coverage, fuzzing, stateful.
3. Prints schemathesis's summary and one line: cases generated, passed, failures. Exits with
   schemathesis's status: 0 when no check failed (no 5xx, every answer as the schema says).

The suite runs it small (tests/serve/test_serve_fuzz.py); docs/serve.md gives the long run.
Usage: python benchmarks/fuzz_serve.py [--max-examples 25] [--seed 1] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "tests" / "serve" / "schemathesis.toml"


def serve(data_dir: str) -> None:
    """The child: the app on a free loopback port, announced on stdout."""
    import torch

    from openkontext.model import LoadedModel
    from openkontext.pipeline import Kontext
    from openkontext.serve.app import create_app, serve_on_free_port
    from openkontext.serve.settings import ServeSettings

    torch.set_num_threads(1)
    settings = ServeSettings(data_dir=data_dir, image_classifier="none")
    serve_on_free_port(create_app(settings, lambda: Kontext(LoadedModel.random("mini"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25, help="cases per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", help="database_url for the server (default: SQLite)")
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.max_examples < 1:
        parser.error("--max-examples must be at least 1")
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which(
        "schemathesis")
    if cli is None:
        parser.error("schemathesis is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if args.database:
        env["OPENKONTEXT_DATABASE_URL"] = args.database
    with tempfile.TemporaryDirectory(prefix="okx-fuzz-") as tmp:
        server = subprocess.Popen([sys.executable, __file__, "--serve", tmp],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = server.stdout.readline()
            if not line.startswith("listening on "):
                print(f"the server did not start: {line!r}", file=sys.stderr)
                return 1
            url = line.split()[-1]
            started = time.monotonic()
            run = subprocess.run(
                [cli, "--config-file", str(CONFIG), "run", f"{url}/openapi.json", "--checks",
                 "all", "--seed", str(args.seed), "--workers", "1", "--max-examples",
                 str(args.max_examples), "--no-color"],
                capture_output=True, text=True, env=env, cwd=tmp,
            )
            seconds = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(30)
    report = run.stdout + run.stderr
    print(report[report.find("SUMMARY") - 40:] if "SUMMARY" in report else report[-4000:])
    counts = re.search(r"(\d+) generated, (\d+) (?:passed|found)", report)
    failures = re.search(r"(\d+) failures? in", report)
    database = "PostgreSQL" if args.database and "postgresql" in args.database else "SQLite"
    print(f"schemathesis: {counts[1] if counts else '?'} cases, "
          f"{failures[1] if failures else 0} failures, seed {args.seed}, "
          f"{args.max_examples} examples per operation, {database} store, {seconds:.0f} s")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
