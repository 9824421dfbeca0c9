"""benchmarks/fuzz_serve.py, bounded: schemathesis with every check and a fixed seed against a
real server process, on SQLite and PostgreSQL. It fails on any 5xx, any answer the OpenAPI
schema does not describe, and any schema-violating request accepted. The long run (thousands
of cases) is in docs/serve.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "fuzz_serve.py"


def test_schemathesis_finds_nothing(db_url):
    run = subprocess.run([sys.executable, str(SCRIPT), "--max-examples", "25", "--seed", "1",
                          "--database", db_url], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    line = re.search(r"schemathesis: (\d+) cases, (\d+) failures", run.stdout)
    assert line, run.stdout[-2000:]
    assert int(line[1]) >= 200 and int(line[2]) == 0


def test_refuses_bad_arguments():
    run = subprocess.run([sys.executable, str(SCRIPT), "--max-examples", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--max-examples must be at least 1" in run.stderr
