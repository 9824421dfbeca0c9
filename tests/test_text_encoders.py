"""T5 and CLIP loading from transformers folders and ComfyUI-style single files (fp16, fp8,
scaled fp8), with tiny random models written by tests/tiny_text.py."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, T5EncoderModel

from openkontext.model import HFTextEncoders
from openkontext.model.fp8 import FP8, FP8Linear
from openkontext.weights import WeightsError
from openkontext.weights.text_encoders import load_clip, load_t5
from tiny_text import T5_FILES, tiny_models, write_comfy_text_encoders, write_tiny_text_encoders

CLIP_WIDTH, T5_WIDTH = 24, 32
PROMPTS = ["make it red", "a cat on a mat"]
WQ = "encoder.block.0.layer.0.SelfAttention.q"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """diffusers folders under root, ComfyUI files under root/comfy (all three T5 forms)."""
    root = tmp_path_factory.mktemp("text")
    write_tiny_text_encoders(root, CLIP_WIDTH, T5_WIDTH)
    for form in T5_FILES:
        write_comfy_text_encoders(root / "comfy", CLIP_WIDTH, T5_WIDTH, form)
    return root


@pytest.fixture(scope="module")
def reference():
    """(CLIP, T5, T5 token ids (2, 16)) as drawn, fp32."""
    clip, t5 = tiny_models(CLIP_WIDTH, T5_WIDTH)
    return clip, t5, torch.randint(0, t5.config.vocab_size, (2, 16),
                                    generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def tokens(t5, ids):
    return t5(input_ids=ids)[0]


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def no_meta(model) -> bool:
    return not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def encoders(root, t5, clip, **kw) -> HFTextEncoders:
    return HFTextEncoders.from_folders(t5, clip, root / "tokenizer_2", root / "tokenizer",
                                       max_length=16, **kw)


# 1. Folders and fp16 single files: the weights as drawn, exactly.


def test_folder_and_single_files_encode_identically(root):
    folder = encoders(root, root / "text_encoder_2", root / "text_encoder")
    comfy = root / "comfy"
    single = encoders(root, comfy / "t5xxl_fp16.safetensors", comfy / "clip_l.safetensors")
    txt, vec = folder.encode(PROMPTS)
    assert txt.shape == (2, 16, T5_WIDTH) and vec.shape == (2, CLIP_WIDTH)
    txt2, vec2 = single.encode(PROMPTS)
    assert torch.equal(txt, txt2) and torch.equal(vec, vec2)
    assert not torch.equal(txt[0], txt[1]) and not torch.equal(vec[0], vec[1])
    assert no_meta(single.t5) and no_meta(single.clip)
    ids = single.clip.embeddings.position_ids  # made, not read: no checkpoint needs it
    assert torch.equal(ids, torch.arange(77).unsqueeze(0))
    # What transformers itself loads from the folders gives the same numbers.
    t5 = T5EncoderModel.from_pretrained(root / "text_encoder_2")
    clip = CLIPTextModel.from_pretrained(root / "text_encoder")
    reference = HFTextEncoders(t5, clip, folder.t5_tokenizer, folder.clip_tokenizer,
                               max_length=16).encode(PROMPTS)
    assert torch.equal(reference[0], txt) and torch.equal(reference[1], vec)


def test_t5_token_table_from_either_name_is_tied(root, reference, tmp_path):
    _, t5, ids = reference
    sd = load_file(root / "comfy" / "t5xxl_fp16.safetensors")
    bundled = {"text_encoders.t5xxl.transformer." + k: v for k, v in sd.items()}
    bundled["text_encoders.t5xxl.transformer.encoder.embed_tokens.weight"] = bundled.pop(
        "text_encoders.t5xxl.transformer.shared.weight")
    save_file(bundled, tmp_path / "t5.safetensors")
    model = load_t5(tmp_path / "t5.safetensors")
    assert model.shared.weight is model.encoder.embed_tokens.weight
    assert torch.equal(model.shared.weight, t5.shared.weight)
    assert torch.equal(tokens(model, ids), tokens(t5, ids))


def test_float16_keeps_wo_in_float32_as_transformers_does(root, reference):
    _, t5, ids = reference
    model = load_t5(root / "comfy" / "t5xxl_fp16.safetensors", torch.float16)
    ff = model.encoder.block[0].layer[1].DenseReluDense
    assert (ff.wi_0.weight.dtype, ff.wo.weight.dtype) == (torch.float16, torch.float32)
    theirs = T5EncoderModel.from_pretrained(root / "text_encoder_2", dtype=torch.float16)
    assert torch.equal(tokens(model, ids), tokens(theirs, ids))


def test_sharded_folder_loads(root, reference, tmp_path):
    clip, t5, ids = reference
    t5.save_pretrained(tmp_path / "t5", max_shard_size="20KB")
    clip.save_pretrained(tmp_path / "clip", max_shard_size="20KB")
    for name in ("t5", "clip"):
        index = json.loads((tmp_path / name / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    assert torch.equal(tokens(load_t5(tmp_path / "t5"), ids), tokens(t5, ids))
    loaded = load_clip(tmp_path / "clip").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in clip.state_dict().items())


# 2. fp8: storage, fp8 files, scaled fp8 files. Errors are relative L2 of the T5 token
# embeddings against fp32, measured with these weights and ids: per-row quantised (fp8=True)
# 2.5%, unscaled e4m3 file 4.8% (its embedding is e4m3 too), scaled e4m3 file 3.4%, scaled
# against unscaled file 5.9%; loading the same file with fp8=True or False gives the same
# numbers. For scale: bf16 weights 0.5%.


def test_t5_fp8_storage_is_close_to_float32(root, reference):
    _, t5, ids = reference
    model = load_t5(root / "text_encoder_2", fp8=True)
    kinds = (FP8Linear, torch.nn.Linear, torch.nn.Embedding)
    layers = {n.rsplit(".", 1)[-1]: type(m) for n, m in model.encoder.named_modules()
              if isinstance(m, kinds)}  # embed_tokens: shared, tied
    assert layers == {"q": FP8Linear, "k": FP8Linear, "v": FP8Linear, "o": FP8Linear,
                      "wi_0": FP8Linear, "wi_1": FP8Linear, "wo": torch.nn.Linear,
                      "relative_attention_bias": torch.nn.Embedding,
                      "embed_tokens": torch.nn.Embedding}
    q = model.get_submodule(WQ)
    assert q.weight.dtype == FP8 and q.weight_scale.shape == (16, 1)
    assert model.shared.weight.dtype == torch.float32 and no_meta(model)
    assert rel(tokens(model, ids), tokens(t5, ids)) < 0.03


def test_fp8_single_files_load_stored_or_widened(root, reference):
    _, t5, ids = reference
    expected = tokens(t5, ids)
    out = {}
    for form in ("fp8", "fp8_scaled"):
        kept, widened = (load_t5(root / "comfy" / T5_FILES[form], fp8=f) for f in (True, False))
        out[form] = tokens(kept, ids)
        assert torch.equal(tokens(widened, ids), out[form])
    assert rel(out["fp8"], expected) < 0.06
    assert rel(out["fp8_scaled"], expected) < 0.04
    assert rel(out["fp8_scaled"], out["fp8"]) < 0.08
    # The scaled file's bytes are kept with its one scale repeated per row, or widened exactly.
    sd = load_file(root / "comfy" / T5_FILES["fp8_scaled"])
    stored, scale = sd[f"{WQ}.weight"], sd[f"{WQ}.scale_weight"]
    q, wide = kept.get_submodule(WQ), widened.get_submodule(WQ)
    assert torch.equal(q.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(q.weight_scale, scale.expand(q.weight.shape[0], 1))
    assert wide.weight.dtype == torch.float32
    assert torch.equal(wide.weight, stored.float() * scale)
    plain = load_t5(root / "comfy" / T5_FILES["fp8"], fp8=True).get_submodule(WQ)
    assert plain.weight.dtype == FP8 and plain.weight_scale.eq(1).all()


def test_other_tools_scale_names(root, reference, tmp_path):
    _, _, ids = reference
    _, path = write_comfy_text_encoders(tmp_path, CLIP_WIDTH, T5_WIDTH, "fp8_scaled",
                                        scale_names=("weight_scale", "input_scale"))
    ours = load_t5(root / "comfy" / T5_FILES["fp8_scaled"])
    theirs = load_t5(path)
    assert torch.equal(tokens(ours, ids), tokens(theirs, ids))


# 3. Configs inferred from shapes.


def test_configs_inferred_from_shapes_match(reference, tmp_path):
    _, t5, _ = reference
    save_file({k: v for k, v in t5.state_dict().items() if "embed_tokens" not in k},
              tmp_path / "t5.safetensors")
    inferred = load_t5(tmp_path / "t5.safetensors").config
    fields = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
              "relative_attention_num_buckets", "relative_attention_max_distance",
              "is_gated_act", "dense_act_fn", "layer_norm_epsilon")
    assert {f: getattr(inferred, f) for f in fields} == {f: getattr(t5.config, f) for f in fields}
    assert (inferred.d_kv, inferred.num_heads, inferred.dense_act_fn) == (8, 2, "gelu_new")
    clip, _ = tiny_models(128, T5_WIDTH, clip_heads=2)  # CLIP's 64-wide heads
    state = {k.removeprefix("text_model."): v for k, v in clip.state_dict().items()}
    save_file({f"text_model.{k}": v for k, v in state.items()}, tmp_path / "clip.safetensors")
    inferred = load_clip(tmp_path / "clip.safetensors").config
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "max_position_embeddings", "hidden_act", "layer_norm_eps")
    assert {f: getattr(inferred, f) for f in fields} == {f: getattr(clip.config, f) for f in fields}
    assert (inferred.num_attention_heads, inferred.eos_token_id) == (2, 2)


# 4. Problems.


def test_missing_tensor_names_file_and_tensor(root, tmp_path):
    sd = load_file(root / "comfy" / "t5xxl_fp16.safetensors")
    del sd["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"]
    save_file(sd, tmp_path / "t5.safetensors")
    match = r"t5\.safetensors: missing tensor 'encoder\.block\.0\.layer\.1\.DenseReluDense\.wi_1"
    with pytest.raises(WeightsError, match=match):
        load_t5(tmp_path / "t5.safetensors")
    sd = load_file(root / "comfy" / "clip_l.safetensors")
    del sd["text_model.final_layer_norm.bias"]
    save_file(sd, tmp_path / "clip.safetensors", metadata={"config": '{"num_attention_heads": 2}'})
    with pytest.raises(WeightsError, match=r"clip\.safetensors: missing tensor "
                                           r"'text_model\.final_layer_norm\.bias'"):
        load_clip(tmp_path / "clip.safetensors")


def test_wrong_shape_names_file_tensor_and_shapes(root, tmp_path):
    sd = load_file(root / "comfy" / "clip_l.safetensors")
    sd["text_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(48, 25)
    save_file(sd, tmp_path / "clip.safetensors", metadata={"config": '{"num_attention_heads": 2}'})
    with pytest.raises(WeightsError, match=r"clip\.safetensors: tensor 'text_model\.encoder\."
                                           r"layers\.0\.mlp\.fc1\.weight' has shape \[48, 25\], "
                                           r"expected \[48, 24\]"):
        load_clip(tmp_path / "clip.safetensors")
    sd = load_file(root / "comfy" / T5_FILES["fp8_scaled"])
    sd[f"{WQ}.scale_weight"] = torch.ones(3)
    save_file(sd, tmp_path / "t5.safetensors")
    with pytest.raises(WeightsError, match=r"t5\.safetensors: tensor '" + re.escape(WQ)
                       + r"\.scale_weight': a weight scale has 3 values for 16 rows"):
        load_t5(tmp_path / "t5.safetensors", fp8=True)


def test_unreadable_paths(root, tmp_path):
    (tmp_path / "t5.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match=r"t5\.safetensors: not a readable safetensors file"):
        load_t5(tmp_path / "t5.safetensors")
    with pytest.raises(WeightsError, match=r"nope: no such file or folder"):
        load_clip(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"empty: no model\.safetensors or model\.safetensors"):
        load_clip(tmp_path / "empty")
    with pytest.raises(WeightsError, match=r"clip_l\.safetensors: no such tokenizer folder"):
        HFTextEncoders.from_folders(root / "tokenizer_2", root / "comfy" / "clip_l.safetensors")
