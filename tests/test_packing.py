import pytest
import torch

from openkontext.packing import References, image_ids, pack, unpack


def test_pack_unpack_round_trip_and_patch_order():
    z = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tokens = pack(z)
    assert tokens.shape == (2, 6, 12)
    # token 1 is the patch at latent rows 0-1, cols 2-3; channel-major then (row, col)
    assert tokens[0, 1, :4].tolist() == [z[0, 0, 0, 2], z[0, 0, 0, 3], z[0, 0, 1, 2], z[0, 0, 1, 3]]
    assert torch.equal(unpack(tokens, 4, 6), z)


def test_pack_rejects_odd_latent():
    with pytest.raises(ValueError, match="even"):
        pack(torch.zeros(1, 4, 5, 4))


def test_image_ids_index_rows_cols():
    ids = image_ids(2, 4, 6, index=3)
    assert ids.shape == (2, 6, 3)
    assert ids[0, :, 0].tolist() == [3.0] * 6
    assert ids[1, 4].tolist() == [3.0, 1.0, 1.0]


def test_references_number_each_image_and_expand():
    refs = References.from_latents([torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 2, 4)])
    assert refs.tokens.shape == (1, 6, 16)
    assert refs.ids[0, :, 0].tolist() == [1.0] * 4 + [2.0] * 2
    assert refs.expand(3).tokens.shape == (3, 6, 16)
    with pytest.raises(ValueError, match="1 to 4"):
        References.from_latents([torch.zeros(1, 4, 2, 2)] * 5)
