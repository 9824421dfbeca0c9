"""Tiny random T5 and CLIP text encoders with tokenizers built here (no downloads), written as
transformers folders (FLUX.1's layout) or as ComfyUI-style single files.

`hub_snapshot` lays a whole tiny checkpoint out as the Hugging Face cache holds it.

Both writers draw the same models (seeded, weights rounded to float16 so the fp16 files hold
them exactly), so a test can compare what the two forms load to.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from openkontext.model.fp8 import FP8, FP8_MAX
from openkontext.weights import save_model

# CLIP over single bytes with no merges; T5 over single letters (\u2581: word start).
_PRINTABLE = [*range(33, 127), *range(161, 173), *range(174, 256)]
_CHARS = [chr(b) for b in _PRINTABLE] + [chr(256 + n) for n in range(256 - len(_PRINTABLE))]
CLIP_VOCAB = {c: i for i, c in enumerate([*_CHARS, *(c + "</w>" for c in _CHARS),
                                           "<|startoftext|>", "<|endoftext|>"])}
T5_PIECES = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
             *((c, -1.0) for c in "\u2581abcdefghijklmnopqrstuvwxyz")]
T5_FILES = {"fp16": "t5xxl_fp16.safetensors", "fp8": "t5xxl_fp8_e4m3fn.safetensors",
            "fp8_scaled": "t5xxl_fp8_e4m3fn_scaled.safetensors"}


def tiny_models(clip_width: int, t5_width: int, clip_heads: int = 2):
    """(CLIPTextModel, T5EncoderModel): one layer each, T5 gated-gelu as T5-XXL is."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(CLIP_VOCAB), hidden_size=clip_width, intermediate_size=2 * clip_width,
        num_hidden_layers=1, num_attention_heads=clip_heads, max_position_embeddings=77,
        bos_token_id=CLIP_VOCAB["<|startoftext|>"], eos_token_id=CLIP_VOCAB["<|endoftext|>"],
        pad_token_id=CLIP_VOCAB["<|endoftext|>"],
    ))
    t5 = T5EncoderModel(T5Config(vocab_size=len(T5_PIECES), d_model=t5_width, d_kv=8,
                                 d_ff=2 * t5_width, num_layers=1, num_heads=2,
                                 feed_forward_proj="gated-gelu"))
    with torch.no_grad():
        for model in (clip, t5):
            for p in model.parameters():
                p.copy_(p.half().float())
    return clip.eval(), t5.eval()


def write_tokenizers(root: Path) -> None:
    """`tokenizer/` (CLIP) and `tokenizer_2/` (T5) under root."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTokenizer, T5TokenizerFast

    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(CLIP_VOCAB))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab=str(root / "tokenizer" / "vocab.json"),
                  merges=str(root / "tokenizer" / "merges.txt"),
                  model_max_length=77).save_pretrained(root / "tokenizer")
    t5_tokenizer = Tokenizer(models.Unigram(T5_PIECES, unk_id=2))
    t5_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    (root / "tokenizer_2").mkdir(exist_ok=True)
    t5_tokenizer.save(str(root / "tokenizer_2" / "tokenizer.json"))
    T5TokenizerFast(tokenizer_file=str(root / "tokenizer_2" / "tokenizer.json"),
                    extra_ids=0).save_pretrained(root / "tokenizer_2")


def write_tiny_text_encoders(root, clip_width: int, t5_width: int) -> None:
    """FLUX.1's diffusers layout under root: text_encoder/ (CLIP), text_encoder_2/ (T5),
    tokenizer/, tokenizer_2/."""
    root = Path(root)
    write_tokenizers(root)
    clip, t5 = tiny_models(clip_width, t5_width)
    clip.save_pretrained(root / "text_encoder")
    t5.save_pretrained(root / "text_encoder_2")


def write_comfy_text_encoders(folder, clip_width: int, t5_width: int, t5_form: str = "fp16",
                              scale_names: tuple[str, str] = ("scale_weight", "scale_input"),
                              ) -> tuple[Path, Path]:
    """ComfyUI-style single files of the `tiny_models` weights -> (clip path, t5 path):

    - clip_l.safetensors, fp16: `text_model.*` keys, `text_projection.weight`, `logit_scale`,
      `text_model.embeddings.position_ids`; metadata `config` names the heads (tiny widths are
      not 64 per head as CLIP-L's are);
    - t5xxl_fp16: fp16, `shared.weight` only (no encoder.embed_tokens);
    - t5xxl_fp8_e4m3fn: every tensor cast to e4m3, no scales;
    - t5xxl_fp8_e4m3fn_scaled: each Linear weight e4m3 over a per-tensor float32 `X.scale_weight`
      (and `X.scale_input` = 1), embedding and norms in fp16, a `scaled_fp8` marker.
      `scale_names` = ("weight_scale", "input_scale") writes other tools' names instead.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip, t5 = tiny_models(clip_width, t5_width)
    state = {k.removeprefix("text_model."): v for k, v in clip.state_dict().items()}
    clip_sd = {f"text_model.{k}": v.half() for k, v in state.items() if "position_ids" not in k}
    clip_sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    clip_sd["text_projection.weight"] = torch.eye(clip_width).half()
    clip_sd["logit_scale"] = torch.tensor(4.6055)
    clip_path = folder / "clip_l.safetensors"
    heads = json.dumps({"num_attention_heads": clip.config.num_attention_heads})
    save_file(clip_sd, str(clip_path), metadata={"format": "pt", "config": heads})

    t5_sd = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    if t5_form == "fp16":
        out = {k: v.half() for k, v in t5_sd.items()}
    elif t5_form == "fp8":
        out = {k: v.to(FP8) for k, v in t5_sd.items()}
    elif t5_form == "fp8_scaled":
        weight_scale, input_scale = scale_names
        out = {"scaled_fp8": torch.empty(0, dtype=FP8)}
        for key, v in t5_sd.items():
            layer = key.removesuffix(".weight")
            if v.ndim == 2 and not key.startswith("shared") and "relative_attention" not in key:
                scale = v.abs().amax().float() / FP8_MAX
                out[key] = (v / scale).to(FP8)
                out[f"{layer}.{weight_scale}"] = scale.reshape(())
                out[f"{layer}.{input_scale}"] = torch.tensor(1.0)
            else:
                out[key] = v.half()
    else:
        raise ValueError(f"t5_form must be fp16, fp8 or fp8_scaled, not {t5_form!r}")
    t5_path = folder / T5_FILES[t5_form]
    save_file(out, str(t5_path), metadata={"format": "pt"})
    return clip_path, t5_path


def hub_snapshot(cache: Path, flux_model, ae_model) -> Path:
    """The Hugging Face snapshot as `hf download` leaves it: diffusers folders, the BFL files at
    the top, refs/main naming the snapshot."""
    repo = cache / "models--black-forest-labs--FLUX.1-Kontext-dev"
    snapshot = repo / "snapshots" / "0123abcd"
    save_model(flux_model, snapshot / "transformer", layout="diffusers")
    save_model(ae_model, snapshot / "vae", layout="diffusers")
    save_model(flux_model, snapshot / "flux1-kontext-dev.safetensors")
    save_model(ae_model, snapshot / "ae.safetensors")
    write_tiny_text_encoders(snapshot, flux_model.params.vec_in_dim,
                             flux_model.params.context_in_dim)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot
