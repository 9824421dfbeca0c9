"""Input images of a request -> validated encoded bytes, or a 422 naming the field.

Each value is raw base64, a `data:image/...;base64,` URL, or an http(s) URL fetched under the
address policy of `netguard`. The bytes are decoded once here, so a bad image is refused at
submission rather than failing the job later; the worker decodes them again from the file.
`megapixels` gives the submit response's `input_mp` and `output_mp`.
"""

from __future__ import annotations

from openkontext import imaging
from openkontext.model import ModelPreset
from openkontext.resolution import SizeError, resolve_size
from openkontext.serve import netguard
from openkontext.serve.schemas import KontextRequest
from openkontext.serve.settings import ServeSettings


class FieldError(ValueError):
    """A request value that cannot be accepted: becomes 422 with `field` in the detail."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


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


def megapixels(preset: ModelPreset | None, sizes: list[tuple[int, int]],
               body: KontextRequest) -> tuple[float, float | None]:
    """-> (megapixels of the inputs, megapixels of all outputs expected). The output size is
    resolved as the pipeline will resolve it; None while the model is loading or when the size
    cannot be made (the job then fails with the reason)."""
    input_mp = round(sum(w * h for w, h in sizes) / 1e6, 6)
    if preset is None:
        return input_mp, None
    try:
        w, h = resolve_size(preset, sizes[0] if sizes else None, body.aspect_ratio, body.width,
                            body.height)
    except SizeError:
        return input_mp, None
    return input_mp, round(w * h * body.num_images / 1e6, 6)
