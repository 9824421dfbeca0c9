import numpy as np

from openkontext.preserve import changed_region, paste_back


def test_small_drift_is_restored_exactly_and_the_edit_is_kept():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    edited = np.clip(original.astype(int) + rng.integers(-5, 6, original.shape), 0, 255)
    edited = edited.astype(np.uint8)
    edited[10:14, 20:24] = [255, 0, 0]  # the edit
    original[10:14, 20:24] = [0, 0, 255]
    result, region = paste_back(original, edited, threshold=24, grow=1)
    assert region[10:14, 20:24].all()
    assert region.sum() == 6 * 6  # 4x4 grown by one pixel on each side
    assert np.array_equal(result[~region], original[~region])
    assert np.array_equal(result[10:14, 20:24], edited[10:14, 20:24])


def test_global_change_keeps_the_whole_output():
    original = np.zeros((8, 8, 3), np.uint8)
    edited = np.full((8, 8, 3), 200, np.uint8)
    assert changed_region(original, edited).all()
    result, _ = paste_back(original, edited)
    assert np.array_equal(result, edited)


def test_identical_images_change_nothing():
    img = np.full((8, 8, 3), 7, np.uint8)
    assert not changed_region(img, img).any()


def test_a_baseline_keeps_the_autoencoders_own_error_out_of_the_region():
    """Compared with the input, an output that merely has the autoencoder's soft edges looks
    changed along every edge; compared with the input's round trip, only the real edit does."""
    original = np.zeros((32, 32, 3), np.uint8)
    original[:, 16:] = 255  # a sharp edge
    baseline = original.copy()
    baseline[:, 15:17] = 128  # the round trip softens it
    edited = baseline.copy()
    edited[2:6, 2:6] = [255, 0, 0]  # the edit
    naive = changed_region(original, edited, grow=0)
    assert naive[:, 15:17].all() and naive.sum() == 16 + 32 * 2
    result, region = paste_back(original, edited, baseline, grow=0)
    assert region.sum() == 16 and region[2:6, 2:6].all()
    assert np.array_equal(result[~region], original[~region])  # the sharp edge, bit for bit
