"""Built-in image classifiers: NudeNet's nudity detector, run with onnxruntime.

The detector is NudeNet v3's `320n.onnx`, a YOLOv8n model with 18 body-part classes. Only the
ONNX file is read; the `nudenet` package's Python code is never imported (it needs OpenCV). The
file is AGPL-3.0 and installed by the user (`pip install --no-deps nudenet==3.4.2`) or given as
a path.

How an output image is judged:

1. Preprocess: RGB, padded with black at the right and bottom to a square, resized to 320x320
   (bilinear), scaled to 0..1 -> float32 (N, 3, 320, 320): all images of a job run as a batch.
   PIL's bilinear filter also smooths when shrinking, where the `nudenet` package's OpenCV
   resize samples, so scores can differ slightly from that package's on large images.
2. The model answers (N, 22, 2100): per anchor the box (cx, cy, w, h, in input pixels), then
   the 18 class scores in `NUDENET_LABELS` order. A verdict needs only each class's highest
   score over the anchors, so boxes are ignored and no NMS is run.
3. Policy: a class in `NUDITY_POLICY` scored at or above the threshold (default 0.5) is refused
   when the request's `safety_tolerance` is below the class's level. Classes not listed (covered
   parts, faces, feet, bellies, armpits, male chests) are always allowed.

The `image_classifier` setting selects what runs (`load_image_classifier`): "auto" (NudeNet
when its weights and onnxruntime are installed and the model draws photographs, else nothing),
"nudenet" (must load), "none", or a 'module:attribute' plug-in.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from openkontext.serve.moderation import ImageClassifier, Verdict, load_plugin

NUDENET_FILE = "320n.onnx"
NUDENET_INPUT = 320  # side of the square the detector sees
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# class -> the safety_tolerance from which it is allowed; the level of the text policy's
# "nude"/"topless" band (moderation.TEXT_BANDS), so words and pictures agree.
NUDITY_POLICY: dict[str, int] = {
    "FEMALE_GENITALIA_EXPOSED": 5,
    "MALE_GENITALIA_EXPOSED": 5,
    "ANUS_EXPOSED": 5,
    "FEMALE_BREAST_EXPOSED": 5,
    "BUTTOCKS_EXPOSED": 5,
}
BUILTIN_CLASSIFIERS = ("auto", "nudenet", "none")


class ClassifierError(ValueError):
    """A configured image classifier cannot be loaded; the service must not start."""


class ClassifierUnavailable(ClassifierError):
    """The classifier's weights or onnxruntime are not installed ("auto" then runs without)."""


# -- weights and preprocessing -----------------------------------------------------------------


def nudenet_weights(path: str | Path | None = None) -> Path:
    """The detector file: `path` when given, else `320n.onnx` inside the installed `nudenet`
    package, found without importing it (find_spec on a top-level package runs no code)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ClassifierUnavailable(f"image classifier weights {path} do not exist")
        return path
    spec = importlib.util.find_spec("nudenet")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / NUDENET_FILE
        if candidate.is_file():
            return candidate
    raise ClassifierUnavailable(
        f"NudeNet weights not found: no installed `nudenet` package holds {NUDENET_FILE} "
        "(pip install --no-deps nudenet==3.4.2, or set image_classifier_weights)"
    )


def preprocess(image: Image.Image, size: int = NUDENET_INPUT) -> np.ndarray:
    """A PIL image -> float32 (3, size, size), RGB in 0..1, padded black at right/bottom."""
    rgb = image.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side))
    square.paste(rgb, (0, 0))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0


# -- decoding and policy -----------------------------------------------------------------------


def max_scores(output: np.ndarray) -> np.ndarray:
    """Detector output (N, 4 + 18, anchors) -> each class's highest score, (N, 18)."""
    if output.ndim != 3 or output.shape[1] != 4 + len(NUDENET_LABELS):
        raise ValueError(f"expected NudeNet output (N, 22, anchors), got {output.shape}")
    return output[:, 4:, :].max(axis=2)


def judge(
    scores: np.ndarray,
    tolerance: int,
    threshold: float = 0.5,
    policy: dict[str, int] = NUDITY_POLICY,
) -> Verdict:
    """(N, 18) class scores -> flagged at the first image with a class scored >= threshold that
    `policy` refuses at `tolerance`; the reason names that image's highest such class."""
    for i, row in enumerate(scores):
        refused = [
            (float(row[NUDENET_LABELS.index(name)]), name, level)
            for name, level in policy.items()
            if tolerance < level and row[NUDENET_LABELS.index(name)] >= threshold
        ]
        if refused:
            score, name, level = max(refused)
            return Verdict(
                True,
                f"output image {i + 1}: {name} {score:.2f}, refused below safety_tolerance {level}",
            )
    return Verdict(False)


# -- the classifier ----------------------------------------------------------------------------


class NudeNetClassifier:
    """An `ImageClassifier`: the NudeNet detector in one onnxruntime session on one CPU thread,
    made once and reused (onnxruntime sessions may be run from any thread)."""

    def __init__(self, weights: str | Path | None = None, threshold: float = 0.5):
        self.path = nudenet_weights(weights)
        self.threshold = threshold
        try:
            import onnxruntime
        except ImportError:
            raise ClassifierUnavailable(
                "onnxruntime is not installed (pip install 'openkontext[moderation]'), "
                f"needed to run {self.path}"
            ) from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise ClassifierError(f"cannot load image classifier weights {self.path}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name

    def __str__(self) -> str:
        return f"nudenet ({self.path}, score threshold {self.threshold})"

    def scores(self, images: list[Image.Image]) -> np.ndarray:
        """-> (N, 18) highest score of each class in each image."""
        batch = np.stack([preprocess(image) for image in images])  # (N, 3, 320, 320)
        (output,) = self.session.run(None, {self.input_name: batch})  # (N, 22, 2100)
        return max_scores(output)

    def __call__(self, images: list[Image.Image], tolerance: int) -> Verdict:
        if not images:
            return Verdict(False)
        return judge(self.scores(images), tolerance, self.threshold)


def load_image_classifier(
    setting: str | None,
    weights: str | None = None,
    threshold: float = 0.5,
    photographic: bool = True,
) -> tuple[ImageClassifier | None, str]:
    """The `image_classifier` setting -> (the classifier or None, a line saying what runs).

    "auto" skips NudeNet when it is not installed, unless `weights` names a file: a configured
    path is meant to be used, so its failure stops start-up as it does for "nudenet". It also
    skips it for a model that does not draw photographs (`photographic` False: the mini
    model's flat 64 px shapes), where the detector, trained on photographs, is unreliable: it
    scored a blurred generation of coloured dots 0.64 FEMALE_BREAST_EXPOSED."""
    if not setting or setting == "none":
        return None, "none"
    if setting == "nudenet" or (setting == "auto" and weights is not None):
        classifier = NudeNetClassifier(weights, threshold)
        return classifier, str(classifier)
    if setting == "auto" and not photographic:
        return None, (
            "none (auto: the mini model draws 64 px Shapes World pictures, on which NudeNet, "
            'trained on photographs, is unreliable; image_classifier = "nudenet" runs it)'
        )
    if setting == "auto":
        try:
            classifier = NudeNetClassifier(None, threshold)
        except ClassifierUnavailable as e:
            return None, f"none (auto: {e})"
        return classifier, str(classifier)
    return load_plugin(setting), f"plug-in {setting}"
