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


def test_fitted_ids_span_the_native_square_on_any_canvas():
    """With a span, each side covers [0, span) in steps of span / tokens: a square of that many
    tokens is unchanged, and on a wide or tall canvas the cells (thirds of each side) sit at the
    positions a square has them."""
    assert torch.equal(image_ids(1, 16, 16, span=8), image_ids(1, 16, 16))
    wide = image_ids(1, 12, 22, index=2, span=8)  # 6 x 11 tokens
    rows, cols = wide[0, :, 1].unique(), wide[0, :, 2].unique()
    assert rows.tolist() == pytest.approx([8 * r / 6 for r in range(6)])
    assert cols.tolist() == pytest.approx([8 * c / 11 for c in range(11)])
    assert wide[0, :, 0].unique().tolist() == [2.0]
    # the first column of the right third sits where a square's does (8 / 3 tokens and more)
    assert cols[cols >= 8 * 2 / 3].min() == pytest.approx(16 / 3, abs=8 / 11)
    refs = References.from_latents([torch.zeros(1, 4, 4, 8)], span=8)
    assert refs.ids[0, :, 1].unique().tolist() == [0.0, 4.0]
    assert refs.ids[0, :, 2].unique().tolist() == [0.0, 2.0, 4.0, 6.0]
