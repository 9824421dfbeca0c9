"""The reference edits of the shapes-plus suite through the three ways a user asks for them: the
eval runner (batched, what `openkontext eval` and evaluate_runs.py score), the command line
(`openkontext edit INPUT "..." --reference IMAGE`, one process a case) and the HTTP API
(`openkontext serve`, a POST with `input_image_2..4`), each scored against the same ground truth.

Every path gets the same seed, steps, guidance, paste-back and speed (quality, every step
computed, unless --speed says otherwise); the CLI and the API return PNG, so their pixels are
the model's. The runner batches cases of one size, so its floats may differ from a single edit's
in the last bits: the table gives, beside success per path, the largest pixel difference from
the runner's picture.

    .venv/bin/python benchmarks/mini/reference_paths.py [--weights EXPORT] [--per-kind 10]
        [--seed 0] [--speed quality] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from openkontext.eval import build_suite, evaluate, load_cases, score_output
from openkontext.eval.runner import EVAL_SPEED
from openkontext.eval.suite import REFERENCE_KINDS
from openkontext.pipeline import Kontext
from openkontext.speed import SPEEDS

OPENKONTEXT = [sys.executable, "-c", "from openkontext.cli import main; main()"]
PATHS = ("runner", "cli", "api")


def reference_cases(folder: Path, per_kind: int, kontext: Kontext) -> list:
    """The suite's reference edits, trained and held-out phrasings, per_kind of each kind."""
    preset = kontext.model.preset
    jsonl = build_suite(folder, per_kind, preset.native_size, "shapes-plus",
                        preset.latent_multiple)
    return [c for c in load_cases(jsonl, preset.native_size) if c.category in REFERENCE_KINDS]


def write_pictures(case, folder: Path) -> list[Path]:
    """The case's input and references as PNG files: [input, image 2, ...]."""
    paths = []
    for n, picture in enumerate((case.input, *case.references), start=1):
        path = folder / f"{case.id}_{n}.png"
        Image.fromarray(picture.load(), "RGB").save(path)
        paths.append(path)
    return paths


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def through_cli(case, pictures: list[Path], out: Path, weights: str | None, seed: int,
                speed: str) -> np.ndarray:
    """One `openkontext edit` process, as a user runs it."""
    command = [*OPENKONTEXT, "edit", str(pictures[0]), case.turns[0].instruction,
               "--seed", str(seed), "--speed", speed, "--threads", "1", "--output", str(out)]
    for reference in pictures[1:]:
        command += ["--reference", str(reference)]
    if weights:
        command += ["--weights", weights]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{case.id}: openkontext edit exited {done.returncode}: "
                           f"{done.stderr.strip()}")
    return read_png(out.read_bytes())


def server_class():
    """benchmarks/ray_throughput.py's `Server`: `openkontext serve` in a child process on a free
    loopback port, stopped with SIGTERM."""
    path = Path(__file__).resolve().parents[1] / "ray_throughput.py"
    spec = importlib.util.spec_from_file_location("ray_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Server


def through_api(cases, pictures: dict[str, list[Path]], data_dir: str, weights: str | None,
                seed: int, speed: str) -> dict[str, np.ndarray]:
    """Every case POSTed at once to a local `openkontext serve`; the PNGs once Ready."""
    server = server_class()("local", data_dir, weights)
    try:
        ids = {}
        for case in cases:
            body = {"prompt": case.turns[0].instruction, "seed": seed, "speed": speed,
                    "output_format": "png"}
            for n, path in enumerate(pictures[case.id], start=1):
                key = "input_image" if n == 1 else f"input_image_{n}"
                body[key] = base64.b64encode(path.read_bytes()).decode("ascii")
            answer = server.client.post("/v1/flux-kontext-pro", json=body)
            answer.raise_for_status()
            ids[case.id] = answer.json()["id"]
        outputs, deadline = {}, time.monotonic() + 600
        while len(outputs) < len(ids):
            for case_id, job_id in ids.items():
                if case_id in outputs:
                    continue
                status = server.client.get("/v1/get_result", params={"id": job_id}).json()
                if status["status"] == "Pending":
                    continue
                if status["status"] != "Ready":
                    raise RuntimeError(f"{case_id}: {status}")
                outputs[case_id] = read_png(server.client.get(status["result"]["sample"]).content)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids) - len(outputs)} edits still pending after 600 s")
            time.sleep(0.1)
        return outputs
    finally:
        server.stop()


def compare(weights: str | None, per_kind: int, seed: int, speed: str,
            folder: Path) -> dict[str, dict]:
    """{case id: {"category", "split", "<path>": success, "<path>_psnr", "<path>_diff"}}."""
    kontext = Kontext.load(weights)
    cases = reference_cases(folder / "suite", per_kind, kontext)
    (folder / "files").mkdir()
    pictures = {c.id: write_pictures(c, folder / "files") for c in cases}
    outputs: dict[str, dict[str, np.ndarray]] = {path: {} for path in PATHS}
    saved = folder / "runner"
    evaluate(kontext, cases, seed=seed, speed=speed, save_outputs=saved)
    outputs["runner"] = {c.id: read_png((saved / f"{c.id}.png").read_bytes()) for c in cases}
    for case in cases:
        outputs["cli"][case.id] = through_cli(case, pictures[case.id],
                                              folder / "files" / f"{case.id}_cli.png",
                                              weights, seed, speed)
    outputs["api"] = through_api(cases, pictures, str(folder / "data"), weights, seed, speed)
    rows = {}
    for case in cases:
        row = {"category": case.category, "split": case.phrasing_split}
        runner = outputs["runner"][case.id].astype(int)
        for path in PATHS:
            output = outputs[path][case.id]
            score = score_output(case, output)
            row[path], row[f"{path}_psnr"] = score.success, score.psnr
            row[f"{path}_diff"] = int(np.abs(output.astype(int) - runner).max())
        rows[case.id] = row
    return rows


def print_table(rows: dict[str, dict]) -> None:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows.values():
        groups.setdefault((row["category"], row["split"]), []).append(row)
    print("| kind | phrasings | cases | runner | CLI `--reference` | API `input_image_2` "
          "| largest pixel difference from the runner, CLI / API |")
    print("|---|---|---|---|---|---|---|")
    for (kind, split), group in sorted(groups.items()):
        rates = [f"{sum(r[p] for r in group) / len(group):.0%}" for p in PATHS]
        diffs = " / ".join(str(max(r[f"{p}_diff"] for r in group)) for p in ("cli", "api"))
        print(f"| {kind} | {split} | {len(group)} | {' | '.join(rates)} | {diffs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a mini export (default: the embedded)")
    parser.add_argument("--per-kind", type=int, default=10,
                        help="cases per reference kind and phrasing split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", choices=tuple(SPEEDS), default=EVAL_SPEED)
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the pictures here (default: a temporary folder)")
    args = parser.parse_args()
    if args.per_kind < 1:
        parser.error(f"--per-kind must be at least 1, got {args.per_kind}")
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; name a new folder")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = compare(args.weights, args.per_kind, args.seed, args.speed, folder)
    print_table(rows)
    print(f"{len(rows)} cases, seed {args.seed}, speed {args.speed}, "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
