import math

import pytest
import torch

from openkontext import flow
from openkontext.packing import References, image_ids, pack, text_ids


def test_shift_mu_endpoints_and_schedule_values():
    assert flow.shift_mu(256) == pytest.approx(0.5)
    assert flow.shift_mu(4096) == pytest.approx(1.15)
    ts = flow.get_schedule(4, 4096)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and len(ts) == 5
    # shift(0.5) with mu = 1.15 is e^mu / (e^mu + 1)
    assert ts[2] == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1.0), abs=1e-12)
    assert ts == sorted(ts, reverse=True)
    unshifted = flow.get_schedule(4, 4096, shift=False)
    assert unshifted == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps"):
        flow.get_schedule(0, 256)


def _oracle(data: torch.Tensor, calls: list):
    """A model that returns the true velocity of the straight path towards `data`."""

    def model(img, img_ids, txt, txt_ids, timesteps, y, guidance):
        calls.append(img.shape[1])
        n = data.shape[1]
        t = timesteps.view(-1, 1, 1)
        v = (img[:, :n] - data) / t
        return torch.cat([v, torch.zeros_like(img[:, n:])], dim=1)

    return model


def test_denoise_with_true_velocity_recovers_data_and_drops_reference_tokens():
    g = torch.Generator().manual_seed(0)
    data = pack(torch.randn(2, 4, 8, 8, generator=g))
    noise = pack(torch.randn(2, 4, 8, 8, generator=g))
    refs = References.from_latents([torch.randn(1, 4, 8, 8, generator=g)])
    calls: list[int] = []
    steps: list[tuple[int, int]] = []
    out = flow.denoise(
        _oracle(data, calls),
        noise,
        image_ids(2, 8, 8),
        torch.zeros(2, 3, 5),
        text_ids(2, 3),
        torch.zeros(2, 5),
        flow.get_schedule(7, data.shape[1]),
        guidance=2.5,
        refs=refs,
        on_step=lambda i, n: steps.append((i, n)),
    )
    assert torch.allclose(out, data, atol=1e-5)
    assert calls == [32] * 7  # 16 target + 16 reference tokens every step
    assert steps == [(i, 7) for i in range(1, 8)]


def test_denoise_cancellation_stops_between_steps():
    data = torch.zeros(1, 4, 8)
    calls: list[int] = []
    with pytest.raises(flow.Cancelled, match="step 3 of 5"):
        flow.denoise(
            _oracle(data, calls),
            torch.randn(1, 4, 8),
            torch.zeros(1, 4, 3),
            torch.zeros(1, 1, 2),
            torch.zeros(1, 1, 3),
            torch.zeros(1, 2),
            flow.get_schedule(5, 4),
            guidance=None,
            cancelled=lambda: len(calls) >= 2,
        )
    assert len(calls) == 2


def test_interpolate_and_loss_follow_the_convention():
    data, noise = torch.full((3, 2), 2.0), torch.full((3, 2), -1.0)
    t = torch.tensor([0.0, 0.5, 1.0])
    x = flow.interpolate(data, noise, t)
    assert x[:, 0].tolist() == [2.0, 0.5, -1.0]
    assert flow.flow_loss(noise - data, data, noise).tolist() == [0.0, 0.0, 0.0]
    assert flow.flow_loss(torch.zeros_like(data), data, noise).tolist() == [9.0, 9.0, 9.0]


def test_token_weights_average_each_samples_tokens_with_those_weights():
    data, noise = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    pred = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1).expand(2, 3, 4)  # token errors 1, 4, 9
    weight = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 3.0]])
    assert flow.flow_loss(pred, data, noise, weight).tolist() == pytest.approx([14 / 3, 31 / 4])
    assert flow.flow_loss(pred, data, noise).tolist() == pytest.approx([14 / 3, 14 / 3])


def test_logit_normal_t_is_in_open_unit_interval_and_centred():
    t = flow.sample_t_logit_normal(20000, generator=torch.Generator().manual_seed(1))
    assert t.min() > 0 and t.max() < 1
    assert abs(t.median().item() - 0.5) < 0.02


def test_classifier_free_guidance_combines_the_texted_and_the_empty_prediction():
    """One doubled batch per call: the second half carries the empty text; the result is
    uncond + scale * (cond - uncond), and scale 1 gives the texted prediction back."""
    seen = []

    def model(*, img, img_ids, txt, txt_ids, timesteps, y, guidance=None):
        seen.append((img.shape[0], txt.clone(), y.clone(), guidance))
        # a velocity that depends on the text and the pooled vector
        return img * 0.5 + txt.mean(dim=(1, 2)).view(-1, 1, 1) + y.sum(1).view(-1, 1, 1)

    g = torch.Generator().manual_seed(1)
    img, txt, y = torch.randn(3, 6, 4, generator=g), torch.randn(3, 2, 5, generator=g), torch.randn(
        3, 5, generator=g)
    txt_empty, y_empty = torch.randn(1, 2, 5, generator=g), torch.randn(1, 5, generator=g)
    args = dict(img=img, img_ids=torch.zeros(3, 6, 3), txt=txt, txt_ids=torch.zeros(3, 2, 3),
                timesteps=torch.full((3,), 0.5), y=y)
    cond = model(**args)
    uncond = model(**{**args, "txt": txt_empty.expand(3, -1, -1), "y": y_empty.expand(3, -1)})
    seen.clear()
    out = flow.classifier_free(model, txt_empty, y_empty, 3.0)(**args, guidance=torch.ones(3))
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond), atol=1e-5)
    batch, both_txt, both_y, guidance = seen[0]
    assert len(seen) == 1 and batch == 6 and guidance is None
    assert torch.equal(both_txt[3:], txt_empty.expand(3, -1, -1)) and torch.equal(both_y[:3], y)
    assert torch.allclose(flow.classifier_free(model, txt_empty, y_empty, 1.0)(**args), cond)
