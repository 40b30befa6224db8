"""Tests of decal.dali_pipes.core.samplers (CPU, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coco_factory import write_coco_dataset
from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.core.samplers import RepeatFactorSampler, UniformSampler, shard_indices


# ----------------------------------------------------------------------------- uniform


def test_uniform_deterministic_per_seed_and_epoch():
    a = UniformSampler(100, seed=7)
    b = UniformSampler(100, seed=7)
    e0, e1 = a.epoch_indices(0), a.epoch_indices(1)
    assert e0.dtype == np.int64 and e0.shape == (100,)
    np.testing.assert_array_equal(np.sort(e0), np.arange(100))
    np.testing.assert_array_equal(e0, b.epoch_indices(0))
    np.testing.assert_array_equal(e0, a.epoch_indices(0))  # no hidden state
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, UniformSampler(100, seed=8).epoch_indices(0))
    np.testing.assert_array_equal(e0, np.random.default_rng([7, 0]).permutation(100))
    assert len(a) == 100 and a.expected_epoch_length() == 100.0


def test_uniform_no_shuffle_and_validation():
    np.testing.assert_array_equal(UniformSampler(5, seed=0, shuffle=False).epoch_indices(3), np.arange(5))
    assert UniformSampler(0, seed=0).epoch_indices(0).shape == (0,)
    with pytest.raises(ValueError, match="num_items"):
        UniformSampler(-1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        UniformSampler(3, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        UniformSampler(3, seed=0).epoch_indices(-1)


# ----------------------------------------------------------------------------- repeat factors


def _crafted():
    """1000 images: category 1 in 100 images (r = 1 at t = 0.1), category 2 in 25
    (r = sqrt(0.1 / 0.025) = 2), category 3 in 10 (r = sqrt(10) = 3.1623), category 4 in
    1 (r = 10); the rest have category 0 (in 864 images) or nothing."""
    cats: list[set[int]] = [set() for _ in range(1000)]
    for i in range(100):
        cats[i].add(1)
    for i in range(100, 125):
        cats[i].add(2)
    for i in range(120, 130):  # 5 images with both 2 and 3: r = max = sqrt(10)
        cats[i].add(3)
    cats[500].add(4)
    cats[500].add(1)  # max(10, 1)
    for i in range(136, 1000):
        if i != 500:
            cats[i].add(0)
    return cats


def test_rfs_repeat_factors_crafted():
    s = RepeatFactorSampler(_crafted(), seed=0, threshold=0.1)
    r = s.repeat_factors
    assert r.dtype == np.float64 and r.shape == (1000,)
    # f(1) = 101/1000 -> r = 1
    assert s.category_repeat_factors[1] == 1.0
    assert s.category_repeat_factors[2] == pytest.approx(2.0)
    assert s.category_repeat_factors[3] == pytest.approx(math.sqrt(10))
    assert s.category_repeat_factors[4] == pytest.approx(10.0)
    assert np.all(r[:100] == 1.0)
    assert r[100:120] == pytest.approx(2.0)
    assert r[120:130] == pytest.approx(math.sqrt(10))  # max over {2, 3}
    assert np.all(r[130:136] == 1.0)  # no categories
    assert r[500] == pytest.approx(10.0)
    assert np.all(np.delete(r[136:], 500 - 136) == 1.0)
    expected = 100 + 20 * 2 + 10 * math.sqrt(10) + 6 + 863 + 10
    assert s.expected_epoch_length() == pytest.approx(expected)
    assert len(s) == 1000


def test_rfs_lvis_default_threshold():
    # t = 0.001 (LVIS): a category in 1 of 1000 images has f = t -> r = 1
    cats = [{1}] + [{2}] * 999
    s = RepeatFactorSampler(cats, seed=0)
    assert np.all(s.repeat_factors == 1.0)
    # 1 of 4000 images -> r = sqrt(4) = 2
    s = RepeatFactorSampler([{1}] + [set()] * 3999, seed=0)
    assert s.repeat_factors[0] == pytest.approx(2.0)
    assert np.all(s.repeat_factors[1:] == 1.0)


def test_rfs_epochs_deterministic_and_stochastic_rounding():
    cats = _crafted()
    s = RepeatFactorSampler(cats, seed=3, threshold=0.1)
    e0 = s.epoch_indices(0)
    assert e0.dtype == np.int64
    np.testing.assert_array_equal(e0, RepeatFactorSampler(cats, seed=3, threshold=0.1).epoch_indices(0))
    assert not np.array_equal(e0, s.epoch_indices(1))
    lengths = []
    for epoch in range(400):
        idx = s.epoch_indices(epoch)
        counts = np.bincount(idx, minlength=1000)
        # stochastic rounding: floor(r) or floor(r) + 1 copies
        fl = np.floor(s.repeat_factors)
        assert np.all((counts == fl) | (counts == fl + 1))
        assert np.all(counts[s.repeat_factors == np.floor(s.repeat_factors)] == fl[s.repeat_factors == fl])
        lengths.append(len(idx))
    # only the 10 images with r = sqrt(10) are random: Bernoulli(0.1623) each
    p = math.sqrt(10) - 3
    sd_mean = math.sqrt(10 * p * (1 - p) / len(lengths))
    assert abs(np.mean(lengths) - s.expected_epoch_length()) < 5 * sd_mean
    # shuffled: not sorted
    assert not np.all(np.diff(e0) >= 0)


def test_rfs_mean_length_many_fractional():
    rng = np.random.default_rng(0)
    cats = [{int(c)} for c in rng.zipf(1.5, 3000) if c < 1000] + [set()] * 10
    s = RepeatFactorSampler(cats, seed=1, threshold=0.01)
    frac = s.repeat_factors - np.floor(s.repeat_factors)
    var = float((frac * (1 - frac)).sum())
    n_epochs = 200
    mean = np.mean([len(s.epoch_indices(e)) for e in range(n_epochs)])
    assert abs(mean - s.expected_epoch_length()) < 5 * math.sqrt(var / n_epochs) + 1e-9


def test_rfs_from_dataset_ignores_crowd(tmp_path):
    j, d = write_coco_dataset(tmp_path, num_images=12, seed=2)
    ds = CocoDataset(j, d)
    s = RepeatFactorSampler.from_dataset(ds, seed=0, threshold=0.5)
    counts = ds.category_image_counts()
    n = len(ds)
    for i, rec in enumerate(ds.records):
        want = max((max(1.0, math.sqrt(0.5 / (counts[c] / n))) for c in rec.category_ids), default=1.0)
        assert s.repeat_factors[i] == pytest.approx(want)


def test_rfs_validation():
    with pytest.raises(ValueError, match="threshold"):
        RepeatFactorSampler([{1}], seed=0, threshold=0)
    with pytest.raises(ValueError, match="seed"):
        RepeatFactorSampler([{1}], seed=1.5)
    assert RepeatFactorSampler([], seed=0).epoch_indices(0).shape == (0,)


# ----------------------------------------------------------------------------- sharding


def test_shard_matches_torch_distributed_sampler():
    pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler

    for n, k in [(10, 3), (10, 1), (2, 5), (12, 4), (1, 4)]:
        for rank in range(k):
            ds = list(range(n))
            want = list(DistributedSampler(ds, num_replicas=k, rank=rank, shuffle=False, drop_last=False))
            got = shard_indices(np.arange(n), rank, k)
            assert got.tolist() == want


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), k=st.integers(1, 9), seed=st.integers(0, 1000))
def test_shard_properties(n, k, seed):
    idx = np.random.default_rng(seed).permutation(n).astype(np.int64)
    shards = [shard_indices(idx, r, k) for r in range(k)]
    length = math.ceil(n / k)
    assert all(len(s) == length and s.dtype == idx.dtype for s in shards)
    allv = np.concatenate(shards)
    assert set(allv.tolist()) == set(idx.tolist())  # union covers everything
    # disjoint apart from the wrap padding: exactly len*k - n duplicates, from the start
    pad = length * k - n
    assert len(allv) - len(set(allv.tolist())) == pad
    vals, counts = np.unique(allv, return_counts=True)
    dup = set(vals[counts > 1].tolist())
    assert dup <= set(idx[:pad].tolist())


def test_shard_validation():
    a = np.arange(5)
    with pytest.raises(ValueError, match="num_shards"):
        shard_indices(a, 0, 0)
    with pytest.raises(ValueError, match="shard_id"):
        shard_indices(a, 2, 2)
    with pytest.raises(ValueError, match="shard_id"):
        shard_indices(a, -1, 2)
    with pytest.raises(ValueError, match="indices"):
        shard_indices(a.reshape(5, 1), 0, 2)
    with pytest.raises(ValueError, match="indices"):
        shard_indices(np.array([0.5, 1.5]), 0, 2)
