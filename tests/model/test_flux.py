import pytest
import torch

from openkontext.model import PRESETS, Flux, FluxParams
from openkontext.model.layers import RopeEmbedder, apply_rope, timestep_embedding

TINY = FluxParams(
    in_channels=16,
    out_channels=16,
    vec_in_dim=8,
    context_in_dim=12,
    hidden_size=32,
    num_heads=2,
    depth=1,
    depth_single_blocks=1,
    axes_dim=(4, 6, 6),
)


def _inputs(batch=2, n_img=6, n_txt=3):
    g = torch.Generator().manual_seed(0)
    return dict(
        img=torch.randn(batch, n_img, 16, generator=g),
        img_ids=torch.rand(batch, n_img, 3) * 5,
        txt=torch.randn(batch, n_txt, 12, generator=g),
        txt_ids=torch.zeros(batch, n_txt, 3),
        timesteps=torch.rand(batch, generator=g),
        y=torch.randn(batch, 8, generator=g),
        guidance=torch.full((batch,), 2.5),
    )


def test_params_validation():
    with pytest.raises(ValueError, match="axes_dim"):
        FluxParams(hidden_size=64, num_heads=2, axes_dim=(4, 4, 4))
    with pytest.raises(ValueError, match="divisible"):
        FluxParams(hidden_size=65, num_heads=2)


def test_presets_are_consistent():
    dev = PRESETS["kontext-dev"].flux
    assert dev.hidden_size // dev.num_heads == 128 and dev.axes_dim == (16, 56, 56)
    for mini in (p for name, p in PRESETS.items() if name.startswith("mini")):
        assert mini.flux.in_channels == 4 * mini.ae.z_channels
        assert mini.flux.context_in_dim == mini.text.context_dim
        assert mini.flux.vec_in_dim == mini.text.vec_dim


def test_fresh_init_predicts_zero_and_output_shape():
    model = Flux(TINY)
    model.init_weights()
    out = model(**_inputs())
    assert out.shape == (2, 6, 16)
    assert torch.count_nonzero(out) == 0


def test_guidance_required_when_embedded():
    model = Flux(TINY)
    inputs = _inputs()
    inputs["guidance"] = None
    with pytest.raises(ValueError, match="guidance"):
        model(**inputs)


def test_batch_elements_are_independent():
    torch.manual_seed(0)
    model = Flux(TINY)
    inputs = _inputs()
    full = model(**inputs)
    single = model(**{k: v[1:] for k, v in inputs.items()})
    assert torch.allclose(full[1:], single, atol=1e-6)


def test_rope_preserves_norm_and_depends_on_relative_position():
    rope = RopeEmbedder(10000, (4, 6, 6))
    q = torch.randn(1, 1, 1, 16).expand(1, 1, 2, 16)
    ids_a = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 4.0, 7.0]]])
    ids_b = ids_a + torch.tensor([1.0, 3.0, -2.0])  # same offset on both tokens
    qa, qb = apply_rope(q, rope(ids_a)), apply_rope(q, rope(ids_b))
    assert torch.allclose(qa.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    dot_a = (qa[..., 0, :] * qa[..., 1, :]).sum()
    dot_b = (qb[..., 0, :] * qb[..., 1, :]).sum()
    assert torch.allclose(dot_a, dot_b, atol=1e-4)


def test_timestep_embedding_puts_cos_first():
    emb = timestep_embedding(torch.tensor([0.0]), 8)
    assert emb.tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]
