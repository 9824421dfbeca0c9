"""Run a model over evaluation cases and score every output.

Cases run in rounds: round k is turn k of every case that has one (single cases only have turn
1; a chain's turn k edits its own turn k-1 output). Within a round, cases whose current inputs
have the same size (or that are all generations) go through the pipeline's tensor-level core
in batches, one prompt per case: on a busy 2-core CPU a batch of 32 mini edits took ~1.4 s per
edit against ~5 s one `Kontext.run` at a time. `run_batch` takes the same steps as
`Kontext.run` for one image (size snapping, references resized with the same filter, the same
seed for every case, paste-back of unedited pixels), so a case scores as
`openkontext edit --seed S` would make it, up to float rounding between batch sizes.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from openkontext import imaging
from openkontext.eval.dataset import Case, DatasetError, Picture, load_cases
from openkontext.eval.metrics import TurnScore, score_turn
from openkontext.eval.report import CaseResult, Report
from openkontext.files import atomic_write
from openkontext.pipeline import Kontext, Settings, check_guidance
from openkontext.resolution import resolve_size
from openkontext.speed import check_speed

# A score is the model's, with every step computed: the step cache's shortcuts (`balanced`,
# `fast`) are a serving trade-off, measured against this by benchmarks/step_cache.py.
EVAL_SPEED = "quality"
MAX_BATCH_PIXELS = 32 * 64 * 64  # default batch: 32 images at 64 px, 2 at 181 px, 1 at 1024 px

Progress = Callable[[int, int], None]  # (cases done, cases in all)


def run_batch(
    kontext: Kontext,
    prompts: list[str],
    inputs: list[np.ndarray] | list[list[np.ndarray]] | None,
    seed: int,
    steps: int,
    guidance: float,
    preserve: bool = True,
    size: tuple[int, int] | None = None,
    speed: str = EVAL_SPEED,
) -> list[np.ndarray]:
    """One output (H, W, 3) uint8 per prompt: edits of `inputs` (one per prompt: an image, or
    the input and its references; all of one output size and reference sizes) or, with inputs
    None, generations at `size` (width, height; default the model's native square). Runs as one
    batch through `Kontext.run_many`, so every case is prepared exactly as `Kontext.run` would."""
    width, height = (None, None) if inputs or size is None else size
    settings = Settings(seed=seed, steps=steps, guidance=guidance, preserve=preserve,
                        width=width, height=height, speed=speed)
    images = ([[Image.fromarray(a, "RGB") for a in (i if isinstance(i, list) else [i])]
               for i in inputs] if inputs else [[] for _ in prompts])
    results = kontext.run_many([(p, i, settings) for p, i in zip(prompts, images, strict=True)])
    return [np.asarray(r.images[0]) for r in results]


def _load(case: Case, picture: Picture, field: str) -> np.ndarray:
    try:
        return picture.load()
    except (imaging.ImageError, OSError) as e:
        raise DatasetError(f"{case.where}, field {field!r}: {e}") from None


def _png(array: np.ndarray, metadata: imaging.OutputMetadata | None = None) -> bytes:
    if metadata is not None:
        return imaging.encode_image(Image.fromarray(array, "RGB"), "png", metadata)
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, "PNG")
    return buf.getvalue()


def score_output(case: Case, output: np.ndarray, k: int = 1,
                 original: np.ndarray | None = None,
                 target: np.ndarray | None = None) -> TurnScore:
    """Score `output` (H, W, 3) uint8 as turn k of `case`, however it was made (the runner, the
    CLI, the HTTP API); original (the case's input) and target (the turn's) are loaded when
    not given."""
    if original is None and case.input is not None:
        original = _load(case, case.input, "input")
    turn = case.turns[k - 1]
    if target is None:
        target = _load(case, turn.target, f"chain[{k}].target" if case.is_chain else "target")
    # The ground truth the turn starts from: the input, or the previous turn's target.
    start = original if k == 1 else _load(case, case.start(k), f"chain[{k - 1}].target")
    return score_turn(output, target, start, case.change_region(k, start, target), original,
                      k, turn.instruction, turn.target.scene)


def _score(case: Case, k: int, output: np.ndarray, original: np.ndarray | None,
           folder: Path | None, meta: imaging.OutputMetadata) -> TurnScore:
    """Score turn k of a case (and write output and target into `folder`, if given)."""
    turn = case.turns[k - 1]
    target = _load(case, turn.target, f"chain[{k}].target" if case.is_chain else "target")
    score = score_output(case, output, k, original, target)
    if folder is not None:
        name = f"{case.id}_turn{k}" if case.is_chain else case.id
        meta = dataclasses.replace(meta, prompt=turn.instruction)
        atomic_write(folder / f"{name}.png", _png(output, meta))
        atomic_write(folder / f"{name}_target.png", _png(target))
    return score


def _batch_size(size: tuple[int, int], batch_size: int | None) -> int:
    if batch_size is not None:
        return batch_size
    return max(1, min(32, MAX_BATCH_PIXELS // (size[0] * size[1])))


def evaluate(
    kontext: Kontext,
    cases: Sequence[Case] | str | Path,
    *,
    steps: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    preserve: bool = True,
    batch_size: int | None = None,
    save_outputs: str | Path | None = None,
    limit: int | None = None,
    on_progress: Progress | None = None,
    speed: str = EVAL_SPEED,
) -> Report:
    """Run `kontext` on every case (a list, or a JSONL path) and score it.

    steps/guidance default to the model's; every case uses `seed`; `speed` is the step cache's
    setting (openkontext.speed), every step computed unless told otherwise. batch_size None
    picks one by image size (MAX_BATCH_PIXELS). save_outputs: a folder for <id>.png and
    <id>_target.png (chains: <id>_turn<k>.png and <id>_turn<k>_target.png), each at its own
    size.
    """
    started = time.perf_counter()
    preset = kontext.model.preset
    if not isinstance(cases, Sequence) or isinstance(cases, str):
        cases = load_cases(cases, preset.native_size, limit)
    cases = list(cases)[:limit]
    steps = preset.default_steps if steps is None else steps
    guidance = preset.default_guidance if guidance is None else guidance
    if not 1 <= steps <= 50:
        raise ValueError(f"steps must be 1..50, got {steps}")
    check_guidance(guidance)
    check_speed(speed, kontext.speeds)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    folder = None if save_outputs is None else Path(save_outputs)
    if folder is not None and len({c.id for c in cases}) < len(cases):
        raise ValueError("case ids must be unique to save outputs under their names")
    results = [CaseResult(c.id, c.category, c.is_chain, c.phrasing_split) for c in cases]
    current: dict[int, np.ndarray] = {}  # a chain's latest output, the next turn's input
    done, runs = 0, 0

    for k in range(1, max((len(c.turns) for c in cases), default=0) + 1):
        # 1. This round's cases, grouped by output size (the input's, snapped; a generation's
        # target's, snapped) and the sizes of the references (None: a generation).
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(cases):
            if len(c.turns) < k:
                continue
            if k > 1:
                key = (resolve_size(preset, current[i].shape[1::-1]), ())
            elif c.input is not None:
                key = (resolve_size(preset, c.input.size),
                       tuple(resolve_size(preset, r.size) for r in c.references))
            else:
                key = (resolve_size(preset, c.turns[0].target.size), None)
            groups.setdefault(key, []).append(i)
        for (size, reference_sizes), members in groups.items():
            step = _batch_size(size, batch_size)
            for at in range(0, len(members), step):
                chunk = members[at:at + step]
                # 2. Inputs (the case's, or the chain's previous output, and the case's
                # references) through the model.
                originals = {i: _load(cases[i], cases[i].input, "input")
                             for i in chunk if cases[i].input is not None}
                inputs = None
                if reference_sizes is not None:
                    inputs = [[current.get(i, originals.get(i))]
                              + [_load(cases[i], r, f"references[{n}]")
                                 for n, r in enumerate(cases[i].references if k == 1 else ())]
                              for i in chunk]
                prompts = [cases[i].turns[k - 1].instruction for i in chunk]
                outputs = run_batch(kontext, prompts, inputs, seed, steps, guidance, preserve,
                                    size, speed)
                runs += len(chunk)
                # 3. Score, save, and carry chain outputs to the next round.
                for i, output in zip(chunk, outputs, strict=True):
                    case = cases[i]
                    results[i].turns.append(_score(case, k, output, originals.get(i), folder,
                                                   imaging.OutputMetadata(preset.name, seed)))
                    if k < len(case.turns):
                        current[i] = output
                    else:
                        current.pop(i, None)
                        done += 1
                        if on_progress is not None:
                            on_progress(done, len(cases))

    settings = {"model": preset.name, "steps": steps, "guidance": guidance, "seed": seed,
                "preserve": preserve, "batch_size": batch_size, "speed": speed}
    return Report(results, settings, time.perf_counter() - started, runs)
