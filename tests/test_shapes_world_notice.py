"""The embedded model says, once, when it is given a picture that is not Shapes World: in the
result (Python), on stderr and in --json (CLI); the HTTP service's is in test_serve_app.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from openkontext.cli import app
from openkontext.model import PRESETS
from openkontext.pipeline import Kontext
from openkontext.world.likeness import NOTICE
from openkontext.world.render import render, to_pil
from openkontext.world.scene import Scene

SCENE = {"background": "yellow", "objects": [
    {"shape": "circle", "color": "red", "cell": "top left", "size": "large"}]}


def photo_like(size=(320, 240)) -> Image.Image:
    noise = np.random.default_rng(0)
    coarse = Image.fromarray((noise.random((6, 8, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC)).astype(float)
    return Image.fromarray(np.clip(smooth + noise.normal(0, 8, smooth.shape), 0, 255)
                           .astype(np.uint8))


@pytest.fixture(scope="module")
def kontext() -> Kontext:
    return Kontext.load("random")


def test_the_result_carries_the_notice_only_for_pictures_outside_shapes_world(kontext):
    scene = to_pil(render(Scene.from_dict(SCENE)))
    assert kontext.edit(scene, "make the circle blue", steps=1, seed=1).notice is None
    assert kontext.generate("on yellow: large red circle top left", steps=1).notice is None
    out = kontext.edit(photo_like(), "make the car red", steps=1, seed=1)
    assert out.notice == NOTICE and "docs/shapes-world.md" in out.notice
    # Only the mini presets know Shapes World alone.
    assert not PRESETS["kontext-dev"].shapes_world_only
    assert all(p.shapes_world_only for name, p in PRESETS.items() if name.startswith("mini"))


def test_the_cli_says_it_on_stderr_and_in_json(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo_like((640, 480)).save(photo)
    runner = CliRunner()
    args = ["edit", str(photo), "make the car red", "--weights", "random", "--steps", "1",
            "-o", str(tmp_path / "out.png")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "note: the embedded model knows only Shapes World" in r.stderr
    r = runner.invoke(app, [*args, "--json"])
    assert json.loads(r.stdout)["notice"] == NOTICE
    scene = tmp_path / "scene.png"
    to_pil(render(Scene.from_dict(SCENE))).save(scene)
    r = runner.invoke(app, ["edit", str(scene), "make the circle blue", "--weights", "random",
                            "--steps", "1", "-o", str(tmp_path / "ok.png")])
    assert r.exit_code == 0 and "note:" not in r.stderr
