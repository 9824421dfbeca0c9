"""Can a LoRA teach the embedded mini model an edit it has never seen, from 100 pairs and 30
minutes of one CPU thread? And what does wearing it cost the edits the model already knows?

Two new edits, each with an exact ground truth:

- mirror: "mirror the picture left to right", the rendered picture flipped;
- outline: "draw a white outline around every shape". On the 4x label map `render` draws,
  every object pixel within OUTLINE_FINE fine pixels (1.5 output pixels) of another label (the
  background or another object) turns white, then the map is averaged down as `render` does.

Steps, each skipped when its output is already in --out (so a stopped run goes on):

1. pairs/: 100 training scenes as NAME.png + NAME_after.png + NAME.txt, each instruction one of
   the task's TRAIN phrasings; test/cases.jsonl: 50 scenes of other seeds, each asked once with
   a trained phrasing and once with a HELDOUT one (eval dataset format, `phrasing_split`).
   Scenes the edit changes in less than MIN_CHANGED of the pixels (a symmetric layout, for the
   mirror) are drawn again. With --keep K, K of the pairs are edits the model already knows
   (Shapes World samples of every kind, with their ground truth): prior preservation.
2. The LoRA, trained with `train.lora.train_lora` (what `openkontext train lora` runs) until
   --steps or --minutes of training, whichever comes first; checkpoints let it resume, and
   copies of the checkpoint at SNAPSHOTS steps give the learning curve.
3. The test cases through the pipeline without and with the LoRA (from the file, through
   `load_lora`), scored by the rule below, per phrasing split; then each snapshot's.
4. The Shapes suite (`openkontext eval --suite shapes`) without and with the LoRA at strength 1.

Success on the new edit: PSNR to the ground truth >= the task's `success_db` and at least
MARGIN_DB above the PSNR of the unedited input (the identity baseline). For the mirror that is
the suite's own 25 dB; an outline is a thin line the mini autoencoder alone reconstructs at
~25 dB (median), so its bar is 22 dB (the input is at ~19 dB from its outlined target).

    .venv/bin/python benchmarks/mini/lora_teach.py [--task mirror] [--out out/lora_teach]
        [--keep 0] [--steps 4000] [--minutes 30] [--suite-size 20]
        [--copy-to examples/loras/NAME]
        [--picture docs/images/NAME.png]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openkontext.eval.runner import evaluate
from openkontext.eval.suite import build_suite
from openkontext.model.lora import Lora, LoraDelta, applied
from openkontext.pipeline import Kontext
from openkontext.train.lora import LoraTrainConfig, checkpoint_path, train_lora
from openkontext.train.pairs import read_pairs
from openkontext.weights.lora import load_lora
from openkontext.world.render import downsample, label_maps, render, to_pil
from openkontext.world.sampling import sample_edit
from openkontext.world.scene import COLORS, random_scene

OUTLINE_FINE = 6  # outline width in fine (4x) pixels: 1.5 px of the rendered picture
MARGIN_DB = 2.0
MIN_CHANGED = 0.02  # share of the pixels an edit must change for its scene to be used
SEEDS = {"train": 7100, "test": 7200}
SNAPSHOTS = (250, 500, 1000, 2000)  # steps whose adapters are scored too (the learning curve)


@dataclass(frozen=True)
class Task:
    name: str
    success_db: float
    train: tuple[str, ...]  # phrasings the LoRA is trained on
    heldout: tuple[str, ...]  # phrasings only the test asks with

    def truth(self, scene, size: int) -> np.ndarray:
        picture = outline(scene, size) if self.name == "outline" else render(scene, size)[:, ::-1]
        return np.ascontiguousarray(picture)

    def scene(self, rng: random.Random, size: int):
        """A scene with at least one object that the edit changes visibly (MIN_CHANGED)."""
        while True:
            scene = random_scene(rng, min_objects=1)
            if np.any(render(scene, size) != self.truth(scene, size), -1).mean() >= MIN_CHANGED:
                return scene


TASKS = {
    "outline": Task("outline", 22.0, (
        "draw a white outline around every shape",
        "outline each shape in white",
        "add a white border around all the shapes",
        "trace every object with a white line",
        "give each shape a white outline",
    ), (
        "put a white outline around each object",
        "draw white edges around the shapes",
    )),
    "mirror": Task("mirror", 25.0, (
        "mirror the picture left to right",
        "flip the image horizontally",
        "flip it left to right",
        "mirror the image horizontally",
        "reflect the picture left to right",
    ), (
        "make a mirror image of the picture",
        "swap the left and right sides of the picture",
    )),
}


def outline(scene, size: int) -> np.ndarray:
    """(H, W, 3) uint8: the scene with every object's rim (object pixels within OUTLINE_FINE
    fine pixels of another label) painted white."""
    labels = label_maps([scene], size)[0]  # (4H, 4W) colour indices
    k, (h, w) = OUTLINE_FINE, labels.shape
    padded = np.pad(labels, k, mode="edge")  # the canvas edge is not another label
    near_other = np.zeros(labels.shape, dtype=bool)
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            near_other |= padded[k + dy:k + dy + h, k + dx:k + dx + w] != labels
    rim = near_other & (labels != list(COLORS).index(scene.background))
    return downsample(np.where(rim, list(COLORS).index("white"), labels)[None])[0]


# -- 1. data ------------------------------------------------------------------------------------


def write_pairs(folder: Path, task: Task, count: int, size: int, keep: int = 0) -> None:
    """`count` pairs: `count - keep` of the task, then `keep` edits of the kinds the model
    knows (Shapes World samples with their ground truth and training phrasings)."""
    rng = random.Random(SEEDS["train"])
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count - keep):
        scene = task.scene(rng, size)
        to_pil(render(scene, size)).save(folder / f"{i:03d}.png")
        to_pil(task.truth(scene, size)).save(folder / f"{i:03d}_after.png")
        (folder / f"{i:03d}.txt").write_text(rng.choice(task.train) + "\n")
    for i in range(keep):
        sample = sample_edit(rng)
        source, target, _ = sample.images(size)
        to_pil(source).save(folder / f"known{i:03d}.png")
        to_pil(target).save(folder / f"known{i:03d}_after.png")
        (folder / f"known{i:03d}.txt").write_text(sample.instruction + "\n")


def write_tests(folder: Path, task: Task, count: int, size: int) -> Path:
    rng = random.Random(SEEDS["test"])
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        scene = task.scene(rng, size)
        to_pil(render(scene, size)).save(folder / f"{i:03d}.png")
        to_pil(task.truth(scene, size)).save(folder / f"{i:03d}_t.png")
        for split, options in (("train", task.train), ("heldout", task.heldout)):
            lines.append(json.dumps({
                "id": f"{split}-{i:03d}", "category": task.name, "input": f"{i:03d}.png",
                "target": f"{i:03d}_t.png", "instruction": rng.choice(options),
                "phrasing_split": split}))
    path = folder / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- 3. and 4. scores ---------------------------------------------------------------------------


def teach_scores(kontext: Kontext, task: Task, cases: Path, lora) -> dict:
    """Per phrasing split: cases, success rate (the task's rule), median PSNR and identity."""
    with applied(kontext.model.flux, [(lora, 1.0)] if lora is not None else []):
        report = evaluate(kontext, cases)
    out = {}
    for split in ("train", "heldout"):
        scores = [c.turns[0] for c in report.cases if c.phrasing_split == split]
        wins = [s.psnr >= task.success_db and s.psnr >= s.identity_psnr + MARGIN_DB
                for s in scores]
        out[split] = {
            "n": len(scores),
            "success": sum(wins) / len(scores),
            "psnr_median": float(np.median([s.psnr for s in scores])),
            "identity_median": float(np.median([s.identity_psnr for s in scores])),
        }
    return out


def suite_scores(kontext: Kontext, per_kind: int, lora) -> dict:
    """The Shapes suite's success rate (25 dB) and median PSNR per category."""
    with tempfile.TemporaryDirectory() as tmp, \
            applied(kontext.model.flux, [(lora, 1.0)] if lora is not None else []):
        report = evaluate(kontext, build_suite(tmp, per_kind, kontext.model.preset.native_size))
    rows = {k: {"success": s.success_rate, "psnr_median": s.psnr_median}
            for k, s in report.by_category().items()}
    chains = [c.turns[-1] for c in report.cases if c.is_chain]
    rows["chain (last turn)"] = {"success": sum(s.success for s in chains) / len(chains),
                                 "psnr_median": float(np.median([s.psnr for s in chains]))}
    return rows


def snapshot_lora(path: Path) -> Lora:
    """The adapters a copy of the training checkpoint holds."""
    state = torch.load(path, weights_only=False)
    scale = state["config"]["alpha"] / state["config"]["rank"]
    lora = Lora(path.stem)
    for layer, factors in state["lora"].items():
        for down, up in factors:
            lora.add(layer, LoraDelta(down, up, scale))
    return lora


def print_tables(results: dict) -> None:
    teach, task = results["teach"], TASKS[results["task"]]
    print(f"\n{task.name}: success = PSNR >= {task.success_db:g} dB and >= identity + "
          f"{MARGIN_DB:g} dB; {teach['before']['train']['n']} test scenes per split")
    print(f"{'phrasings':<10} {'before':>8} {'after':>8} {'PSNR before':>12} {'PSNR after':>11}"
          f" {'identity':>9}")
    for split in ("train", "heldout"):
        b, a = teach["before"][split], teach["after"][split]
        print(f"{split:<10} {b['success']:>8.0%} {a['success']:>8.0%} {b['psnr_median']:>12.1f}"
              f" {a['psnr_median']:>11.1f} {b['identity_median']:>9.1f}")
    if results.get("curve"):
        print("\nlearning curve: step, minutes, success on trained / held-out phrasings")
        for row in results["curve"]:
            print(f"{row['step']:>6} {row['minutes']:>6.1f} {row['train']['success']:>6.0%} / "
                  f"{row['heldout']['success']:.0%}")
    if "suite" in results:
        print("\nShapes suite, success (25 dB) and median PSNR, without / with the LoRA at 1")
        without, worn = results["suite"]["without"], results["suite"]["with"]
        for kind in without:
            w, x = without[kind], worn[kind]
            print(f"{kind:<18} {w['success']:>5.0%} / {x['success']:<5.0%} "
                  f"{w['psnr_median']:>6.1f} / {x['psnr_median']:.1f}")
    t = results["training"]
    print(f"\ntraining: {t['pairs']} pairs, {t['steps']} steps in {t['seconds'] / 60:.1f} min; "
          f"loss on the pairs {t['pairs_loss_before']:.4f} -> {t['pairs_loss_after']:.4f}; "
          f"file {t['file_bytes'] / 1e6:.2f} MB")


def picture(kontext: Kontext, cases: Path, lora_file: Path, path: Path, count: int = 4) -> None:
    """Rows of test cases (held-out phrasings): input, the model, the model wearing the LoRA
    (`loras=` of `Kontext.edit`), the ground truth; 4x nearest-neighbour."""
    from PIL import Image

    lines = [json.loads(x) for x in cases.read_text().splitlines()]
    rows = []
    for case in [c for c in lines if c["phrasing_split"] == "heldout"][:count]:
        image = Image.open(cases.parent / case["input"]).convert("RGB")
        truth = Image.open(cases.parent / case["target"]).convert("RGB")
        plain, worn = (kontext.edit(image, case["instruction"], seed=0, loras=loras).images[0]
                       for loras in ([], [(str(lora_file), 1.0)]))
        rows.append(np.concatenate([np.asarray(x) for x in (image, plain, worn, truth)], 1))
    grid = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(path)


# -- the run ------------------------------------------------------------------------------------


class TimeUp(Exception):
    pass


def train(kontext: Kontext, pairs_dir: Path, out: Path, cfg: LoraTrainConfig,
          minutes: float) -> dict:
    """Train (or resume) until cfg.steps or `minutes` of training in all -> its figures.
    Copies of the checkpoint at SNAPSHOTS steps go to snapshots/, with the time they took."""
    from openkontext.train.lora import encode_pairs, pairs_loss, uses_bf16

    model = kontext.model
    pairs = read_pairs(pairs_dir, model.preset)
    clock = out.with_name("train_seconds.json")  # training time of earlier, stopped runs
    before = json.loads(clock.read_text())["seconds"] if clock.exists() else 0.0
    snapshots = out.parent / "snapshots"
    snapshots.mkdir(exist_ok=True)
    started = time.perf_counter()

    def spent() -> float:
        return before + time.perf_counter() - started

    def hook(step: int, _loss: float) -> None:
        if step % cfg.checkpoint_every:
            return
        # just checkpointed: a copy is a snapshot, and stopping loses nothing
        clock.write_text(json.dumps({"seconds": spent(), "step": step}))
        if step in SNAPSHOTS:
            shutil.copyfile(checkpoint_path(out), snapshots / f"step{step:05d}.ckpt")
            (snapshots / f"step{step:05d}.json").write_text(json.dumps({"seconds": spent()}))
        if spent() > 60 * minutes:
            raise TimeUp

    try:
        run = train_lora(model, pairs, out, cfg, on_step=hook)
    except TimeUp:
        state = torch.load(checkpoint_path(out), weights_only=False)
        cfg = LoraTrainConfig(**{**state["config"], "targets": tuple(state["config"]["targets"]),
                                 "steps": state["step"]})
        run = train_lora(model, pairs, out, cfg)  # writes the file from the checkpoint
    seconds = spent()
    clock.write_text(json.dumps({"seconds": seconds, "step": run.steps}))
    buckets = encode_pairs(model, pairs, uses_bf16(model, cfg))
    return {"steps": run.steps, "seconds": seconds, "pairs": len(pairs),
            "pairs_loss_before": pairs_loss(model, buckets, None, cfg),
            "pairs_loss_after": pairs_loss(model, buckets, run.lora, cfg),
            "file_bytes": out.stat().st_size, "rank": cfg.rank, "batch": cfg.batch,
            "lr": cfg.lr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=list(TASKS), default="mirror")
    ap.add_argument("--out", type=Path, default=Path("out/lora_teach"))
    ap.add_argument("--pairs", type=int, default=100, help="training pairs (at most 100)")
    ap.add_argument("--keep", type=int, default=0,
                    help="of the pairs, this many are edits the model knows (the rest teach)")
    ap.add_argument("--tests", type=int, default=50, help="test scenes")
    ap.add_argument("--steps", type=int, default=4000, help="most training steps")
    ap.add_argument("--minutes", type=float, default=30.0, help="most training time")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--suite-size", type=int, default=20,
                    help="suite cases per kind and split (0: skip the suite)")
    ap.add_argument("--copy-to", type=Path, help="copy the LoRA file here when done")
    ap.add_argument("--picture", type=Path,
                    help="write a PNG of held-out cases: input, without, with the LoRA, truth")
    args = ap.parse_args()
    if not 1 <= args.pairs <= 100:
        ap.error("--pairs must be 1..100")
    if not 0 <= args.keep < args.pairs:
        ap.error("--keep must be 0..--pairs - 1")
    torch.set_num_threads(1)
    task, folder = TASKS[args.task], args.out / args.task
    kontext = Kontext.load(threads=1)
    size = kontext.model.preset.native_size
    # 1. Data.
    if not (folder / "pairs").exists():
        write_pairs(folder / "pairs", task, args.pairs, size, args.keep)
    cases = folder / "test" / "cases.jsonl"
    if not cases.exists():
        write_tests(folder / "test", task, args.tests, size)
    # 2. The LoRA.
    lora_file = folder / f"{task.name}.safetensors"
    results_file = folder / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=1))

    if "training" not in results:
        cfg = LoraTrainConfig(rank=args.rank, alpha=args.rank, steps=args.steps, lr=args.lr,
                              batch=args.batch, checkpoint_every=50)
        results = {"task": task.name, "keep": args.keep,
                   "training": train(kontext, folder / "pairs", lora_file, cfg, args.minutes)}
        save()
    lora = load_lora(lora_file)
    # 3. The new edit, before and after, and along the way.
    if "teach" not in results:
        results["teach"] = {"before": teach_scores(kontext, task, cases, None),
                            "after": teach_scores(kontext, task, cases, lora)}
        save()
    if "curve" not in results:
        results["curve"] = []
        for snap in sorted((folder / "snapshots").glob("step*.ckpt")):
            seconds = json.loads(snap.with_suffix(".json").read_text())["seconds"]
            row = teach_scores(kontext, task, cases, snapshot_lora(snap))
            results["curve"].append({"step": int(snap.stem[4:]), "minutes": seconds / 60, **row})
        t = results["training"]
        results["curve"].append({"step": t["steps"], "minutes": t["seconds"] / 60,
                                 **results["teach"]["after"]})
        save()
    # 4. What wearing it costs the edits the model knows.
    if args.suite_size and "suite" not in results:
        results["suite"] = {"without": suite_scores(kontext, args.suite_size, None),
                            "with": suite_scores(kontext, args.suite_size, lora),
                            "per_kind": args.suite_size}
        save()
    print_tables(results)
    if args.picture is not None:
        picture(kontext, cases, lora_file, args.picture)
        print(f"wrote {args.picture}")
    if args.copy_to is not None:
        args.copy_to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lora_file, args.copy_to)
        print(f"copied {lora_file} to {args.copy_to}")


if __name__ == "__main__":
    main()
