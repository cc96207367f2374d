"""Mask generator: buckets respected, deterministic per (seed, index); mask folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sair_train.masks import BUCKETS, MIN_HOLE, MaskFolder, binarise, bucket_mask, training_mask


@pytest.mark.parametrize("bucket", list(BUCKETS))
@pytest.mark.parametrize("size", [(256, 256), (64, 96)])
def test_every_mask_lands_in_its_bucket(bucket, size):
    low, high = BUCKETS[bucket]
    for i in range(12):
        m = bucket_mask(bucket, i, size, seed=3)
        assert m.shape == size and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert max(low, MIN_HOLE) < m.mean() <= high


def test_same_seed_same_mask_and_indices_differ():
    a = bucket_mask("20-40%", 5, seed=1)
    assert np.array_equal(a, bucket_mask("20-40%", 5, seed=1))
    assert not np.array_equal(a, bucket_mask("20-40%", 6, seed=1))
    assert not np.array_equal(a, bucket_mask("20-40%", 5, seed=2))


def test_training_masks_cover_all_buckets():
    rng = np.random.default_rng(0)
    ratios = [training_mask((128, 128), rng).mean() for _ in range(60)]
    assert min(ratios) > MIN_HOLE and max(ratios) <= 0.6
    assert any(r <= 0.2 for r in ratios) and any(r > 0.4 for r in ratios)


def test_mask_folder_resizes_nearest_and_binarises(tmp_path):
    m = np.zeros((40, 60), np.uint8)
    m[10:30, 20:50] = 200  # white-ish = hole
    m[0, 0] = 100  # below threshold: not a hole
    Image.fromarray(m).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(255 - m).save(tmp_path / "sub" / "b.png")
    folder = MaskFolder(tmp_path)
    assert len(folder) == 2
    out = folder.load(0, (80, 120))
    assert out.shape == (80, 120) and set(np.unique(out)) == {0.0, 1.0}
    assert out[40, 70] == 1 and out[0, 0] == 0
    assert np.isclose(out.mean(), (m > 127).mean())
    assert np.array_equal(binarise(np.array([[0, 128, 255]], np.uint8)), [[0, 1, 1]])
