"""Index samplers: uniform shuffling, repeat-factor sampling, and sharding.

Every sampler is a pure function of ``(seed, epoch)``: ``epoch_indices(epoch)`` draws from
``np.random.default_rng([seed, epoch])`` only, so any process (a data-parallel rank, a
resumed run, a remote server) reproduces the same order without shared state. Resuming in
the middle of an epoch is ``epoch_indices(epoch)[position:]``.

Sharding (:func:`shard_indices`) is applied to the epoch's index list after sampling, so
all ranks must use the same seed.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Collection, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..coco.reader import CocoDataset

__all__ = ["UniformSampler", "RepeatFactorSampler", "shard_indices"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, _check_int("epoch", epoch, 0)])


class UniformSampler:
    """Every item once per epoch, shuffled (or in order with ``shuffle=False``).

    Args:
        num_items: dataset length (>= 0).
        seed: non-negative integer seed.
        shuffle: permute the indices each epoch.
    """

    def __init__(self, num_items: int, *, seed: int, shuffle: bool = True) -> None:
        self.num_items = _check_int("num_items", num_items, 0)
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)

    def __len__(self) -> int:
        return self.num_items

    def expected_epoch_length(self) -> float:
        """Number of indices per epoch (exactly ``num_items``)."""
        return float(self.num_items)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The indices of epoch ``epoch`` (>= 0): 1-D int64, a permutation of
        ``range(num_items)`` drawn from ``np.random.default_rng([seed, epoch])``."""
        rng = _rng(self.seed, epoch)
        if not self.shuffle:
            return np.arange(self.num_items, dtype=np.int64)
        return rng.permutation(self.num_items).astype(np.int64, copy=False)


class RepeatFactorSampler:
    """Repeat factor sampling (RFS) for long-tailed data such as LVIS.

    Semantics of detectron2's ``RepeatFactorTrainingSampler``
    (``detectron2/data/samplers/distributed_sampler.py``) after Gupta et al., *LVIS: A
    Dataset for Large Vocabulary Instance Segmentation*, CVPR 2019, Sec. 4:

    * ``f(c)`` = fraction of the images that contain category ``c`` (``num_images`` counts
      every image passed in, including ones without categories);
    * category repeat factor ``r(c) = max(1, sqrt(t / f(c)))``;
    * image repeat factor ``r(i) = max_{c in i} r(c)``, ``1.0`` for an image with no
      categories;
    * per epoch, stochastic rounding: image ``i`` appears ``floor(r(i)) + Bernoulli(frac(r(i)))``
      times, then the repeated list is shuffled.

    Args:
        image_categories: for each image, the (non-crowd) category ids it contains.
        seed: non-negative integer seed.
        threshold: ``t``; 0.001 is the LVIS default.

    Attributes:
        repeat_factors: ``(num_images,)`` float64, ``r(i)``.
        category_repeat_factors: category id -> ``r(c)``.
    """

    def __init__(
        self,
        image_categories: Sequence[Collection[int]],
        *,
        seed: int,
        threshold: float = 0.001,
    ) -> None:
        self.seed = _check_int("seed", seed, 0)
        if not (isinstance(threshold, numbers.Real) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive finite number, got {threshold!r}")
        self.threshold = float(threshold)
        num_images = len(image_categories)
        counts: dict[int, int] = {}
        for cats in image_categories:
            for c in set(cats):
                counts[c] = counts.get(c, 0) + 1
        self.category_repeat_factors: dict[int, float] = {
            c: max(1.0, math.sqrt(self.threshold / (n / num_images))) for c, n in counts.items()
        }
        self.repeat_factors = np.array(
            [
                max((self.category_repeat_factors[c] for c in set(cats)), default=1.0)
                for cats in image_categories
            ],
            dtype=np.float64,
        )
        self._int_part = np.floor(self.repeat_factors)
        self._frac_part = self.repeat_factors - self._int_part

    @classmethod
    def from_dataset(cls, dataset: "CocoDataset", **kw: Any) -> "RepeatFactorSampler":
        """RFS over ``dataset.records`` using each record's non-crowd ``category_ids``
        (``dataset.image_category_ids()``, read from its index).
        Keyword arguments (``seed``, ``threshold``) go to the constructor."""
        return cls(dataset.image_category_ids(), **kw)

    def __len__(self) -> int:
        """Number of images (not the epoch length, which varies; see
        :meth:`expected_epoch_length`)."""
        return len(self.repeat_factors)

    def expected_epoch_length(self) -> float:
        """``sum(repeat_factors)``: the mean number of indices per epoch."""
        return float(self.repeat_factors.sum())

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The indices of epoch ``epoch`` (>= 0): 1-D int64, image ``i`` repeated
        ``floor(r_i) + Bernoulli(frac(r_i))`` times, shuffled; drawn from
        ``np.random.default_rng([seed, epoch])``."""
        rng = _rng(self.seed, epoch)
        n = len(self.repeat_factors)
        reps = self._int_part + (rng.random(n) < self._frac_part)
        indices = np.repeat(np.arange(n, dtype=np.int64), reps.astype(np.int64))
        return rng.permutation(indices)


def shard_indices(indices: np.ndarray, shard_id: int, num_shards: int) -> np.ndarray:
    """The part of an epoch's ``indices`` that shard ``shard_id`` of ``num_shards`` reads.

    ``torch.utils.data.DistributedSampler`` semantics with ``drop_last=False``: the list is
    padded by wrapping around from its start (repeatedly if needed) to a length divisible
    by ``num_shards``, then shard ``k`` takes ``padded[k::num_shards]``. Every shard gets
    ``ceil(len(indices) / num_shards)`` indices; an empty input gives empty shards.

    Args:
        indices: 1-D integer array (e.g. ``sampler.epoch_indices(epoch)``).
        shard_id: ``0 <= shard_id < num_shards``.
        num_shards: ``>= 1``.

    Returns:
        1-D array of the same dtype.

    Raises:
        ValueError: naming the offending argument.
    """
    num_shards = _check_int("num_shards", num_shards, 1)
    shard_id = _check_int("shard_id", shard_id, 0)
    if shard_id >= num_shards:
        raise ValueError(f"shard_id must be < num_shards ({num_shards}), got {shard_id}")
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {indices.shape}")
    if indices.size and indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    n = len(indices)
    total = -(-n // num_shards) * num_shards
    padded = np.resize(indices, total) if total != n else indices  # np.resize wraps cyclically
    return padded[shard_id::num_shards].copy()
