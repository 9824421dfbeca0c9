"""Block offload: the transformer's blocks streamed to the device a group at a time.

On the CPU the streamer makes plain clones with the same bookkeeping as on CUDA, so these tests
check the logic: the same numbers as the plain forward, at most two groups resident, and every
tensor, hook and master exactly as before once it ends.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import TINY_FLUX, randomise_
from openkontext import flow, sampling
from openkontext.model import Flux, FluxParams, LoadedModel
from openkontext.model.offload import OFFLOAD_MODES, streamed_blocks

# 3 double + 4 single = 7 blocks, a multiple of neither group 2 nor group 3.
SEVEN = dataclasses.replace(TINY_FLUX, depth=3, depth_single_blocks=4)


def _inputs(params: FluxParams, batch=2, n_img=6, n_txt=3, device="cpu") -> dict:
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        img=torch.randn(batch, n_img, params.in_channels, generator=g),
        img_ids=torch.rand(batch, n_img, 3, generator=g) * 5,
        txt=torch.randn(batch, n_txt, params.context_in_dim, generator=g),
        txt_ids=torch.zeros(batch, n_txt, 3),
        timesteps=torch.rand(batch, generator=g),
        y=torch.randn(batch, params.vec_in_dim, generator=g),
        guidance=torch.full((batch,), 2.5),
    )
    return {k: v.to(device) for k, v in inputs.items()}


def _blocks(flux: Flux) -> list[torch.nn.Module]:
    return [*flux.double_blocks, *flux.single_blocks]


def _tensors(module: torch.nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """Every parameter and buffer by name -> (the object, where its data lives)."""
    named = (*module.named_parameters(), *module.named_buffers())
    return {name: (t, t.data_ptr()) for name, t in named}


def _assert_as_before(flux: Flux, before: dict) -> None:
    after = _tensors(flux)
    assert after.keys() == before.keys()
    for name, (t, ptr) in before.items():
        assert after[name][0] is t and after[name][1] == ptr, name
        assert t.device.type == "cpu"
    for m in flux.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks


@torch.no_grad()
@pytest.mark.parametrize(
    "group, peak, trace",
    [
        (1, 2, [{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 0}]),
        (2, 4, [{0, 1}, {0, 1}, {1, 2}, {1, 2}, {2, 3}, {2, 3}, {3, 0}]),
        (3, 6, [{0, 1}, {0, 1}, {0, 1}, {1, 2}, {1, 2}, {1, 2}, {2, 0}]),
    ],
)
def test_streamed_forward_equals_the_plain_one_with_two_groups_resident(group, peak, trace):
    flux = randomise_(Flux(SEVEN), seed=3)
    inputs = _inputs(SEVEN)
    plain = flux(**inputs)
    before = _tensors(flux)
    seen: list[set[int]] = []

    with streamed_blocks(flux, "cpu", group=group) as streamer:
        assert set(streamer.resident) == {0}  # group 0 is on its way before the first forward

        def check(block, _args):  # runs after the streamer's own pre-hook
            seen.append(set(streamer.resident))
            for name, t in _tensors(block).items():  # the block runs on copies, not masters
                assert t[1] != before[_name_in(flux, block, name)][1]

        extra = [b.register_forward_pre_hook(check) for b in _blocks(flux)]
        outs = [flux(**inputs), flux(**inputs)]  # the second starts from the wrapped prefetch
        for hook in extra:
            hook.remove()
        assert streamer.peak == peak <= 2 * group
        assert set(streamer.resident) == {0}  # the next forward's first group, prefetched

    assert all(torch.equal(out, plain) for out in outs)
    assert seen == trace + trace
    assert streamer.resident == {}
    _assert_as_before(flux, before)


def _name_in(flux: Flux, block: torch.nn.Module, name: str) -> str:
    prefix = next(n for n, m in flux.named_modules() if m is block)
    return f"{prefix}.{name}"


@torch.no_grad()
def test_small_parts_and_fp8_buffers_move_and_come_back_unchanged(flux_model):
    flux = flux_model
    scale = torch.tensor([0.5, 2.0, -1.0]).to(torch.float8_e4m3fn)
    flux.single_blocks[1].register_buffer("weight_scale", scale)
    before = _tensors(flux)
    during = {}

    def look(block, _args):
        during["scale"] = block.weight_scale
        during["img_in"] = flux.img_in.weight.data_ptr()

    with streamed_blocks(flux, "cpu"):
        hook = flux.single_blocks[1].register_forward_pre_hook(look)
        flux(**_inputs(TINY_FLUX))
        hook.remove()

    # The device copy: another tensor, the same fp8 dtype and bits.
    assert during["scale"] is not scale and during["scale"].dtype == torch.float8_e4m3fn
    assert torch.equal(during["scale"].view(torch.uint8), scale.view(torch.uint8))
    assert during["img_in"] != before["img_in.weight"][1]  # small parts ran on copies too
    assert flux.single_blocks[1].weight_scale is scale
    _assert_as_before(flux, before)


@torch.no_grad()
def test_a_cancel_inside_a_block_still_restores_everything(flux_model, monkeypatch):
    """The cancellation pre-hooks (registered after the streamer's, as `sample_latents` does)
    raise at the third block: groups stay resident until the next forward evicts them or the
    context ends."""
    flux = flux_model  # 2 double + 2 single blocks
    inputs = _inputs(TINY_FLUX)
    plain = flux(**inputs)
    before = _tensors(flux)
    monkeypatch.setattr(sampling, "BLOCK_CHECK_SECONDS", 0.0)
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) == 3

    with (
        pytest.raises(flow.Cancelled),
        streamed_blocks(flux, "cpu") as streamer,
        sampling._checked_between_blocks(flux, cancelled),
    ):
        with pytest.raises(flow.Cancelled):
            flux(**inputs)
        assert set(streamer.resident) == {2, 3}  # left by the cut-short forward
        assert torch.equal(flux(**inputs), plain)  # the next forward still runs right,
        assert streamer.peak == 2  # having dropped those first
        assert len(asked) == 3 + 4
        asked.clear()
        flux(**inputs)  # cancelled again: the error leaves both contexts
    _assert_as_before(flux, before)


def test_group_must_be_positive(flux_model):
    with pytest.raises(ValueError, match="at least 1"), streamed_blocks(flux_model, "cpu", 0):
        pass


@torch.no_grad()
def test_run_tensors_with_block_offload_gives_the_same_images():
    base = LoadedModel.random("mini", seed=0)
    ref = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    before = _tensors(base.flux)

    def images(offload: str) -> torch.Tensor:
        model = dataclasses.replace(base, offload=offload)
        return sampling.run_tensors(
            model, ["make it blue", "a red square"], [1, 2], 64, 64, steps=2, guidance=None,
            references=[ref],
        )

    plain = images("none")
    assert plain.shape == (2, 3, 64, 64)
    assert torch.equal(images("blocks"), plain)
    assert torch.equal(images("model"), plain)
    _assert_as_before(base.flux, before)


def test_offload_accepts_the_three_modes_and_the_old_switch():
    base = LoadedModel.random("mini", seed=0)
    assert base.offload == "none"
    assert OFFLOAD_MODES == ("none", "model", "blocks")
    for mode in OFFLOAD_MODES:
        assert dataclasses.replace(base, offload=mode).offload == mode
    assert dataclasses.replace(base, offload=True).offload == "model"
    assert dataclasses.replace(base, offload=False).offload == "none"
    for wrong in ("disk", "Blocks", 1, None):
        with pytest.raises(ValueError, match="none, model, blocks"):
            dataclasses.replace(base, offload=wrong)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_cuda_streaming_equals_the_gpu_forward_in_a_fraction_of_its_memory():
    params = FluxParams(
        in_channels=64, out_channels=64, vec_in_dim=64, context_in_dim=64, hidden_size=512,
        num_heads=4, depth=8, depth_single_blocks=16, axes_dim=(16, 56, 56),
    )
    flux = randomise_(Flux(params), seed=5)
    weight_bytes = sum(t.numel() * t.element_size() for _, (t, _) in _tensors(flux).items())
    before = _tensors(flux)
    cuda = torch.device("cuda")
    inputs = _inputs(params, n_img=256, n_txt=32, device=cuda)

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with streamed_blocks(flux, cuda) as streamer:
        outs = [flux(**inputs), flux(**inputs)]
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    assert streamer.peak == 2
    assert peak < weight_bytes / 3, (peak, weight_bytes)
    _assert_as_before(flux, before)

    plain = flux.to(cuda)(**inputs)
    assert all(torch.equal(out, plain) for out in outs)
