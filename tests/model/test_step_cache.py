"""Step caching in the transformer: off changes nothing, the decision is per row, and the cached
residual spans text, target and reference tokens."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_FLUX
from openkontext.model import Flux
from openkontext.model.step_cache import StepCache
from openkontext.packing import image_ids, text_ids

TEXT, SIDE = 5, 4  # text tokens; latent side in tokens, so 16 target + 16 reference tokens


def _inputs(seed: int, batch: int = 2) -> dict:
    gen = torch.Generator().manual_seed(seed)
    n = SIDE * SIDE
    ids = torch.cat(
        (image_ids(batch, 2 * SIDE, 2 * SIDE), image_ids(batch, 2 * SIDE, 2 * SIDE, index=1)), dim=1
    ).float()
    return dict(
        img=torch.randn(batch, 2 * n, TINY_FLUX.in_channels, generator=gen),
        img_ids=ids,
        txt=torch.randn(batch, TEXT, TINY_FLUX.context_in_dim, generator=gen),
        txt_ids=text_ids(batch, TEXT).float(),
        timesteps=torch.full((batch,), 0.7),
        y=torch.randn(batch, TINY_FLUX.vec_in_dim, generator=gen),
        guidance=torch.full((batch,), 2.5),
    )


def _reference_forward(flux: Flux, img, img_ids, txt, txt_ids, timesteps, y, guidance):
    """The forward as written before step caching existed: every block, in one loop."""
    from openkontext.model.layers import timestep_embedding

    vec = flux.time_in(timestep_embedding(timesteps, 256))
    vec = vec + flux.guidance_in(timestep_embedding(guidance, 256)) + flux.vector_in(y)
    img, txt = flux.img_in(img), flux.txt_in(txt)
    pe = flux.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
    for block in flux.double_blocks:
        img, txt = block(img, txt, vec, pe)
    x = torch.cat((txt, img), dim=1)
    for block in flux.single_blocks:
        x = block(x, vec, pe)
    return flux.final_layer(x[:, txt.shape[1] :], vec)


@torch.no_grad()
def test_off_and_threshold_zero_give_the_same_bytes_as_every_block(flux_model):
    x = _inputs(0)
    expected = _reference_forward(flux_model, **x)
    assert torch.equal(flux_model(**x), expected)
    cache = StepCache(0.0)
    for _ in range(3):  # the same input three times: the residual does not change at all
        assert torch.equal(flux_model(**x, step_cache=cache), expected)
    assert (cache.calls, cache.skipped) == (3, 0)


@torch.no_grad()
def test_the_cached_residual_spans_text_target_and_reference_tokens(flux_model):
    x = _inputs(0)
    cache = StepCache(math.inf)
    first = flux_model(**x, step_cache=cache)
    x["timesteps"] = torch.full((2,), 0.5)
    second = flux_model(**x, step_cache=cache)
    assert (cache.calls, cache.skipped) == (2, 1)
    assert cache.rest.shape == (2, TEXT + 2 * SIDE * SIDE, TINY_FLUX.hidden_size)
    assert cache.first.shape == (2, 2 * SIDE * SIDE, TINY_FLUX.hidden_size)
    # A skipped step is the first block's output plus the last full step's residual.
    assert second.shape == first.shape and torch.isfinite(second).all()
    assert not torch.allclose(second, flux_model(**x))


@torch.no_grad()
def test_each_row_decides_for_itself(flux_model):
    """Row 0 sees the same input twice (no change: reuse), row 1 a new one (compute): row 0
    keeps its cached output and state, row 1 equals an uncached forward, and the step counts
    as computed since not every row could skip."""
    x = _inputs(0)
    cache = StepCache(0.01)
    first = flux_model(**x, step_cache=cache)
    state = cache.first.clone(), cache.rest.clone()
    y = _inputs(0)
    y["img"][1] = _inputs(1)["img"][1]
    second = flux_model(**y, step_cache=cache)
    assert (cache.calls, cache.skipped) == (2, 0)
    torch.testing.assert_close(second[0], first[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(second[1], flux_model(**y)[1], rtol=0, atol=1e-6)
    assert torch.equal(cache.first[0], state[0][0]) and torch.equal(cache.rest[0], state[1][0])
    assert not torch.equal(cache.first[1], state[0][1])


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        StepCache(-0.1)
    with pytest.raises(ValueError, match="threshold"):
        StepCache(math.nan)
