"""`openkontext train lora`: a few steps on tiny pairs lower their loss, the file it writes reads
back to the same outputs, a resumed run ends where an uninterrupted one does, and bad pair
folders are refused naming the file."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from openkontext.cli import app
from openkontext.model.lora import applied
from openkontext.packing import image_ids, text_ids
from openkontext.pipeline import Kontext
from openkontext.resolution import resolve_size
from openkontext.train.lora import (
    LoraTrainConfig,
    checkpoint_path,
    encode_pairs,
    new_lora,
    pairs_loss,
    train_lora,
)
from openkontext.train.pairs import read_pairs
from openkontext.weights import load_model
from openkontext.weights.lora import load_lora
from openkontext.world.render import render, to_pil
from openkontext.world.scene import random_scene

runner = CliRunner()
FAST = dict(rank=4, alpha=4, lr=1e-2, batch=2, autocast_bf16=False)


def unboxed(output: str) -> str:
    return " ".join(re.sub("[\u2500-\u257f]", " ", output).split())


def write_pair(folder, name: str, size=(64, 64), seed: int = 0, text="mirror the picture"):
    """NAME.png (a Shapes World scene at `size`), NAME_after.png (it mirrored), NAME.txt."""
    picture = render(random_scene(random.Random(seed), min_objects=2), size)
    to_pil(picture).save(folder / f"{name}.png")
    to_pil(np.ascontiguousarray(picture[:, ::-1])).save(folder / f"{name}_after.png")
    (folder / f"{name}.txt").write_text(text)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(None)  # the embedded mini model


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """Four pairs in two sizes: two square, two wide (a second training resolution)."""
    folder = tmp_path_factory.mktemp("pairs")
    for i in range(4):
        write_pair(folder, f"p{i}", (64, 64) if i < 2 else (96, 48), seed=i)
    return folder


@pytest.fixture(scope="module")
def trained(model, pairs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "mirror.safetensors"
    pairs = read_pairs(pairs_dir, model.preset)
    cfg = LoraTrainConfig(steps=10, checkpoint_every=5, **FAST)
    return out, pairs, cfg, train_lora(model, pairs, out, cfg)


def test_pairs_are_sized_for_the_model_and_bucketed(model, pairs_dir):
    pairs = read_pairs(pairs_dir, model.preset)
    wide = resolve_size(model.preset, (96, 48))
    assert [p.size for p in pairs] == [(64, 64), (64, 64), wide, wide] and wide != (64, 64)
    assert all(p.target.size == p.size for p in pairs)
    buckets = encode_pairs(model, pairs, bf16=False)
    assert sorted(len(b.names) for b in buckets) == [2, 2]
    for b in buckets:  # one latent token per 8 px of the picture
        assert b.data.shape[1] == b.size[0] // 8 * b.size[1] // 8 == b.refs.tokens.shape[1]


def test_training_lowers_the_loss_on_its_pairs(model, trained):
    _, pairs, cfg, run = trained
    buckets = encode_pairs(model, pairs, bf16=False)
    fresh = new_lora("fresh", model.flux, cfg, "cpu")  # up = 0: the identity
    before = pairs_loss(model, buckets, None, cfg)
    assert pairs_loss(model, buckets, fresh, cfg) == pytest.approx(before, abs=1e-7)
    after = pairs_loss(model, buckets, run.lora, cfg)
    assert run.steps == 10 and after < 0.8 * before, (before, after)


def test_the_file_reads_back_to_the_trained_adapters_outputs(model, trained, scene):
    out, _, _, run = trained
    loaded = load_lora(out, strict=True)
    # diffusers' layer names (q, k and v apart) hold our fused layers
    with open(out, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert "transformer.transformer_blocks.0.attn.to_q.lora_A.weight" in header
    assert "transformer.single_transformer_blocks.3.proj_mlp.lora_B.weight" in header
    assert out.stat().st_size < 2e6
    gen = torch.Generator().manual_seed(0)
    b, n, params = 2, 64, model.flux.params
    inputs = dict(img=torch.randn(b, 2 * n, params.in_channels, generator=gen),
                  img_ids=torch.cat((image_ids(b, 16, 16), image_ids(b, 16, 16, index=1)), 1),
                  txt=torch.randn(b, 8, params.context_in_dim, generator=gen),
                  txt_ids=text_ids(b, 8), timesteps=torch.tensor([0.3, 0.8]),
                  y=torch.randn(b, params.vec_in_dim, generator=gen))
    with torch.no_grad():
        plain = model.flux(**inputs)
        with applied(model.flux, [(run.lora, 1.0)]):
            ours = model.flux(**inputs)
        with applied(model.flux, [(loaded, 1.0)]):
            theirs = model.flux(**inputs)
    assert (ours - plain).abs().max() > 1e-3  # the adapters do something
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # and through the pipeline: --lora FILE edits as the trained adapters do
    kontext = Kontext(model)
    via_file = kontext.edit(scene, "mirror the picture", seed=3, steps=2, loras=[(str(out), 1.0)])
    with applied(model.flux, [(run.lora, 1.0)]):
        worn = kontext.edit(scene, "mirror the picture", seed=3, steps=2)
    assert np.array_equal(np.asarray(via_file.images[0]), np.asarray(worn.images[0]))


class Stop(Exception):
    pass


def test_a_resumed_run_ends_on_the_tensors_of_an_uninterrupted_one(model, pairs_dir, tmp_path):
    pairs = read_pairs(pairs_dir, model.preset)
    cfg = LoraTrainConfig(steps=6, checkpoint_every=2, **FAST)
    whole = train_lora(model, pairs, tmp_path / "whole.safetensors", cfg)

    def interrupt(step: int, _loss: float) -> None:
        if step == 5:  # one step past the checkpoint at 4, which the resumed run repeats
            raise Stop

    out = tmp_path / "cut.safetensors"
    with pytest.raises(Stop):
        train_lora(model, pairs, out, cfg, on_step=interrupt)
    assert not out.exists() and torch.load(checkpoint_path(out), weights_only=False)["step"] == 4
    resumed = train_lora(model, pairs, out, cfg)
    assert resumed.steps == 6 and len(resumed.losses) == 2
    assert resumed.losses == whole.losses[4:]
    for layer, deltas in whole.lora.deltas.items():
        for a, b in zip(deltas, resumed.lora.deltas[layer], strict=True):
            assert torch.equal(a.down, b.down) and torch.equal(a.up, b.up), layer


def test_the_command_trains_and_refuses_to_resume_other_settings(pairs_dir, tmp_path):
    out = tmp_path / "cli.safetensors"
    args = ["train", "lora", "--pairs", str(pairs_dir), "--out", str(out), "--weights",
            "random:mini-fine", "--steps", "2", "--batch", "2", "--rank", "2",
            "--targets", "qkv,linear1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 pairs in 2 size(s)" in result.output and f"wrote {out}" in result.output
    assert {m.rsplit(".", 1)[-1] for m in load_lora(out).deltas} == {"qkv", "linear1"}
    result = runner.invoke(app, [*args, "--steps", "3", "--rank", "4"])
    assert result.exit_code == 2
    assert "was trained with other settings (rank 2, not 4)" in unboxed(result.output)
    result = runner.invoke(app, [*args, "--targets", "qkv,attn"])
    assert result.exit_code == 2 and "unknown layer group(s) attn" in unboxed(result.output)


def _bad(folder, what: str) -> str:
    """Make `folder` bad in one way -> the file the error must name."""
    write_pair(folder, "good")
    write_pair(folder, "bad")
    if what == "no after":
        (folder / "bad_after.png").unlink()
        return "bad.png"
    if what == "no instruction":
        (folder / "bad.txt").unlink()
        return "bad.png"
    if what == "empty instruction":
        (folder / "bad.txt").write_text("  \n")
        return "bad.txt"
    if what == "unreadable image":
        (folder / "bad_after.png").write_bytes(b"not a picture")
        return "bad_after.png"
    if what == "after without input":
        (folder / "bad.png").rename(folder / "other.png")
        return "bad_after.png"
    lines = [{"id": "a", "input": None, "instruction": "a red circle",
              "target": {"background": "white", "objects": []}}]
    (folder / "pairs.jsonl").write_text("\n".join(map(json.dumps, lines)))
    return "pairs.jsonl line 1"


@pytest.mark.parametrize("what", ["no after", "no instruction", "empty instruction",
                                  "unreadable image", "after without input", "a generation"])
def test_a_bad_pair_folder_exits_2_naming_the_file(tmp_path, what):
    folder = tmp_path / "pairs"
    folder.mkdir()
    named = _bad(folder, what)
    result = runner.invoke(app, ["train", "lora", "--pairs", str(folder), "--out",
                                 str(tmp_path / "x.safetensors"), "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert named.replace(" ", "") in unboxed(result.output).replace(" ", "")  # paths wrap
    assert not (tmp_path / "x.safetensors").exists()


def test_a_pairs_jsonl_in_the_eval_format_is_read(model, tmp_path):
    scene = {"background": "white",
             "objects": [{"shape": "circle", "color": "red", "cell": "top left", "size": "large"}]}
    Image.new("RGB", (80, 40), "blue").save(tmp_path / "in.png")
    lines = [{"id": "one", "input": scene, "instruction": "mirror it",
              "target": dict(scene, objects=[dict(scene["objects"][0], cell="top right")])},
             {"id": "two", "input": "in.png", "instruction": "make it red", "target": "in.png"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(map(json.dumps, lines)))
    pairs = read_pairs(tmp_path, model.preset)
    assert [(p.name, p.instruction) for p in pairs] == [("one", "mirror it"),
                                                        ("two", "make it red")]
    assert pairs[0].size == (64, 64) and pairs[1].size == resolve_size(model.preset, (80, 40))
    left, right = np.asarray(pairs[0].source), np.asarray(pairs[0].target)
    assert np.array_equal(left[:, ::-1], right)


def test_diffusers_loads_the_file_to_the_same_velocity(model, trained):
    """The written file in diffusers' Flux transformer holding the same (mini) weights, loaded
    as FluxKontextPipeline.load_lora_weights loads LoRAs."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )

    from openkontext.weights import flux_bfl_to_diffusers, flux_params_to_diffusers_config

    out, _, _, run = trained
    config = flux_params_to_diffusers_config(model.flux.params)
    theirs = FluxTransformer2DModel(**{k: v for k, v in config.items() if k[0] != "_"})
    theirs.load_state_dict(flux_bfl_to_diffusers(model.flux.state_dict()))
    pipe = FluxKontextPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                               text_encoder=None, tokenizer=None, text_encoder_2=None,
                               tokenizer_2=None, transformer=theirs.eval())
    pipe.load_lora_weights(str(out))
    gen = torch.Generator().manual_seed(1)
    params = model.flux.params
    img, txt = torch.randn(2, 128, params.in_channels, generator=gen), torch.randn(2, 8, 384)
    ids = torch.cat((image_ids(1, 16, 16)[0], image_ids(1, 16, 16, index=1)[0]))
    y, t = torch.randn(2, params.vec_in_dim, generator=gen), torch.tensor([0.3, 0.8])
    with torch.no_grad(), applied(model.flux, [(run.lora, 1.0)]):
        ours = model.flux(img=img, img_ids=ids.expand(2, -1, -1), txt=txt,
                          txt_ids=text_ids(2, 8), timesteps=t, y=y)
        got = theirs(hidden_states=img, encoder_hidden_states=txt, pooled_projections=y,
                     timestep=t, img_ids=ids, txt_ids=torch.zeros(8, 3), return_dict=False)[0]
    torch.testing.assert_close(got, ours, atol=1e-4, rtol=1e-4)


def test_training_over_fp8_storage(pairs_dir, tmp_path):
    """The base's blocks stored in fp8 (as kontext-dev on a small GPU): gradients reach the
    adapters through the fp8 layers, and the loss falls."""
    from openkontext.model.fp8 import FP8Linear

    fp8 = load_model(None, fp8=True)
    assert isinstance(fp8.flux.single_blocks[0].linear1, FP8Linear)
    pairs = read_pairs(pairs_dir, fp8.preset)
    cfg = LoraTrainConfig(steps=6, **FAST)
    run = train_lora(fp8, pairs, tmp_path / "fp8.safetensors", cfg)
    buckets = encode_pairs(fp8, pairs, bf16=False)
    assert pairs_loss(fp8, buckets, run.lora, cfg) < 0.9 * pairs_loss(fp8, buckets, None, cfg)
