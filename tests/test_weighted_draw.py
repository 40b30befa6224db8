"""WeightedDraw: the same indices and generator state as NumPy's ``Generator.choice`` with
``p`` (``dali_pipes/core/weighted_draw.py``), its validation at construction, and mosaic's
plan drawn through it equal to the plan drawn from the raw weights."""

from __future__ import annotations

import numpy as np
import pytest

from decal.dali_pipes.core.weighted_draw import WeightedDraw
from decal.dali_pipes.mosaic.twin import draw_mosaic_plan


def weight_vectors() -> dict[str, np.ndarray]:
    """Uniform, skewed (repeat-factor-like and heavy-tailed), zeros in some entries (first,
    last, runs in the middle), a single nonzero weight, a single item, integer weights."""
    rng = np.random.default_rng(123)
    skewed = np.maximum(1.0, np.sqrt(0.001 / rng.uniform(1e-5, 0.05, 5000)))  # r(i) of RFS
    zeros = rng.exponential(size=300)
    zeros[[0, 1, 7, 150, 151, 152, 298, 299]] = 0.0
    one = np.zeros(50)
    one[31] = 2.5
    return {
        "uniform": np.ones(128),
        "skewed": skewed,
        "heavy": rng.pareto(0.7, size=1000) + 1e-12,
        "zeros": zeros,
        "zeros_sparse": np.where(rng.random(2000) < 0.9, 0.0, rng.random(2000)),
        "one_nonzero": one,
        "single": np.array([3.0]),
        "two_tiny": np.array([1e-300, 3e-300]),
        "ints": np.array([0, 5, 1, 0, 9], dtype=np.int64),
    }


@pytest.mark.parametrize("name", sorted(weight_vectors()))
def test_draw_is_bit_identical_to_choice(name: str) -> None:
    weights = weight_vectors()[name]
    draw = WeightedDraw(weights)
    p = np.asarray(weights, dtype=np.float64) / np.asarray(weights, dtype=np.float64).sum()
    for seed in range(60):
        for size in [(1,), (7,), (16, 3), (128, 3), (2, 3, 4), (0, 3)]:
            ours, theirs = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 2])
            got = draw.draw(ours, size)
            want = theirs.choice(len(weights), size=size, p=p)
            assert got.dtype == np.int64 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            # the generator is left in the same state: its next draws agree
            assert ours.bit_generator.state == theirs.bit_generator.state
            np.testing.assert_array_equal(ours.random(5), theirs.random(5))
            np.testing.assert_array_equal(ours.integers(0, 1000, 5), theirs.integers(0, 1000, 5))
        one_ours, one_theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        assert draw.draw_one(one_ours) == int(one_theirs.choice(len(weights), p=p))
        assert one_ours.random() == one_theirs.random()


def test_zero_weights_are_never_drawn() -> None:
    weights = weight_vectors()["zeros"]
    drawn = WeightedDraw(weights).draw(np.random.default_rng(0), 200_000)
    assert np.all(weights[drawn] > 0)
    only = WeightedDraw(weight_vectors()["one_nonzero"]).draw(np.random.default_rng(1), 1000)
    assert np.all(only == 31)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.zeros(4), "positive finite sum"),
        (np.array([1.0, -0.5, 2.0]), "must be >= 0, got -0.5 at index 1"),
        (np.array([1.0, np.nan]), "must be finite, got nan at index 1"),
        (np.array([1.0, np.inf, 2.0]), "must be finite, got inf at index 1"),
        (np.array([1e308, 1e308]), "positive finite sum"),
        (np.zeros(0), "non-empty 1-D"),
        (np.ones((2, 3)), "non-empty 1-D"),
    ],
)
def test_bad_weights_are_refused_at_construction_naming_the_field(weights: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match="item_weights") as info:
        WeightedDraw(weights, field="item_weights")
    assert message in str(info.value)


def test_mosaic_plan_through_the_draw_equals_the_plan_from_the_weights() -> None:
    """The source passes its WeightedDraw; a caller may pass the weights: the same plan,
    and the plan's extra tiles are ``choice(n, (B, 3), p=w / w.sum())`` of the mosaic stream
    after its coin and centre draws (the base behaviour, kept)."""
    options = dict(prob=0.5, jitter=(0.5, 1.5), flip_prob=0.5, center_range=(0.25, 0.75), output_size=64)
    for name, weights in weight_vectors().items():
        draw = WeightedDraw(weights)
        p = np.asarray(weights, dtype=np.float64) / np.asarray(weights, dtype=np.float64).sum()
        for seed in range(20):
            for batch in (1, 4, 16):
                a = draw_mosaic_plan(np.random.default_rng([seed, 0]), np.random.default_rng([seed, 2]), batch,
                                     item_weights=weights, **options)  # fmt: skip
                b = draw_mosaic_plan(np.random.default_rng([seed, 0]), np.random.default_rng([seed, 2]), batch,
                                     item_weights=draw, **options)  # fmt: skip
                for field in ("mosaic", "centre", "extra", "tile_scale", "crop_pos", "flip"):
                    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{name} {field}")
                rng = np.random.default_rng([seed, 2])
                coin = rng.random(batch) < 0.5
                rng.uniform(0.25, 0.75, size=(batch, 2))
                extra = rng.choice(len(weights), size=(batch, 3), p=p)
                np.testing.assert_array_equal(b.extra, np.where(coin[:, None], extra, -1), err_msg=name)


@pytest.mark.parametrize("bad", [np.inf, np.nan, -1.0])
def test_mosaic_source_refuses_bad_item_weights_naming_the_field(tmp_path, bad: float) -> None:
    """An infinite weight used to pass the source's check and then fail inside every batch's
    ``choice`` (NaN probabilities); now all bad weights are refused when the source is made."""
    from coco_factory import write_coco_dataset

    from decal.dali_pipes.coco.reader import CocoDataset
    from decal.dali_pipes.core.samplers import UniformSampler
    from decal.dali_pipes.core.scale_jitter import ScaleJitter
    from decal.dali_pipes.mosaic.pipeline import MosaicSource

    dataset = CocoDataset(*write_coco_dataset(tmp_path, num_images=4, seed=1))
    options = dict(output_size=32, batch_size=2, seed=0, jitter=ScaleJitter(1.0, 1.0), flip_prob=0.5)
    weights = np.ones(len(dataset))
    weights[2] = bad
    with pytest.raises(ValueError, match=r"item_weights must be .* at index 2"):
        MosaicSource(dataset, UniformSampler(len(dataset), seed=0), item_weights=weights, **options)
    with pytest.raises(ValueError, match=r"item_weights must be \(num_items,\) = \(4,\)"):
        MosaicSource(dataset, UniformSampler(len(dataset), seed=0), item_weights=np.ones(3), **options)


def test_mosaic_source_plans_without_remaking_the_cdf(tmp_path, monkeypatch) -> None:
    """The source makes its WeightedDraw once; its per-batch plans (and the extra tiles they
    name) reuse it: no O(num_items) work per batch. Its plans equal those drawn from the raw
    weights."""
    from coco_factory import write_coco_dataset

    from decal.dali_pipes.coco.reader import CocoDataset
    from decal.dali_pipes.core import weighted_draw
    from decal.dali_pipes.core.epoch_source import LoaderPosition
    from decal.dali_pipes.core.samplers import RepeatFactorSampler
    from decal.dali_pipes.core.scale_jitter import ScaleJitter
    from decal.dali_pipes.mosaic.pipeline import GEOMETRY_STREAM, MOSAIC_STREAM, MosaicSource

    dataset = CocoDataset(*write_coco_dataset(tmp_path, num_images=8, seed=2))
    sampler = RepeatFactorSampler.from_dataset(dataset, seed=0, threshold=0.5)
    source = MosaicSource(
        dataset, sampler, output_size=32, batch_size=4, seed=3, jitter=ScaleJitter(0.5, 1.5), flip_prob=0.5,
        prob=0.9, item_weights=sampler.repeat_factors,
    )  # fmt: skip
    made = []
    original = weighted_draw.WeightedDraw.__init__
    monkeypatch.setattr(weighted_draw.WeightedDraw, "__init__", lambda self, *a, **k: made.append(1) or original(self, *a, **k))
    starts = [LoaderPosition(epoch, cursor, cursor // 4) for epoch in range(2) for cursor in (0, 4)]
    plans = [source.plan(start, 4) for start in starts]
    assert made == []
    for start, plan in zip(starts, plans):
        raw = draw_mosaic_plan(
            source.batch_rng(start, GEOMETRY_STREAM), source.batch_rng(start, MOSAIC_STREAM), 4, prob=0.9, jitter=(0.5, 1.5), flip_prob=0.5,
            center_range=(0.25, 0.75), output_size=32, item_weights=sampler.repeat_factors,
        )  # fmt: skip
        assert made  # the raw weights do make a CDF per plan
        np.testing.assert_array_equal(plan.extra, raw.extra)
