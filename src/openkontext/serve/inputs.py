"""Input images of a request -> validated encoded bytes, or a 422 naming the field.

Each value is raw base64, a `data:image/...;base64,` URL, or an http(s) URL fetched under the
address policy of `netguard`. The bytes are decoded once here, so a bad image is refused at
submission rather than failing the job later; the worker decodes them again from the file.
`size_and_work` sizes the job as the pipeline will and refuses one over the server's limits
(the model's largest side, `max_job_megapixel_steps`), giving the submit response's `input_mp`
and `output_mp`.
"""

from __future__ import annotations

from openkontext import imaging
from openkontext.model import ModelPreset
from openkontext.pipeline import megapixel_steps
from openkontext.resolution import SizeError, resolve_size
from openkontext.serve import netguard
from openkontext.serve.schemas import KontextRequest
from openkontext.serve.settings import ServeSettings


class FieldError(ValueError):
    """A request value that cannot be accepted: becomes 422 with `field` in the detail, located
    in the body or, with `location="query"`, the query string. A field inside a list is a path,
    as pydantic writes it: ("loras", 0, "name")."""

    def __init__(self, field: str | tuple[str | int, ...], message: str, location: str = "body"):
        super().__init__(message)
        self.field = field
        self.message = message
        self.location = location


def read_image(field: str, value: str, settings: ServeSettings) -> tuple[bytes, tuple[int, int]]:
    """-> (the encoded bytes, the (width, height) of the decoded image)."""
    limits = settings.image_limits
    try:
        if value.lstrip()[:8].lower().startswith(("http://", "https://")):
            data = netguard.fetch(
                value.strip(), settings.fetch_allow_hosts, limits.max_bytes,
                settings.fetch_timeout_seconds,
            )
        else:
            data = imaging.decode_base64(value, limits)
        size = imaging.load_image(data, limits).size
    except (netguard.Refused, imaging.ImageError) as e:
        raise FieldError(field, str(e)) from None
    return data, size


def size_and_work(preset: ModelPreset | None, steps: int | None, sizes: list[tuple[int, int]],
                  body: KontextRequest, max_work: float) -> tuple[float, float | None]:
    """-> (megapixels of the inputs, megapixels of all outputs expected), sized as the pipeline
    will size the job (`steps`: the tier's default, else the model's). A size the model cannot
    make, or work over `max_work` megapixel-steps, is a FieldError. While the model is loading
    (no preset) the output is unknown (None) and the worker makes these checks instead."""
    input_mp = round(sum(w * h for w, h in sizes) / 1e6, 6)
    if preset is None:
        return input_mp, None
    try:
        out = resolve_size(preset, sizes[0] if sizes else None, body.aspect_ratio, body.width,
                           body.height, max_side=preset.max_side)
    except SizeError as e:
        field = ("width" if body.width is not None
                 else "aspect_ratio" if body.aspect_ratio is not None else "input_image")
        raise FieldError(field, str(e)) from None
    refs = [resolve_size(preset, size) for size in sizes]
    steps = body.steps or steps or preset.default_steps
    work = megapixel_steps(steps, body.num_images, out, refs)
    if work > max_work:
        field = "num_images" if body.num_images > 1 else "steps" if body.steps else "width"
        raise FieldError(field, over_budget(work, max_work))
    return input_mp, round(out[0] * out[1] * body.num_images / 1e6, 6)


def over_budget(work: float, limit: float) -> str:
    def figure(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

    return (f"this job is {figure(work)} megapixel-steps of work (steps x images x output and "
            f"reference megapixels), over this server's limit of {figure(limit)} "
            "(max_job_megapixel_steps); ask for fewer steps or images, or a smaller size")
