"""The built-in NudeNet image classifier: weights lookup, preprocessing, decoding, policy, the
`image_classifier` setting and a real server moderating with it."""

from __future__ import annotations

import importlib.util
import random
import sys

import numpy as np
import pytest
import typer
import uvicorn
from PIL import Image
from typer.testing import CliRunner

from openkontext.serve.app import create_app
from openkontext.serve.classifiers import (
    NUDENET_LABELS,
    NUDITY_POLICY,
    ClassifierError,
    ClassifierUnavailable,
    NudeNetClassifier,
    judge,
    load_image_classifier,
    max_scores,
    nudenet_weights,
    preprocess,
)
from openkontext.serve.cli import register
from openkontext.serve.settings import ServeSettings
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene

from .conftest import png_b64


def _nudenet_missing() -> str | None:
    """Why the real detector cannot run here, or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'openkontext[moderation]')"
    try:
        nudenet_weights()
    except ClassifierUnavailable as e:
        return str(e)
    return None


NUDENET_MISSING = _nudenet_missing()
needs_nudenet = pytest.mark.skipif(
    NUDENET_MISSING is not None, reason=f"NudeNet cannot run: {NUDENET_MISSING}"
)


@pytest.fixture(scope="module")
def nudenet() -> NudeNetClassifier:
    return NudeNetClassifier()


def _benign_pictures() -> list[Image.Image]:
    """A Shapes World scene and a smooth photo-like gradient (not square, so it is padded)."""
    scene = to_pil(render(random_scene(random.Random(2), min_objects=3), 256))
    y, x = np.mgrid[0:240, 0:360]
    gradient = np.stack([30 + x * 190 // 360, 60 + y * 140 // 240, 120 + 0 * x], axis=-1)
    return [scene, Image.fromarray(gradient.astype(np.uint8))]


def _output(*scores: dict[str, float], anchors: int = 2100) -> np.ndarray:
    """A detector output (N, 22, anchors) with low noise and, per image, the given class scores
    on anchor 1234."""
    rng = np.random.default_rng(0)
    out = rng.uniform(0, 0.01, (len(scores), 22, anchors)).astype(np.float32)
    out[:, :4] = rng.uniform(0, 320, (len(scores), 4, anchors))  # boxes: ignored
    for i, image_scores in enumerate(scores):
        for name, score in image_scores.items():
            out[i, 4 + NUDENET_LABELS.index(name), 1234] = score
    return out


# -- the real detector ---------------------------------------------------------------------------


@needs_nudenet
def test_nudenet_runs_and_passes_benign_pictures(nudenet):
    pictures = _benign_pictures()
    raw = nudenet.session.run(None, {nudenet.input_name: preprocess(pictures[0])[None]})
    assert raw[0].shape == (1, 22, 2100) and raw[0].dtype == np.float32
    scores = nudenet.scores(pictures)  # both in one batch
    assert scores.shape == (2, 18)
    np.testing.assert_allclose(scores[0], max_scores(raw[0])[0], rtol=1e-4, atol=1e-6)
    exposed = [NUDENET_LABELS.index(name) for name in NUDENET_LABELS if name.endswith("EXPOSED")]
    assert scores[:, exposed].max() < 0.5, dict(
        zip(NUDENET_LABELS, scores.max(axis=0), strict=True)
    )
    assert nudenet(pictures, 0) == nudenet(pictures, 6)
    assert not nudenet(pictures, 0).flagged
    assert str(nudenet).startswith("nudenet (") and nudenet.path.name == "320n.onnx"
    # The same pictures against a near-zero threshold: the verdict path of the real scores.
    touchy = NudeNetClassifier(threshold=1e-6)
    verdict = touchy(pictures, 0)
    assert verdict.flagged and verdict.reason.startswith("output image 1: ")
    assert verdict.reason.endswith(", refused below safety_tolerance 5")
    assert not touchy(pictures, 5).flagged


# -- preprocessing, decoding and policy ----------------------------------------------------------


def test_preprocess_pads_right_and_bottom_with_black():
    colour = np.array([200, 100, 50], np.float32) / 255
    wide = preprocess(Image.new("RGB", (160, 80), (200, 100, 50)))  # x2: image rows 0..159
    assert wide.shape == (3, 320, 320) and wide.dtype == np.float32
    np.testing.assert_allclose(wide[:, 10, 10], colour, atol=1e-6)
    np.testing.assert_allclose(wide[:, 150, 319], colour, atol=1e-6)
    assert not wide[:, 170:, :].any()  # the padding at the bottom
    tall = preprocess(Image.new("RGBA", (80, 160), (200, 100, 50, 0)))  # alpha dropped
    np.testing.assert_allclose(tall[:, 319, 150], colour, atol=1e-6)
    assert not tall[:, :, 170:].any()  # the padding at the right
    square = np.zeros((320, 320, 3), np.uint8)
    square[5, 7] = (255, 128, 0)
    exact = preprocess(Image.fromarray(square))  # already 320: no resampling
    assert tuple(exact[:, 5, 7]) == (1.0, np.float32(128 / 255), 0.0)
    assert exact.sum() == pytest.approx(1 + 128 / 255)


def test_decoding_takes_each_class_maximum_over_anchors():
    out = _output({"FEMALE_GENITALIA_EXPOSED": 0.9}, {"FACE_FEMALE": 0.7})
    scores = max_scores(out)
    assert scores.shape == (2, 18)
    assert scores[0, NUDENET_LABELS.index("FEMALE_GENITALIA_EXPOSED")] == pytest.approx(0.9)
    assert scores[1, NUDENET_LABELS.index("FACE_FEMALE")] == pytest.approx(0.7)
    assert scores[0, NUDENET_LABELS.index("FACE_FEMALE")] < 0.01  # boxes (up to 320) ignored
    with pytest.raises(ValueError, match=r"\(N, 22, anchors\)"):
        max_scores(out[:, :20])


def test_policy_refuses_exposed_classes_below_their_tolerance():
    genitalia = max_scores(_output({"FEMALE_GENITALIA_EXPOSED": 0.9}))
    flagged = judge(genitalia, 2)
    assert flagged.flagged and flagged.reason == (
        "output image 1: FEMALE_GENITALIA_EXPOSED 0.90, refused below safety_tolerance 5"
    )
    assert judge(genitalia, 4).flagged and not judge(genitalia, 5).flagged
    assert not judge(max_scores(_output({"FEMALE_GENITALIA_COVERED": 0.99})), 0).flagged
    assert not judge(max_scores(_output({"BELLY_EXPOSED": 0.99})), 0).flagged
    borderline = max_scores(_output({"BUTTOCKS_EXPOSED": 0.49}))
    assert not judge(borderline, 0, threshold=0.5).flagged
    assert judge(borderline, 0, threshold=0.4).flagged
    # The first offending image is named, with its highest refused class.
    two = max_scores(
        _output({"FACE_MALE": 0.95}, {"ANUS_EXPOSED": 0.6, "FEMALE_BREAST_EXPOSED": 0.83})
    )
    assert judge(two, 0).reason == (
        "output image 2: FEMALE_BREAST_EXPOSED 0.83, refused below safety_tolerance 5"
    )
    assert set(NUDITY_POLICY) <= set(NUDENET_LABELS)
    assert all(name.endswith("_EXPOSED") for name in NUDITY_POLICY)


# -- loading and the setting ---------------------------------------------------------------------


@pytest.fixture
def no_nudenet_installed(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "nudenet" else find_spec(name, *a),
    )


def test_missing_weights_are_a_clear_error(tmp_path, no_nudenet_installed):
    missing = tmp_path / "nowhere" / "320n.onnx"
    with pytest.raises(ClassifierUnavailable, match=f"weights {missing} do not exist"):
        nudenet_weights(missing)
    with pytest.raises(ClassifierUnavailable, match="nudenet==3.4.2"):
        nudenet_weights()
    with pytest.raises(ClassifierUnavailable, match="nudenet==3.4.2"):
        load_image_classifier("nudenet")
    # "auto" runs without a classifier when nothing is installed, but not past a set path.
    classifier, summary = load_image_classifier("auto")
    assert classifier is None and summary.startswith("none (auto: NudeNet weights not found")
    with pytest.raises(ClassifierUnavailable, match=str(missing)):
        load_image_classifier("auto", weights=str(missing))
    assert load_image_classifier("none") == (None, "none")


def test_missing_onnxruntime_is_a_clear_error(tmp_path, monkeypatch):
    weights = tmp_path / "320n.onnx"
    weights.write_bytes(b"not a model")
    installed = _nudenet_missing() is None
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(ClassifierUnavailable, match="onnxruntime is not installed"):
        load_image_classifier("nudenet", weights=str(weights))
    if installed:  # the weights are found, onnxruntime is not: "auto" runs without
        classifier, summary = load_image_classifier("auto")
        assert classifier is None and "onnxruntime is not installed" in summary


@needs_nudenet
def test_a_broken_weights_file_stops_even_auto(tmp_path):
    weights = tmp_path / "320n.onnx"
    weights.write_bytes(b"not a model")
    with pytest.raises(ClassifierError, match=f"cannot load image classifier weights {weights}"):
        load_image_classifier("auto", weights=str(weights))


def test_setting_values(tmp_path, monkeypatch):
    s = ServeSettings(data_dir=tmp_path)
    assert (s.image_classifier, s.image_classifier_weights, s.image_classifier_threshold) == (
        "auto",
        None,
        0.5,
    )
    assert ServeSettings(image_classifier=" NudeNet ").image_classifier == "nudenet"
    assert ServeSettings(image_classifier=None).image_classifier == "none"
    assert ServeSettings(image_classifier="").image_classifier == "none"
    assert ServeSettings(image_classifier="pkg.mod:Cls").image_classifier == "pkg.mod:Cls"
    with pytest.raises(ValueError, match="'auto', 'nudenet', 'none' or a 'module:attribute'"):
        ServeSettings(image_classifier="nsfw")
    with pytest.raises(ValueError, match="image_classifier_threshold"):
        ServeSettings(image_classifier_threshold=0)
    monkeypatch.setenv("OPENKONTEXT_IMAGE_CLASSIFIER", "nudenet")
    monkeypatch.setenv("OPENKONTEXT_IMAGE_CLASSIFIER_THRESHOLD", "0.7")
    s = ServeSettings()
    assert (s.image_classifier, s.image_classifier_threshold) == ("nudenet", 0.7)
    plugin, summary = load_image_classifier("openkontext.serve.moderation:TextPolicy")
    assert type(plugin).__name__ == "TextPolicy" and summary == (
        "plug-in openkontext.serve.moderation:TextPolicy"
    )


def test_start_up_stops_on_a_classifier_that_cannot_load(tmp_path, monkeypatch):
    missing = tmp_path / "missing.onnx"
    settings = ServeSettings(
        data_dir=tmp_path / "data",
        image_classifier="nudenet",
        image_classifier_weights=str(missing),
    )
    with pytest.raises(ClassifierUnavailable, match=str(missing)):
        create_app(settings)
    assert not (tmp_path / "data").exists()  # failed before making any file
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    args = ["serve", "--data-dir", str(tmp_path / "data")]
    env = {
        "OPENKONTEXT_IMAGE_CLASSIFIER": "nudenet",
        "OPENKONTEXT_IMAGE_CLASSIFIER_WEIGHTS": str(missing),
    }
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2 and not calls
    assert f"error: image classifier weights {missing} do not exist" in result.output
    result = CliRunner().invoke(app, args, env={"OPENKONTEXT_IMAGE_CLASSIFIER": "none"})
    assert result.exit_code == 0 and "image classifier: none\n" in result.output
    assert calls[0].state.services.worker.image_classifier is None


# -- a real server -------------------------------------------------------------------------------


@needs_nudenet
def test_server_moderates_with_nudenet(serve):
    live = serve(image_classifier="nudenet")
    assert isinstance(live.services.worker.image_classifier, NudeNetClassifier)
    assert live.app.state.image_classifier_summary.startswith("nudenet (")
    body = live.wait(
        live.submit(
            {
                "prompt": "make the square green",
                "input_image": png_b64(),
                "steps": 1,
                "safety_tolerance": 0,
            }
        ).json()["polling_url"]
    )
    assert body["status"] == "Ready", body
    # Near-zero threshold: the classifier's own verdict reaches the job.
    touchy = serve(image_classifier="nudenet", image_classifier_threshold=1e-6)
    flagged = touchy.wait(
        touchy.submit({"prompt": "x", "steps": 1, "safety_tolerance": 0}).json()["polling_url"]
    )
    assert flagged["status"] == "Content Moderated" and flagged["result"] is None
    assert flagged["details"]["reason"].startswith("output image 1: ")


def test_auto_leaves_nudenet_off_for_the_mini_model(nudenet):
    """NudeNet is trained on photographs; on the mini model's blurred 64 px shapes it fired
    (0.64 FEMALE_BREAST_EXPOSED on a generation of coloured dots), so "auto" keeps it for
    photographic models and "nudenet" still forces it."""
    from openkontext.serve.app import draws_photographs

    classifier, summary = load_image_classifier("auto", photographic=False)
    assert classifier is None and "mini model draws 64 px Shapes World pictures" in summary
    classifier, _ = load_image_classifier("nudenet", photographic=False)
    assert isinstance(classifier, NudeNetClassifier)
    classifier, _ = load_image_classifier("auto", photographic=True)
    assert isinstance(classifier, NudeNetClassifier)
    assert not draws_photographs(None) and not draws_photographs("random:mini")
    assert draws_photographs("/models/FLUX.1-Kontext-dev")
