"""`openkontext eval`: score a model on a JSONL dataset or on the built-in Shapes World suite.

Mounted on the main app with `register(app)`. Exit codes as for the other commands: 0 done,
2 bad input (a broken dataset line, an unreadable image, a bad option, missing weights),
1 an internal error. Tables go to stdout, the progress bar to stderr.
"""

from __future__ import annotations

import enum
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openkontext.eval.suite import DEFAULT_PER_KIND, SUITES, build_suite, suite_label
from openkontext.files import check_input_file, check_output_file, check_output_folder
from openkontext.speed import SPEEDS

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EvalSpeed = enum.StrEnum("EvalSpeed", {name: name for name in SPEEDS})

if TYPE_CHECKING:
    from openkontext.pipeline import Kontext

Loader = Callable[[str | None, str | None, str | None, int | None], "Kontext"]


def load_kontext(weights: str | None, device: str | None, dtype: str | None,
                 threads: int | None = None) -> Kontext:
    """The model to evaluate: `Kontext.load` (embedded mini when weights is None)."""
    from openkontext.pipeline import Kontext

    return Kontext.load(weights, device=device, dtype=dtype, threads=threads)


def _bad_input_errors() -> tuple[type[Exception], ...]:
    from openkontext.eval.dataset import DatasetError
    from openkontext.imaging import ImageError
    from openkontext.resolution import SizeError
    from openkontext.weights import WeightsError
    from openkontext.world.scene import SceneError

    return (DatasetError, ImageError, SizeError, SceneError, WeightsError, ValueError,
            FileNotFoundError)


def build_command(load: Loader = load_kontext) -> Callable[..., None]:
    """The `eval` command, loading its model with `load(weights, device, dtype, threads)`."""

    def eval_command(
        dataset: Annotated[Path | None, typer.Argument(
            help="JSONL file of cases (see openkontext.eval.dataset)")] = None,
        suite: Annotated[str | None, typer.Option(
            help=f"a built-in suite instead of a file: {', '.join(SUITES)}")] = None,
        suite_size: Annotated[int, typer.Option(
            help="suite cases per edit kind and phrasing split")] = DEFAULT_PER_KIND,
        weights: Annotated[str | None, typer.Option(
            help="weights to evaluate (default: embedded mini)")] = None,
        steps: Annotated[int | None, typer.Option(
            help="denoising steps (default: model's)")] = None,
        seed: Annotated[int, typer.Option(help="noise seed, the same for every case")] = 0,
        guidance: Annotated[float | None, typer.Option(
            help="guidance 1..20 (distilled, or classifier-free on a mini trained for it)")] = None,
        speed: Annotated[EvalSpeed, typer.Option(
            help="the step cache's setting; quality (the default here) computes every step, so "
            "the score is the model's own")] = EvalSpeed.quality,
        save_outputs: Annotated[Path | None, typer.Option(
            help="write <id>.png and <id>_target.png here")] = None,
        json_out: Annotated[Path | None, typer.Option(
            "--json", help="write every case's numbers and the summary here")] = None,
        limit: Annotated[int | None, typer.Option(help="only the first N cases")] = None,
        preserve: Annotated[bool, typer.Option(
            help="paste back pixels the edit did not change")] = True,
        batch_size: Annotated[int | None, typer.Option(
            help="cases per model call (default: by image size)")] = None,
        device: Annotated[str | None, typer.Option(help="cpu, cuda, mps")] = None,
        dtype: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16")] = None,
        threads: Annotated[int | None, typer.Option(
            min=1, help="torch CPU threads (default: OMP_NUM_THREADS, else by model size)")] = None,
    ) -> None:
        """Score a model: PSNR to target, success, preservation, identity baseline beside."""
        from openkontext.eval.dataset import DatasetError, load_cases
        from openkontext.eval.report import print_report
        from openkontext.eval.runner import evaluate

        out, err = Console(), Console(stderr=True)
        try:
            with ExitStack() as stack:
                # 1. Options, the model, the cases (all checked before anything runs).
                if (dataset is None) == (suite is None):
                    raise DatasetError("give either a DATASET file or --suite")
                if suite is not None and suite not in SUITES:
                    raise DatasetError(f"--suite must be one of {', '.join(SUITES)}, "
                                       f"got {suite!r}")
                if limit is not None and limit < 1:
                    raise DatasetError(f"--limit must be positive, got {limit}")
                if dataset is not None:
                    check_input_file(dataset)
                if json_out is not None:
                    check_output_file(json_out)
                if save_outputs is not None:
                    check_output_folder(save_outputs)
                with err.status("loading model"):
                    kontext = load(weights, device, dtype, threads)
                native = kontext.model.preset.native_size
                if suite is not None:
                    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                    with err.status(f"writing the {suite} suite"):
                        dataset = build_suite(tmp, suite_size, native, suite,
                                              kontext.model.preset.latent_multiple)
                cases = load_cases(dataset, native, limit)
                # 2. Run with a bar over cases.
                bar = stack.enter_context(Progress(
                    TextColumn("[bold]evaluating"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=True))
                task = bar.add_task("evaluating", total=len(cases))
                report = evaluate(
                    kontext, cases, steps=steps, seed=seed, guidance=guidance,
                    speed=speed.value, preserve=preserve, batch_size=batch_size,
                    save_outputs=save_outputs,
                    on_progress=lambda done, total: bar.update(task, completed=done))
        except typer.Exit:
            raise
        except _bad_input_errors() as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except Exception as e:  # noqa: BLE001 - report in one line, no traceback
            err.print(f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))}",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None
        # 3. Tables, and the JSON file.
        report.settings["dataset"] = suite_label(suite_size, suite) if suite else str(dataset)
        print_report(report, out)
        if json_out is not None:
            report.write_json(json_out)
            err.print(f"wrote {json_out}")

    return eval_command


eval_command = build_command()


def register(app: typer.Typer, load: Loader = load_kontext) -> None:
    """Mount `eval` on `app` (the main CLI, or a test app with its own loader)."""
    app.command("eval")(build_command(load))
