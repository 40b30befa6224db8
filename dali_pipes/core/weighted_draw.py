"""Weighted draws of dataset indices with the cumulative distribution computed once.

``Generator.choice(n, size, p=p)`` (``replace=True``) validates ``p``, cumulates it and
normalises the cumulative sum on every call: O(n) work per call, however few indices are
drawn. :class:`WeightedDraw` does that work once (when the weights are fixed: mosaic's
extra tiles are weighed by the sampler's repeat factors r(i), which do not change between
epochs) and then draws exactly as NumPy's ``Generator.choice`` does with ``p`` (NumPy 2.x,
``numpy/random/_generator.pyx``)::

    cdf = p.cumsum(); cdf /= cdf[-1]
    uniform = rng.random(shape)                      # one double per index
    idx = cdf.searchsorted(uniform, side="right")    # int64

so its indices and the generator's state afterwards are bit-identical to
``rng.choice(len(weights), size, p=weights / weights.sum())``
(``tests/test_weighted_draw.py``). A draw costs O(size · log n).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["WeightedDraw"]


class WeightedDraw:
    """Indices in ``[0, n)`` drawn with probability proportional to ``weights``.

    Args:
        weights: (n,) non-negative finite weights with a positive finite sum (any real
            dtype; converted to float64).
        field: the name the caller knows the weights by, for error messages.

    Attributes:
        probabilities: (n,) float64, ``weights / weights.sum()`` (the ``p`` of ``choice``).
        cdf: (n,) float64, ``probabilities.cumsum()`` divided by its last entry.

    Raises:
        ValueError: naming ``field``, for weights that are not 1-D, empty, negative, NaN,
            infinite, or sum to zero (all that ``choice`` would reject on every call, here
            once).
    """

    def __init__(self, weights: np.ndarray, *, field: str = "weights") -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"{field} must be a non-empty 1-D array, got shape {w.shape}")
        if not np.isfinite(w).all():
            bad = int(np.argmin(np.isfinite(w)))
            raise ValueError(f"{field} must be finite, got {w[bad]} at index {bad}")
        if w.min() < 0:
            bad = int(np.argmax(w < 0))
            raise ValueError(f"{field} must be >= 0, got {w[bad]} at index {bad}")
        with np.errstate(over="ignore"):
            total = w.sum()
        if not (math.isfinite(total) and total > 0):
            raise ValueError(f"{field} must have a positive finite sum, got {total}")
        p = w / total
        # choice's own check (its sum is Kahan's, this one pairwise: both within a few ulps):
        # p sums to 1 within sqrt(float64 eps), which w / w.sum() does unless n is huge
        if abs(float(p.sum()) - 1.0) > math.sqrt(np.finfo(np.float64).eps):
            raise ValueError(f"{field}: the normalised weights do not sum to 1 (n = {w.size})")
        cdf = p.cumsum()
        cdf /= cdf[-1]
        self.probabilities = p
        self.cdf = cdf

    def __len__(self) -> int:
        """n, the number of items."""
        return len(self.cdf)

    def draw(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """``size`` indices, int64 of shape ``size``; consumes ``rng`` as
        ``rng.choice(n, size, p=self.probabilities)`` does (one double per index)."""
        return np.asarray(self.cdf.searchsorted(rng.random(size), side="right"), dtype=np.int64)

    def draw_one(self, rng: np.random.Generator) -> int:
        """One index, as ``int(rng.choice(n, p=self.probabilities))``."""
        return int(self.cdf.searchsorted(rng.random(), side="right"))
