"""benchmarks/mini/reference_paths.py: the suite's reference edits through the eval runner, the
`openkontext edit --reference` command and the HTTP API's `input_image_2..4`, with the embedded
model, must come out as the same pictures (so the suite's reference figures are what a user of
the CLI or the API gets)."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "reference_paths.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_cli_and_the_api_make_the_runners_pictures(tmp_path):
    done = run("--per-kind", "1", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines()[2:]]
    cells = {(r[0].strip(), r[1].strip()): [c.strip() for c in r[2:]] for r in rows}
    assert set(cells) == {(kind, split) for kind in ("ref_background", "ref_colour", "ref_object")
                          for split in ("train", "heldout")}
    for count, runner, cli, api, diffs in cells.values():
        assert count == "1"
        cli_diff, api_diff = (int(d) for d in diffs.split(" / "))
        assert cli_diff <= 2 and api_diff <= 2
        if cli_diff == api_diff == 0:
            assert runner == cli == api
    # the pictures each path sent in and got back are kept where --out said
    files = {p.name for p in (tmp_path / "out" / "files").iterdir()}
    assert sum(name.endswith("_cli.png") for name in files) == 6
    assert "6 cases, seed 0, speed quality" in done.stderr


def test_bad_options_exit_2_before_any_work(tmp_path):
    done = run("--per-kind", "0")
    assert done.returncode == 2 and "--per-kind must be at least 1, got 0" in done.stderr
    done = run("--out", str(tmp_path))
    assert done.returncode == 2 and "exists; name a new folder" in done.stderr
    done = run("--speed", "turbo")
    assert done.returncode == 2 and "invalid choice: 'turbo'" in done.stderr
