"""LoRA files for the FLUX.1 (Kontext) transformer: read in the conventions trainers write,
mapped onto our module names (`model.lora.Lora`); written back in the diffusers/PEFT one.

Which layer a key names is looked up in `keys._FLUX_RULES`, the table that also converts
checkpoints, in four spellings: BFL or diffusers names, with dots or with underscores. The
conventions in circulation (safetensors, optionally prefixed `transformer.`, `base_model.model.`,
`diffusion_model.`, `lora_unet_` or `lora_transformer_`):

- **kohya sd-scripts** (`networks/lora_flux.py`; ComfyUI and OneTrainer export the same with
  `diffusion_model.` and dotted names): `lora_unet_<BFL name, dots as underscores>` with
  `.lora_down.weight` (rank, in), `.lora_up.weight` (out, rank), `.alpha`. The update is
  `up @ down * alpha / rank`, rank being lora_down's rows; no alpha, or alpha 0, means 1.
- **diffusers / PEFT** (ai-toolkit, diffusers' `train_dreambooth_lora_flux_kontext.py`):
  `transformer.<diffusers name>.lora_A.weight / .lora_B.weight`. q, k and v are separate layers
  there (and the single blocks' mlp input), so each lands on a row slice of our fused layer;
  `norm_out.linear` is (scale, shift) where ours is (shift, scale), so lora_B's halves swap.
  The scale is diffusers': `alpha / rank` from `<module>.alpha` keys (a module without one takes
  the file's most common alpha), else from the PEFT config diffusers writes in the
  `lora_adapter_metadata` header entry (`lora_alpha`, `alpha_pattern`, `use_rslora`), else 1.
- **BFL names with lora_A / lora_B** (BFL's own LoRAs; fal's Kontext trainer, with
  `base_model.model.`): layers as in the BFL checkpoint, scale as PEFT's (fal files carry no
  alpha: 1).

Text-encoder keys (`lora_te*`, `text_encoder*`) are not the transformer's and are skipped.
LyCORIS LoKr / LoHa files are refused.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from functools import cache
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from openkontext.model.lora import Lora, LoraDelta
from openkontext.weights.keys import (
    _FLUX_RULES,
    CAT,
    SWAP,
    _pattern,
    _to_diffusers_names,
)
from openkontext.weights.safetensors_io import SafetensorsFile, write

_PREFIXES = ("transformer.", "base_model.model.", "diffusion_model.", "lora_unet_",
             "lora_transformer_")
_TEXT_ENCODER = ("lora_te", "text_encoder")  # lora_te1_ (CLIP), lora_te3_ (T5), text_encoder.
_KEY = re.compile(r"(?P<module>.+)\.(?P<kind>lora_down\.weight|lora_up\.weight|lora_A\.weight|"
                  r"lora_B\.weight|alpha)")
_DOWN, _UP = ("lora_down.weight", "lora_A.weight"), ("lora_up.weight", "lora_B.weight")
_W = ".{w}"
_MAX_NAMED = 5  # unknown keys named in a warning


class _Target(NamedTuple):
    module: str  # our (BFL) module name
    part: int | None  # which of diffusers' parts of a fused (CAT) layer; None: all of it
    swap: bool  # lora_B's halves in the other order (diffusers' norm_out.linear)


@cache
def _templates() -> tuple[tuple[re.Pattern, str, int | None, bool], ...]:
    """(pattern, our module template, part, swap) for every spelling of every linear layer."""
    out = []
    for rule in _FLUX_RULES:
        if not rule.bfl.endswith(_W):  # the qk-norm scales: not linear layers
            continue
        ours = rule.bfl.removesuffix(_W)
        names = [(ours, None, False)] + [
            (d.removesuffix(_W), j if rule.op == CAT else None, rule.op == SWAP)
            for j, d in enumerate(rule.diffusers)
        ]
        for name, part, swap in names:
            for spelling in (name, name.replace(".", "_")):
                out.append((_pattern(spelling), ours, part, swap))
    return tuple(out)


@cache
def _target(module: str) -> _Target | None:
    for pattern, ours, part, swap in _templates():
        if m := pattern.fullmatch(module):
            return _Target(ours.format(**m.groupdict()), part, swap)
    return None


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _peft_config(metadata: dict[str, str]) -> dict:
    """The transformer's PEFT LoraConfig that diffusers stores in the header, if any."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    config = json.loads(raw)
    return {k.removeprefix("transformer."): v for k, v in config.items()
            if k.startswith("transformer.")}


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key matching the module name's end
    at a dot boundary (peft.utils.other.get_pattern_key)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _peft_scale(module: str, rank: int, alpha: float | None, config: dict) -> float:
    if alpha is not None:
        return alpha / rank
    if config:
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module,
                               config.get("lora_alpha", 8))  # 8: LoraConfig's default
        return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return 1.0


def _kohya_scale(rank: int, alpha: float | None) -> float:
    return alpha / rank if alpha else 1.0  # sd-scripts: alpha None or 0 -> alpha = rank


def _delta(target: _Target, down: Tensor, up: Tensor, scale: float, key: str) -> LoraDelta:
    if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
        raise ValueError(f"{key}: down {list(down.shape)} and up {list(up.shape)} are not the two "
                         "factors of a linear layer's LoRA")
    if target.swap:  # (scale, shift) -> (shift, scale)
        first, second = up.chunk(2)
        up = torch.cat((second, first))
    rows = None
    if target.part is not None:
        # Every fused FLUX layer (qkv, linear1) takes the hidden state in and stacks parts of
        # that width (the single blocks' mlp part last), so part j starts at j * in_features.
        start = target.part * down.shape[1]
        rows = (start, start + up.shape[0])
    return LoraDelta(down, up, scale, rows)


def _report(what: str, keys: list[str], strict: bool, path: Path) -> None:
    if not keys:
        return
    if strict:
        raise ValueError(f"{path}: {what} key {keys[0]!r} (strict loading)")
    named = ", ".join(keys[:_MAX_NAMED]) + (", ..." if len(keys) > _MAX_NAMED else "")
    warnings.warn(f"{path}: skipped {len(keys)} {what} keys: {named}", stacklevel=3)


def load_lora(path: str | Path, name: str | None = None, strict: bool = False) -> Lora:
    """A LoRA file in any convention above, on our module names. Keys for the text encoders,
    or that name nothing known, are skipped with a warning (ValueError when `strict`); a file
    with no usable key, a half LoRA (down without up) or a LyCORIS LoKr/LoHa: ValueError."""
    path = Path(path)
    lora = Lora(name or path.stem)
    with SafetensorsFile(path) as f:
        keys = f.keys()
        if lycoris := next((k for k in keys if ".lokr_" in k or ".hada_" in k), None):
            kind = "LoKr" if ".lokr_" in lycoris else "LoHa"
            raise ValueError(f"{path}: LyCORIS {kind} is not supported (key {lycoris!r}); "
                             "only LoRA (lora_down/lora_up or lora_A/lora_B)")

        # 1. Sort the keys: text encoders, unknown, and per module of the file its factors.
        text_encoder, unknown = [], []
        modules: dict[str, dict[str, str]] = {}
        for key in keys:
            if key.startswith(_TEXT_ENCODER):
                text_encoder.append(key)
            elif (m := _KEY.fullmatch(_strip(key))) and _target(m["module"]):
                modules.setdefault(m["module"], {})[m["kind"]] = key
            else:
                unknown.append(key)
        _report("text-encoder", text_encoder, strict, path)
        orphans = [k for parts in modules.values() if set(parts) == {"alpha"}
                   for k in parts.values()]
        modules = {m: parts for m, parts in modules.items() if set(parts) != {"alpha"}}
        _report("unknown", unknown + orphans, strict, path)
        if not modules:
            raise ValueError(f"{path}: no LoRA key for the FLUX transformer in this file")

        # 2. Scales: alphas (kohya's and PEFT's), diffusers' PEFT config, defaults.
        alphas = {m: float(f.read(parts["alpha"]).float().item())
                  for m, parts in modules.items() if "alpha" in parts}
        peft_alphas = [a for m, a in alphas.items() if "lora_A.weight" in modules[m]]
        common_alpha = Counter(peft_alphas).most_common(1)[0][0] if peft_alphas else None
        config = _peft_config(f.metadata)

        # 3. One delta per module of the file.
        for module, parts in modules.items():
            down_key = next((parts[k] for k in _DOWN if k in parts), None)
            up_key = next((parts[k] for k in _UP if k in parts), None)
            if down_key is None or up_key is None:
                half = down_key or up_key
                raise ValueError(f"{path}: {half!r} has no matching "
                                 f"{'up (lora_B)' if down_key else 'down (lora_A)'} factor")
            down, up = f.read(down_key), f.read(up_key)
            rank = down.shape[0]
            if "lora_down.weight" in parts:
                scale = _kohya_scale(rank, alphas.get(module))
            else:
                scale = _peft_scale(module, rank, alphas.get(module, common_alpha), config)
            target = _target(module)
            lora.add(target.module, _delta(target, down, up, scale, down_key))
    return lora


def _diffusers_parts(module: str, delta: LoraDelta) -> list[tuple[str, Tensor]]:
    """One delta of our module -> (diffusers module, lora_B) for each diffusers layer it
    covers; they share the delta's lora_A."""
    names, op = _to_diffusers_names(module + ".weight", _FLUX_RULES, 0)
    names = [n.removesuffix(".weight") for n in names]
    if op != CAT:
        if delta.rows is not None:
            raise ValueError(f"{module}: a delta on rows {delta.rows} of a layer diffusers keeps "
                             "whole cannot be written in the diffusers convention")
        up = delta.up
        if op == SWAP:  # (shift, scale) -> (scale, shift)
            first, second = up.chunk(2)
            up = torch.cat((second, first))
        return [(names[0], up)]
    # Fused layers: parts of width in_features (q, k, v), the single blocks' mlp to the end.
    width = delta.down.shape[1]
    start, stop = delta.rows or (0, delta.up.shape[0])
    out = []
    for j, name in enumerate(names):
        lo = j * width
        hi = lo + width if j < 3 else max(stop, lo)
        if hi <= start or lo >= stop:
            continue
        if lo < start or hi > stop:
            raise ValueError(f"{module}: a delta on rows {start}..{stop} does not cover whole "
                             f"parts of diffusers' {', '.join(names)} (each {width} rows)")
        out.append((name, delta.up[lo - start:hi - start]))
    if sum(up.shape[0] for _, up in out) != stop - start:
        raise ValueError(f"{module}: a delta on rows {start}..{stop} reaches past diffusers' "
                         f"{', '.join(names)}")
    return out


def save_lora_peft(lora: Lora, path: str | Path) -> Path:
    """Write `lora` in the diffusers/PEFT convention, which diffusers' `load_lora_weights`
    reads: `transformer.<diffusers name>.lora_A.weight / .lora_B.weight`. Fused deltas are
    split into diffusers' layers (sharing lora_A); each delta's scale is multiplied into its
    lora_B, so there are no alpha keys (scale 1 for every reader); several deltas on one
    diffusers layer are stacked along the rank."""
    factors: dict[str, list[tuple[Tensor, Tensor]]] = {}
    for module, deltas in lora.deltas.items():
        for delta in deltas:
            for name, up in _diffusers_parts(module, delta):
                if delta.scale != 1.0:
                    up = (up.float() * delta.scale).to(up.dtype)
                factors.setdefault(name, []).append((delta.down, up))
    tensors: dict[str, Tensor] = {}
    for name, pairs in factors.items():
        dtype = pairs[0][0].dtype
        tensors[f"transformer.{name}.lora_A.weight"] = torch.cat([d.to(dtype) for d, _ in pairs])
        tensors[f"transformer.{name}.lora_B.weight"] = torch.cat([u.to(dtype) for _, u in pairs],
                                                                 dim=1)
    specs = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    return write(path, specs, tensors.__getitem__, metadata={"format": "pt"})
