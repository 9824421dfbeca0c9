"""Input images of a request -> validated encoded bytes, or a 422 naming the field.

Each value is raw base64, a `data:image/...;base64,` URL, or an http(s) URL fetched under the
address policy of `netguard`. The bytes are decoded once here, so a bad image is refused at
submission rather than failing the job later; the worker decodes them again from the file.
"""

from __future__ import annotations

from openkontext import imaging
from openkontext.serve import netguard
from openkontext.serve.settings import ServeSettings


class FieldError(ValueError):
    """A request value that cannot be accepted: becomes 422 with `field` in the detail."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def read_image(field: str, value: str, settings: ServeSettings) -> bytes:
    limits = settings.image_limits
    try:
        if value.lstrip()[:8].lower().startswith(("http://", "https://")):
            data = netguard.fetch(
                value.strip(), settings.fetch_allow_hosts, limits.max_bytes,
                settings.fetch_timeout_seconds,
            )
        else:
            data = imaging.decode_base64(value, limits)
        imaging.load_image(data, limits)
    except (netguard.Refused, imaging.ImageError) as e:
        raise FieldError(field, str(e)) from None
    return data
