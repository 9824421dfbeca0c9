"""One `ServeSettings` object for the HTTP service.

Sources, strongest first: keyword arguments (the CLI's flags), environment variables prefixed
`OPENKONTEXT_` (lists and mappings as JSON, e.g. `OPENKONTEXT_API_KEYS='["sha256:..."]'`), then
an optional TOML config file (`load_settings(config_file=...)` or `OPENKONTEXT_CONFIG`).

API keys are held only as SHA-256 hashes: an entry written `sha256:<64 hex>` is taken as a hash,
any other entry is a plain key that is hashed on load. Config files should carry hashes
(`openkontext serve --hash-key KEY` prints one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from openkontext.imaging import ImageLimits
from openkontext.serve.classifiers import BUILTIN_CLASSIFIERS
from openkontext.speed import Speed

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("openkontext_config_file", default=None)
HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """A plain API key -> 'sha256:<hex>', the form kept in memory and written to config files."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


class Tier(BaseModel):
    """Defaults of one endpoint (`/v1/flux-kontext-<tier>`); a request's own values win."""

    steps: int | None = Field(default=None, ge=1, le=50)  # None: the model's default
    guidance: float | None = Field(default=None, ge=1, le=20)


def _default_tiers() -> dict[str, Tier]:
    return {"dev": Tier(), "pro": Tier(), "max": Tier(steps=40)}


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENKONTEXT_", extra="ignore")

    # Where and how to listen.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None  # e.g. https://edit.example.com; else from the request
    trust_forwarded_headers: bool = True  # X-Forwarded-Proto/Host shape absolute URLs
    # The model.
    weights: str | None = None  # default: the embedded mini model; or kontext-dev, a path
    text_encoders: str | None = None  # T5/CLIP folder when the weights lack them
    tokenizers: str | None = None  # tokenizer/ + tokenizer_2/ folder when the weights lack them
    device: str | None = None  # default: the best available
    dtype: Literal["fp32", "bf16", "fp16"] | None = None  # default: bf16 on GPUs, fp32 on CPU
    weights_dtype: Literal["fp8", "bf16", "fp16", "fp32"] | None = None  # fp8: half of bf16
    offload: Literal["none", "model", "blocks"] = "none"  # see `openkontext edit --help`
    # torch CPU threads for the worker; default: OMP_NUM_THREADS, else by model size (one for
    # the mini models; see openkontext.threads)
    threads: int | None = Field(default=None, ge=1)
    # A request's `speed` when it names none (quality | balanced | fast; see openkontext.speed);
    # None: the pipeline's default.
    speed: Speed | None = None
    # torch.compile the transformer: the same pictures, about 0.87x the time of a mini edit after
    # a first edit that compiles (about 40 s on a 2-core CPU; docs/benchmarks.md).
    compile_transformer: bool = False
    # LoRAs clients may ask for by name: NAME.safetensors files in this folder (clients never
    # pass paths); None: no LoRAs. A configured folder that does not exist stops start-up.
    loras_dir: Path | None = None
    # State.
    data_dir: Path = Path("openkontext-data")
    database_url: str | None = None  # default: SQLite file data_dir/jobs.sqlite3 in WAL mode
    url_secret: str | None = None  # signs download URLs; default: data_dir/url-secret
    # Access.
    api_keys: list[str] = Field(default_factory=list)  # hashes ('sha256:...') or plain keys
    # Requests and the queue.
    tiers: dict[str, Tier] = Field(default_factory=_default_tiers)
    prompt_max_length: int = Field(default=4096, ge=1)
    queue_max_size: int = Field(default=32, ge=1)
    max_jobs_per_key: int | None = Field(default=None, ge=1)  # queued + running, per API key
    max_batch_images: int = Field(default=4, ge=1)  # images per model batch; 1: no batching
    # A job's work: steps x images x (output + input megapixels); refused at submission above
    # this (the default lets four 1 MP edits of a 1 MP picture at 50 steps through, not four
    # 4 MP images).
    max_job_megapixel_steps: float = Field(default=400.0, gt=0)
    # Request bodies larger than this get 413 before they are read whole; None: what four input
    # images of max_input_bytes need in base64, plus 1 MiB for the rest of the body.
    max_body_bytes: int | None = Field(default=None, ge=1024)
    # A running job's claim lasts this long unless its process renews it (every third of it);
    # a process that dies or hangs gives its jobs back to the queue after it.
    job_lease_seconds: float = Field(default=30.0, ge=0.5)
    # Who runs the model: "local" (a worker thread in this process) or "ray" (a Ray Serve
    # deployment, one pipeline per replica; docs/scale.md). With "ray", data_dir must be a
    # folder every API process and every replica sees at the same path (inputs and results).
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # a running cluster; None: start a local Ray, stop it after
    ray_app_name: str = "openkontext"  # the Serve application; API processes share it
    ray_replicas: int = Field(default=1, ge=1)  # model replicas, without ray_autoscale
    ray_autoscale: tuple[int, int] | None = None  # (min, max) replicas, scaled on queue depth
    # Jobs queued at or running on a replica that the autoscaler aims for; None: a full batch
    # (max_batch_images).
    ray_target_jobs_per_replica: float | None = Field(default=None, gt=0)
    ray_num_cpus: float = Field(default=1.0, ge=0)  # Ray CPUs a replica reserves
    ray_num_gpus: float = Field(default=0.0, ge=0)  # GPUs a replica reserves (1 for kontext-dev)
    # Retention.
    result_ttl_seconds: float = Field(default=24 * 3600, gt=0)  # then job and files go
    signed_url_expiry_seconds: float = Field(default=600, gt=0)
    keep_inputs: bool = False  # keep input images until the job expires, not just until it ends
    zero_retention: bool = False  # delete each result file at its first download
    # Sessions (the web page's editing history) keep their pictures until deleted.
    max_sessions_per_key: int | None = Field(default=100, ge=1)
    max_session_turns: int = Field(default=500, ge=1)
    # Input images.
    max_input_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_input_side: int = Field(default=1920, ge=16)
    fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    fetch_allow_hosts: list[str] = Field(default_factory=list)  # names, IPs or CIDR networks
    # Webhooks.
    webhook_attempts: int = Field(default=5, ge=1)
    webhook_backoff_seconds: float = Field(default=2.0, ge=0)  # doubles after each failure
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Output-image moderation (see classifiers.py): "auto" (NudeNet when installed, else
    # none), "nudenet" (must load), "none", or a 'module:attribute' plug-in.
    image_classifier: str | None = "auto"
    image_classifier_weights: str | None = None  # default: 320n.onnx of an installed nudenet
    image_classifier_threshold: float = Field(default=0.5, gt=0, le=1)
    # Plug-in, as a 'module:attribute' import path (see moderation.py).
    prompt_upsampler: str | None = None
    # Built-in prompt upsampler: an OpenAI-compatible chat endpoint (see upsampling.py), used
    # when url and model are set and no `prompt_upsampler` plug-in is.
    upsampler_url: str | None = None  # the API root, e.g. http://127.0.0.1:8080/v1
    upsampler_model: str | None = None
    upsampler_api_key: str | None = None
    upsampler_timeout_seconds: float = Field(default=20.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = _CONFIG_FILE.get() or os.environ.get("OPENKONTEXT_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @field_validator("api_keys")
    @classmethod
    def _hash_keys(cls, keys: list[str]) -> list[str]:
        out = []
        for key in keys:
            if key.startswith(HASH_PREFIX):
                digest = key.removeprefix(HASH_PREFIX).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError("an api_keys entry starting 'sha256:' needs 64 hex digits")
                out.append(HASH_PREFIX + digest)
            elif key:
                out.append(hash_key(key))
        return out

    @field_validator("fetch_allow_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [h.strip().lower().rstrip(".") for h in hosts if h.strip()]

    @field_validator("image_classifier")
    @classmethod
    def _check_image_classifier(cls, value: str | None) -> str:
        value = (value or "").strip() or "none"
        if value.lower() in BUILTIN_CLASSIFIERS:
            return value.lower()
        if ":" not in value:
            raise ValueError(
                "image_classifier must be 'auto', 'nudenet', 'none' or a "
                f"'module:attribute' import path, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _retention(self) -> ServeSettings:
        if self.zero_retention and self.keep_inputs:
            raise ValueError("zero_retention and keep_inputs contradict each other")
        return self

    @field_validator("ray_autoscale")
    @classmethod
    def _check_autoscale(cls, bounds: tuple[int, int] | None) -> tuple[int, int] | None:
        if bounds is None:
            return None
        low, high = bounds
        if not (0 <= low <= high and high >= 1):
            raise ValueError(f"ray_autoscale needs 0 <= min <= max and max >= 1, got {low}:{high}")
        return bounds

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return url.rstrip("/")

    # -- derived values ---------------------------------------------------------------------------

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'jobs.sqlite3').resolve()}"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def inputs_dir(self) -> Path:
        return self.data_dir / "inputs"

    @property
    def image_limits(self) -> ImageLimits:
        side = self.max_input_side
        return ImageLimits(max_bytes=self.max_input_bytes, max_side=side, max_pixels=side * side)

    @property
    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return 4 * (4 * -(-self.max_input_bytes // 3)) + 1024 * 1024

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

    def check_key(self, key: str | None) -> str | None:
        """The matching key's hash, or None. Every configured hash is compared in constant
        time, so timing reveals neither which entry matched nor how much of it."""
        if key is None:
            return None
        candidate = hash_key(key)
        found = None
        for known in self.api_keys:
            if hmac.compare_digest(candidate, known):
                found = known
        return found

    def signing_secret(self) -> bytes:
        """The download-URL secret: configured, or made once and kept in data_dir (0600) so
        links survive a restart."""
        if self.url_secret:
            return self.url_secret.encode("utf-8")
        path = self.data_dir / "url-secret"
        if not path.exists():
            from openkontext.files import PRIVATE, atomic_write

            atomic_write(path, secrets.token_hex(32).encode("ascii"), mode=PRIVATE)
        return path.read_bytes().strip()


def load_settings(config_file: str | Path | None = None, **overrides) -> ServeSettings:
    """Settings from defaults < config file < environment < `overrides` (None values skipped)."""
    token = _CONFIG_FILE.set(Path(config_file) if config_file else None)
    try:
        return ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback addresses: a bind that no other machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
