"""T5 and CLIP text encoders from transformers folders or single safetensors files.

`load_t5` and `load_clip` accept either form of the same weights:

- a transformers folder (FLUX.1's `text_encoder/` = CLIP-L, `text_encoder_2/` = T5-XXL):
  `config.json` with `model.safetensors`, or shards listed in `model.safetensors.index.json`;
- a single file, as ComfyUI users hold them: `clip_l.safetensors`, `t5xxl_fp16.safetensors`,
  `t5xxl_fp8_e4m3fn.safetensors` (plain e4m3 weights) and `t5xxl_fp8_e4m3fn_scaled.safetensors`.
  The config comes from a JSON `config` entry in the file's metadata if there is one (merged
  over the inferred one), else from tensor shapes.

What those files hold, beyond the transformers names (read in ComfyUI: comfy/text_encoders/t5.py,
comfy/clip_model.py, comfy/sd1_clip.py, comfy/utils.py `convert_old_quants`, comfy/sd.py):

- T5's token table is `shared.weight` (ComfyUI's T5 has no `encoder.embed_tokens`); some
  files carry `encoder.embed_tokens.weight` instead or as well. Either fills both, tied.
- CLIP keys sit under `text_model.` (transformers 5's `CLIPTextModel` drops that prefix), beside
  `text_projection.weight` and sometimes `logit_scale` and `text_model.embeddings.position_ids`,
  none of which the pooled output needs.
- Scaled fp8: each quantised weight `X.weight` is float8_e4m3fn with a per-tensor float32
  `X.scale_weight` (newer files and other tools: `X.weight_scale`), sometimes `X.scale_input` /
  `X.input_scale` and `X.comfy_quant`, and a top-level marker tensor `scaled_fp8`.
- Checkpoints bundling every part put them under `text_encoders.t5xxl.transformer.` and
  `text_encoders.clip_l.transformer.`.

Models are built on the meta device and filled a tensor at a time, so loading holds one copy of
the weights. Every problem raises `WeightsError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import Tensor, nn

from openkontext.model.fp8 import FP8, FP8_DTYPES, FP8Linear, quantize, row_scale, use_fp8
from openkontext.weights.keys import WeightsError
from openkontext.weights.safetensors_io import SafetensorsError, SafetensorsFile

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"
T5_PREFIXES = ("text_encoders.t5xxl.transformer.",)
CLIP_PREFIXES = ("text_encoders.clip_l.transformer.", "text_model.")
SCALE_SUFFIXES = ("scale_weight", "weight_scale")  # X.weight's scale is X.<suffix>
# transformers' T5 casts the input of `wo` to `wo.weight.dtype` (it keeps `wo` in float32 for
# float16 runs); an fp8 `wo` would quantise activations, so `wo` stays wide (~1B of T5-XXL's
# 4.7B weights: 5.9 GB with fp8 storage instead of 4.9 GB, against 9.5 GB in bf16).
T5_WIDE = "wo"
# openai/clip-vit-large-patch14's text config, for what tensor shapes cannot tell.
CLIP_L_CONSTANTS = {
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,  # transformers' marker for "pool at the highest token id" (<|endoftext|>)
    "pad_token_id": 1,
    "projection_dim": 768,
}


def load_t5(path: str | Path, dtype: torch.dtype = torch.float32, device="cpu",
            fp8: bool = False):
    """A `T5EncoderModel` from a folder or a single file. `fp8=True` stores its Linear weights
    (all but `wo`) as float8 e4m3 with a scale per output channel; the embedding and norms stay
    in `dtype`."""
    wide = (lambda name: name.rsplit(".", 1)[-1] == T5_WIDE) if fp8 else None
    return _build(path, ("T5Config", "T5EncoderModel"), T5_PREFIXES, "", _infer_t5, dtype,
                  device, wide)


def load_clip(path: str | Path, dtype: torch.dtype = torch.float32, device="cpu"):
    """A `CLIPTextModel` from a folder or a single file."""
    return _build(path, ("CLIPTextConfig", "CLIPTextModel"), CLIP_PREFIXES, "text_model.",
                  _infer_clip, dtype, device, None)


def _build(path, classes: tuple[str, str], prefixes, shown: str, infer, dtype, device, fp8_keep):
    """Config, model on meta (linears in fp8 unless `fp8_keep` names them, when given), filled."""
    config_cls, model_cls = _transformers(*classes)
    _check(dtype)
    with ExitStack() as stack:
        ckpt = _Checkpoint(Path(path), stack, prefixes, shown=shown)
        config = _config(ckpt, config_cls, infer)
        with torch.device("meta"):
            model = model_cls(config)
        if fp8_keep is not None:
            use_fp8(model, keep=fp8_keep)
        _fill(model, ckpt, dtype, torch.device(device))
    return model.eval()


def load_tokenizers(t5_tokenizer_dir: str | Path, clip_tokenizer_dir: str | Path):
    """(T5TokenizerFast, CLIPTokenizer) from local folders only."""
    T5TokenizerFast, CLIPTokenizer = _transformers("T5TokenizerFast", "CLIPTokenizer")
    for folder in (t5_tokenizer_dir, clip_tokenizer_dir):
        if not Path(folder).is_dir():
            raise WeightsError(f"{folder}: no such tokenizer folder")
    t5 = T5TokenizerFast.from_pretrained(str(t5_tokenizer_dir), local_files_only=True)
    clip = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir), local_files_only=True)
    return t5, clip


def _transformers(*names: str) -> list:
    """Classes from `transformers`, imported only when real text encoders are loaded."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the user's install
        raise ImportError(
            "real FLUX text encoders need `transformers`: pip install 'openkontext[hf]'"
        ) from e
    return [getattr(transformers, name) for name in names]


def _check(dtype: torch.dtype) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")


# ---------------------------------------------------------------------------------------------
# Reading: one file or a folder's shards, by names with the known prefixes taken off.


class _Checkpoint:
    """The tensors of a file or folder, read one at a time. `shown` is put back in front of
    names in messages (CLIP files say `text_model.`, transformers 5 does not)."""

    def __init__(self, path: Path, stack: ExitStack, prefixes: tuple[str, ...], shown: str):
        self.path, self.prefixes, self.shown = path, prefixes, shown
        self.config: dict | None = None  # config.json, if the folder has one
        self.metadata: dict[str, str] = {}
        self._where: dict[str, tuple[SafetensorsFile, str]] = {}  # name -> (file, key in it)
        for file in self._files():
            try:
                handle = stack.enter_context(SafetensorsFile(file))
            except (OSError, SafetensorsError) as e:
                raise WeightsError(f"{file}: not a readable safetensors file ({e})") from None
            keys = handle.keys()  # SafetensorsFile is not iterable
            for key in keys:
                name = self.canonical(key)
                if name in self._where:
                    raise WeightsError(f"{file}: tensor {key!r} is also in {self.file(name)}")
                self._where[name] = (handle, key)
            self.metadata.update(handle.metadata)

    def _files(self) -> list[Path]:
        path = self.path
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise WeightsError(f"{path}: no such file or folder")
        if (path / "config.json").is_file():
            try:
                self.config = json.loads((path / "config.json").read_text())
            except (OSError, ValueError) as e:
                raise WeightsError(f"{path / 'config.json'}: cannot read config ({e})") from None
        if (path / WEIGHTS).is_file():
            return [path / WEIGHTS]
        if (path / INDEX).is_file():
            try:
                weight_map = json.loads((path / INDEX).read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise WeightsError(f"{path / INDEX}: not a safetensors index ({e})") from None
            return [path / name for name in sorted(set(weight_map.values()))]
        raise WeightsError(f"{path}: no {WEIGHTS} or {INDEX}")

    def canonical(self, key: str) -> str:
        """A file's or a model's name for a tensor without the prefixes (transformers 4 names
        CLIP's tensors `text_model.*`, transformers 5 does not)."""
        for prefix in self.prefixes:
            key = key.removeprefix(prefix)
        return key

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        return list(self._where)

    def file(self, name: str) -> Path:
        return self._where[name][0].path

    def key(self, name: str) -> str:
        return self._where[name][1]

    def shape(self, name: str) -> tuple[int, ...]:
        handle, key = self._where[name]
        return handle.shape(key)

    def read(self, name: str) -> Tensor:
        handle, key = self._where[name]
        try:
            return handle.read(key)
        except (OSError, SafetensorsError) as e:
            raise WeightsError(f"{handle.path}: cannot read tensor {key!r} ({e})") from None

    def scale(self, name: str, rows: int) -> Tensor:
        """Fp8 weight `name`'s stored scale (none, per tensor or per row) as (rows, 1) float32."""
        base = name.removesuffix(".weight")
        for scale_name in (f"{base}.{suffix}" for suffix in SCALE_SUFFIXES):
            if scale_name in self:
                try:
                    return row_scale(self.read(scale_name), rows)
                except ValueError as e:
                    raise WeightsError(
                        f"{self.file(scale_name)}: tensor {self.key(scale_name)!r}: {e}"
                    ) from None
        return row_scale(None, rows)

    def widened(self, name: str) -> Tensor:
        """The tensor as stored, an fp8 one multiplied out by its scale into float32."""
        t = self.read(name)
        if t.dtype not in FP8_DTYPES:
            return t
        if t.ndim == 2:
            return t.float() * self.scale(name, t.shape[0])
        return t.float() * self.scale(name, 1).reshape(())

    def fp8_pair(self, name: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """(e4m3 weight (out, in), float32 scale (out, 1)) on device: e4m3 weights kept as
        stored, any other weight widened and quantised per row (on the device)."""
        t = self.read(name)
        if t.dtype == FP8:
            return t.to(device), self.scale(name, t.shape[0]).to(device)
        return quantize(self.widened(name).to(device))


# ---------------------------------------------------------------------------------------------
# Configs: config.json, else shapes (and the file's `config` metadata).


def _config(ckpt: _Checkpoint, config_cls, infer):
    source = ckpt.path / "config.json"
    fields = ckpt.config
    if fields is not None:
        fields = fields.get("text_config", fields)  # a whole CLIPConfig names its text part
    else:
        source = ckpt.path
        fields = infer(ckpt)
        if "config" in ckpt.metadata:
            try:
                fields.update(json.loads(ckpt.metadata["config"]))
            except (ValueError, TypeError) as e:
                raise WeightsError(f"{ckpt.path}: bad `config` metadata ({e})") from None
    try:
        return config_cls.from_dict(fields)
    except (ValueError, TypeError, KeyError) as e:
        raise WeightsError(f"{source}: not a {config_cls.__name__} ({e})") from None


def _needed(ckpt: _Checkpoint, *names: str) -> tuple[int, ...]:
    """The shape of the first of `names` the checkpoint has."""
    for name in names:
        if name in ckpt:
            return ckpt.shape(name)
    raise WeightsError(f"{ckpt.path}: missing tensor {ckpt.shown + names[0]!r}")


def _count(ckpt: _Checkpoint, pattern: str) -> int:
    numbers = {int(m[1]) for n in ckpt.names() if (m := re.match(pattern, n))}
    return max(numbers) + 1 if numbers else 0


def _infer_t5(ckpt: _Checkpoint) -> dict:
    vocab, d_model = _needed(ckpt, "shared.weight", "encoder.embed_tokens.weight")
    block = "encoder.block.0.layer"
    buckets, heads = _needed(ckpt, f"{block}.0.SelfAttention.relative_attention_bias.weight")
    inner, _ = _needed(ckpt, f"{block}.0.SelfAttention.q.weight")
    gated = f"{block}.1.DenseReluDense.wi_0.weight" in ckpt
    d_ff, _ = _needed(ckpt, f"{block}.1.DenseReluDense.wi{'_0' if gated else ''}.weight")
    return {
        "vocab_size": vocab,
        "d_model": d_model,
        "d_kv": inner // heads,
        "d_ff": d_ff,
        "num_layers": _count(ckpt, r"encoder\.block\.(\d+)\."),
        "num_heads": heads,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu" if gated else "relu",  # T5 v1.1 (XXL) | original T5
        "layer_norm_epsilon": 1e-6,
    }


def _infer_clip(ckpt: _Checkpoint) -> dict:
    vocab, hidden = _needed(ckpt, "embeddings.token_embedding.weight")
    positions, _ = _needed(ckpt, "embeddings.position_embedding.weight")
    intermediate, _ = _needed(ckpt, "encoder.layers.0.mlp.fc1.weight")
    return {
        **CLIP_L_CONSTANTS,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": positions,
        "num_hidden_layers": _count(ckpt, r"encoder\.layers\.(\d+)\."),
        "intermediate_size": intermediate,
        "num_attention_heads": max(1, hidden // 64),  # CLIP's heads are 64 wide
    }


# ---------------------------------------------------------------------------------------------
# Filling a meta-device model.


def _fill(model: nn.Module, ckpt: _Checkpoint, dtype: torch.dtype, device: torch.device) -> None:
    """Check every name and shape against the file headers, then read, convert and place each
    tensor in turn. Tensors the model does not need (scales, projections, markers) are left."""
    # 1. Plan: model name -> checkpoint name. Tied names (T5's encoder.embed_tokens -> shared)
    # are filled once, from whichever of the pair the file has; FP8Linear scales are made.
    tied = _ties(model)
    fp8 = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
    wide = set(getattr(model, "_keep_in_fp32_modules", None) or ())  # fp32 when dtype is fp16
    plan = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name in tied or name.removesuffix(".weight_scale") in fp8:
            continue
        aliases = [name, *(target for target, source in tied.items() if source == name)]
        found = next((n for n in map(ckpt.canonical, aliases) if n in ckpt), None)
        if found is None:
            raise WeightsError(f"{ckpt.path}: missing tensor {ckpt.shown + ckpt.canonical(name)!r}")
        if ckpt.shape(found) != tuple(tensor.shape):
            raise WeightsError(
                f"{ckpt.file(found)}: tensor {ckpt.key(found)!r} has shape "
                f"{list(ckpt.shape(found))}, expected {list(tensor.shape)}"
            )
        plan[name] = found
    # 2. Read and place, one tensor at a time.
    for name, found in plan.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if owner in fp8 and attr == "weight":
            weight, scale = ckpt.fp8_pair(found, device)
            module._buffers.update(weight=weight, weight_scale=scale)
            continue
        kept = torch.float32 if dtype == torch.float16 and wide & set(owner.split(".")) else dtype
        t = ckpt.widened(found).to(device=device, dtype=kept)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(t, requires_grad=False)
        else:
            module._buffers[attr] = t
    # 3. Ties, and the buffers no checkpoint holds (CLIP's position ids).
    for target, source in tied.items():
        owner, _, attr = target.rpartition(".")
        model.get_submodule(owner)._parameters[attr] = model.get_parameter(source)
    for name, buffer in list(model.named_buffers()):
        owner, _, attr = name.rpartition(".")
        if buffer.is_meta and attr == "position_ids":  # (1, positions): 0, 1, 2, ...
            ids = torch.arange(buffer.shape[-1], device=device).expand(buffer.shape)
            model.get_submodule(owner)._buffers[attr] = ids
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__}: {left} not filled (still on meta)")


def _ties(model: nn.Module) -> dict[str, str]:
    """{tied name: the name it shares}. transformers 5 writes this map; 4 lists tied names only,
    all tied to the input embedding (T5's encoder.embed_tokens -> shared)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if isinstance(tied, dict):
        return dict(tied)
    embedding = model.get_input_embeddings().weight
    source = next(n for n, p in model.named_parameters() if p is embedding)
    return {name: source for name in tied if name != source}
