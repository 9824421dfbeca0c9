"""A bounded schemathesis run against a real server process: every check, a fixed seed, on
SQLite and PostgreSQL. It fails on any 5xx, any answer the OpenAPI schema does not describe, and
any schema-violating request accepted. The long run (thousands of cases) is in docs/serve.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CASES_PER_OPERATION = 25


def test_schemathesis_finds_nothing(db_url, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENKONTEXT_DATABASE_URL": db_url,
           "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, str(HERE / "server_main.py"), str(tmp_path), "0"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert line.startswith("listening on "), f"server did not start: {line!r}"
        url = line.split()[-1]
        run = subprocess.run(
            [cli, "--config-file", str(HERE / "schemathesis.toml"), "run",
             f"{url}/openapi.json", "--checks", "all", "--seed", "1", "--workers", "1",
             "--max-examples", str(CASES_PER_OPERATION), "--no-color"],
            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
        )
    finally:
        server.terminate()
        server.wait(30)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated, report[-2000:]
    assert int(generated[1]) == int(generated[2]) >= 200
