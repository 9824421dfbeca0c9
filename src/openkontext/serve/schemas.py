"""Request and response bodies of the HTTP API (the hosted FLUX.1 Kontext shape).

Unknown request fields are ignored; a bad value gives 422 whose detail names the field. Numbers
and booleans are taken as JSON gives them: `true` is not a seed and `0` is not false.
Statuses are the hosted API's strings, exactly.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from openkontext.loras import MAX_LORAS, MAX_STRENGTH
from openkontext.resolution import parse_aspect_ratio
from openkontext.speed import Speed

IMAGE_FIELDS = ("input_image", "input_image_2", "input_image_3", "input_image_4")


def clean_text(value: str) -> str:
    """Refuse what no field can hold and some databases cannot store: NUL characters and lone
    UTF-16 surrogates (a JSON string can carry both)."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate, which is not a Unicode character") from None
    return value


Text = Annotated[str, AfterValidator(clean_text)]


class Status(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    REQUEST_MODERATED = "Request Moderated"
    CONTENT_MODERATED = "Content Moderated"
    ERROR = "Error"
    NOT_FOUND = "Task not found"


class LoraChoice(BaseModel):
    """One LoRA of a request: a name from `GET /v1/loras` and its strength."""

    model_config = ConfigDict(extra="forbid")  # a misspelt `scale` is refused, not ignored

    name: Text = Field(min_length=1, max_length=100, description="a name from GET /v1/loras")
    scale: float = Field(default=1.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, strict=True,
                         description="strength: 0 is no change, 1 the LoRA as trained")


class KontextRequest(BaseModel):
    """The body of `POST /v1/flux-kontext-{pro,max,dev}`."""

    model_config = ConfigDict(extra="ignore")

    prompt: Text = Field(min_length=1, description="edit instruction, or a description")
    input_image: Text | None = Field(
        default=None, description="image to edit: base64, data URL or http(s) URL; leave it "
        "out (or null) to generate from the prompt alone"
    )
    input_image_2: Text | None = Field(default=None, description="extra reference image")
    input_image_3: Text | None = Field(default=None, description="extra reference image")
    input_image_4: Text | None = Field(default=None, description="extra reference image")
    seed: int | None = Field(default=None, ge=0, lt=2**32 - 4, strict=True)
    aspect_ratio: Text | None = Field(default=None, description="'W:H' from 21:9 to 9:21")
    width: int | None = Field(default=None, ge=16, le=2048, multiple_of=16, strict=True)
    height: int | None = Field(default=None, ge=16, le=2048, multiple_of=16, strict=True)
    steps: int | None = Field(default=None, ge=1, le=50, strict=True)
    guidance: float | None = Field(default=None, ge=1, le=20, strict=True)
    num_images: int = Field(default=1, ge=1, le=4, strict=True)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_quality: int = Field(default=95, ge=1, le=100, strict=True,
                                description="jpeg/webp quality")
    safety_tolerance: int = Field(default=2, ge=0, le=6, strict=True,
                                  description="0 strict .. 6 permissive")
    prompt_upsampling: StrictBool = False
    webhook_url: Text | None = Field(default=None, max_length=2048)
    webhook_secret: Text | None = Field(default=None, max_length=256)
    # An extension of this server's (the hosted API has none): jobs run with these LoRAs.
    loras: list[LoraChoice] | None = Field(
        default=None, max_length=MAX_LORAS,
        description=f"LoRAs from GET /v1/loras, at most {MAX_LORAS}; an extension of this "
        "server's, which the hosted API does not have")
    # Also an extension, like the hosted API's `go_fast`: how much quality a faster edit may cost.
    speed: Speed | None = Field(
        default=None,
        description="quality (every transformer block at every step), balanced or fast (steps "
        "whose first block barely changed reuse the rest's last output); default: the server's "
        "setting; an extension of this server's, like the hosted API's go_fast")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt must not be blank")
        return prompt

    @field_validator("aspect_ratio", "webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if value == "" else value

    @field_validator("loras", mode="before")
    @classmethod
    def _no_loras_is_none(cls, value):
        return None if value == [] else value  # the same job, fingerprint and params

    @field_validator(*IMAGE_FIELDS)
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty: give an image (base64, data URL or http(s) URL), or "
                             "leave the field out to generate from the prompt alone")
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio(cls, value: str | None) -> str | None:
        if value is not None:
            parse_aspect_ratio(value)  # SizeError is a ValueError: 422 on this field
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> KontextRequest:
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise _field_error(missing, "width and height must be given together")
        if self.width is not None and self.aspect_ratio is not None:
            raise _field_error("aspect_ratio", "give either aspect_ratio or width/height")
        return self

    @model_validator(mode="after")
    def _references_need_input(self) -> KontextRequest:
        if self.input_image is None:
            for name in IMAGE_FIELDS[1:]:
                if getattr(self, name) is not None:
                    raise _field_error(name, f"{name} needs input_image as well")
        return self

    def images(self) -> list[tuple[str, str]]:
        """(field name, value) of every input image given, in order."""
        return [(n, getattr(self, n)) for n in IMAGE_FIELDS if getattr(self, n) is not None]

    def job_params(self) -> dict:
        """What the worker needs besides the images (which are stored as files)."""
        return self.model_dump(exclude=set(IMAGE_FIELDS) | {"webhook_secret"})


def _field_error(field: str, message: str):
    """A pydantic error located at `field` (model validators otherwise report no field)."""
    from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

    error = PydanticCustomError("value_error", message)
    details = [InitErrorDetails(type=error, loc=(field,), input=None)]
    return ValidationError.from_exception_data("KontextRequest", details)


class SubmitResponse(BaseModel):
    id: str
    polling_url: str
    input_mp: float | None = Field(default=None, description="megapixels of the input images")
    output_mp: float | None = Field(
        default=None, description="megapixels of all output images expected (null while the "
        "model loads or when the size cannot be made)",
    )


class ResultResponse(BaseModel):
    id: str
    status: Status
    result: dict | None = Field(
        default=None,
        description="when Ready: sample (signed URL), samples (when num_images > 1), prompt, "
        "seed, start_time, end_time, duration",
    )
    progress: float | None = Field(default=None, description="0..1 while Pending")
    details: dict | None = Field(default=None, description="why, for moderation and errors")


class CancelResponse(BaseModel):
    id: str
    cancelled: bool
    status: Status


class UsageInterval(BaseModel):
    start: float = Field(description="Unix time the hour or UTC day starts")
    jobs: int
    images: int
    megapixels: float
    compute_seconds: float


class UsageResponse(BaseModel):
    key: str = Field(description="'anonymous' without keys, else the start of the key's hash")
    jobs: int = Field(description="jobs the worker ran, whatever their outcome")
    images: int = Field(description="images delivered (Ready jobs)")
    megapixels: float = Field(description="megapixels of those images")
    compute_seconds: float = Field(description="model time; a batch's time is shared by its "
                                   "images")
    since: float | None = Field(description="Unix time of the first recorded use (in the window)")
    start: float | None = Field(default=None, description="the window asked for, rounded out "
                                "to whole hours (null: open)")
    end: float | None = Field(default=None, description="end of the window (exclusive)")
    intervals: list[UsageInterval] | None = Field(
        default=None, description="with ?interval=hour|day: the intervals that saw use")
    active_jobs: int = Field(description="jobs of this key queued or running now")
    max_jobs: int | None = Field(description="the server's limit on active_jobs, if any")


class LoraInfo(BaseModel):
    name: str = Field(description="what a request's loras[].name gives")
    rank: int = Field(description="the largest rank of its layers")
    layers: int = Field(description="layers of the model it changes")
    bytes: int = Field(description="size of its file")


class LoraList(BaseModel):
    loras: list[LoraInfo] = Field(description="the LoRAs a request may name, by name")


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    model: str | None = None
    queue_depth: int
    detail: str | None = None


class Problem(BaseModel):
    """The body of every 4xx/5xx but 422: what went wrong, in words."""

    detail: str


def problems(**described: str) -> dict:
    """OpenAPI `responses` for routes: status code -> description, each with a Problem body."""
    return {int(code.removeprefix("s")): {"model": Problem, "description": text}
            for code, text in described.items()}


AUTH = dict(s401="a key is needed: send it in x-key", s403="the key is wrong")


# -- sessions (docs/web.md) ---------------------------------------------------------

SESSION_NAME_MAX = 200


class TurnRequest(KontextRequest):
    """The body of `POST /v1/sessions/{id}/turns`: a job's fields, but the picture edited is the
    parent turn's; input_image_2..4 are references."""

    input_image: SkipJsonSchema[Text | None] = Field(default=None, exclude=True)
    parent: int | None = Field(default=None, ge=0, strict=True,
                               description="the turn to edit (default: the head); 0 = the "
                               "starting picture, or a generation when there is none")
    tier: Text | None = Field(default=None, description="the endpoint whose defaults apply "
                              "(default: pro)")
    style_preset: Text | None = Field(default=None, description="a name from /v1/info")

    @field_validator("style_preset", "tier", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if value == "" else value

    @model_validator(mode="after")
    def _references_need_input(self) -> TurnRequest:
        return self  # the parent's picture is the input; checked when it is known

    def job_params(self) -> dict:
        params = super().job_params()
        for name in ("parent", "tier"):
            params.pop(name)
        return params


class NewSession(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text = Field(default="", max_length=SESSION_NAME_MAX)
    input_image: Text | None = Field(
        default=None, description="the starting picture (turn 0): base64, data URL or http(s) "
        "URL; leave it out to start from text")

    @field_validator("input_image")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        return KontextRequest._not_empty(value)


class Rename(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Text = Field(max_length=SESSION_NAME_MAX)


class MoveHead(BaseModel):
    model_config = ConfigDict(extra="ignore")

    turn: int = Field(ge=0, strict=True, description="the turn to continue from; 0 = the start")


class TurnView(BaseModel):
    number: int
    parent: int
    instruction: str
    status: Status
    progress: float | None = Field(description="0..1 while Pending, 1 when Ready")
    details: dict | None = Field(description="why, for moderation and errors")
    seed: int | None
    settings: dict
    image: str | None = Field(description="signed picture URL, null until Ready")
    references: list[str] = Field(description="signed URLs of input_image_2..4")
    seconds: float | None
    created_at: float | None
    job_id: str | None


class SessionView(BaseModel):
    id: str
    name: str
    created_at: float
    updated_at: float
    head: int
    original: str | None = Field(description="signed URL of the starting picture, if any")
    turns: list[TurnView]


class SessionSummary(BaseModel):
    id: str
    name: str
    created_at: float
    updated_at: float
    turns: int
    thumbnail: str | None = Field(description="signed URL of the head's picture (else the "
                                  "latest one, else the original)")


class SessionList(BaseModel):
    sessions: list[SessionSummary] = Field(description="most recently updated first")


class TurnsMade(BaseModel):
    session: SessionView
    turns: list[int] = Field(description="the new turns' numbers (one per image)")


class Info(BaseModel):
    """What a client needs to build a form: model facts are null until the model has loaded."""

    model: str | None
    native_size: int | None
    max_side: int | None
    default_steps: int | None
    default_guidance: float | None
    aspect_ratios: list[str] | None
    style_presets: list[str] | None
    tiers: list[str]
    auth_required: bool
    prompt_upsampling: bool
    max_input_bytes: int
    state: Literal["ok", "loading", "error"]
