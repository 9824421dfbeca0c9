import torch

from openkontext.model import AutoEncoder, AutoEncoderParams

TINY = AutoEncoderParams(
    resolution=32,
    ch=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    z_channels=4,
    scale_factor=0.5,
    shift_factor=0.25,
    norm_groups=4,
)


def test_shapes_and_normalisation():
    torch.manual_seed(0)
    ae = AutoEncoder(TINY)
    x = torch.rand(2, 3, 32, 24) * 2 - 1
    mean, logvar = ae.encode_moments(x)
    assert mean.shape == (2, 4, 16, 12) == logvar.shape
    z = ae.encode(x)
    assert torch.allclose(z, 0.5 * (mean - 0.25))
    assert ae.decode(z).shape == (2, 3, 32, 24)
    # decode undoes the normalisation before the decoder runs
    assert torch.allclose(ae.decode(z), ae.decoder(mean), atol=1e-5)


def test_downsample_factor():
    assert TINY.downsample == 2
    assert AutoEncoderParams().downsample == 8
