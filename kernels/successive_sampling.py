"""Weighted draws without replacement for a whole batch at once.

Law: successive sampling. Each destination draws its items one after another, each with
probability proportional to the weight of what is left. This is the law of NumPy's
``Generator.choice(L, size=n, replace=False, p=w / w.sum())``, which keeps the first occurrences
of an i.i.d. weighted sequence. The draws differ from ``choice``'s for a given generator, but
their distribution is the same.

Method, for the whole batch in a few array operations (no ``choice`` call per row):

1. Each row draws ``2k + 2`` items i.i.d. from the weights' CDF (``k`` the largest count) and
   keeps the first ``n`` distinct ones in order of first occurrence. That is successive
   sampling by the definition above.
2. A row that saw fewer than ``n`` distinct items (weights concentrated on a few) gets the rest
   from the exponential race over the items it has not seen. Each unseen item gets the key
   ``E_i / w_i`` with ``E_i ~ Exp(1)`` i.i.d., and the smallest keys, in increasing order, are
   the next draws. The smallest of independent exponentials of rates ``w`` is at ``i`` with
   probability ``w_i / Σ w``, and memorylessness repeats that over what is left. The next new
   item of an i.i.d. sequence has that same law over the unseen items, so the continuation is
   exact.

``tests/test_successive_sampling.py`` checks the law against exact probabilities, through both
steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw_without_replacement"]


def draw_without_replacement(rng: np.random.Generator, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row ``b``, ``counts[b]`` distinct indices into ``weights``, in draw order.

    Args:
        rng: the generator every draw comes from.
        weights: (L,) float64, each finite and > 0.
        counts: (B,) int64, each in ``[0, L]``.

    Returns:
        (counts.sum(),) int64: row 0's draws, then row 1's, ...
    """
    weights = np.asarray(weights, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    k = int(counts.max()) if len(counts) else 0
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k > len(weights) or counts.min() < 0:
        raise ValueError(f"counts must lie in [0, {len(weights)}], got {counts.min()}..{k}")
    rows = len(counts)
    cdf = np.cumsum(weights)
    seq = np.searchsorted(cdf, rng.random((rows, 2 * k + 2)) * cdf[-1], side="right")
    np.minimum(seq, len(weights) - 1, out=seq)  # u · total rounding onto the last edge
    first = _first_occurrences(seq)
    rank = np.cumsum(first, axis=1)
    take = first & (rank <= counts[:, None])
    out = np.full((rows, k), -1, dtype=np.int64)
    r, c = np.nonzero(take)
    out[r, rank[r, c] - 1] = seq[r, c]
    seen = rank[:, -1]
    short = np.flatnonzero(seen < counts)
    if len(short):
        out[short] = _race_after(rng, weights, seq[short], first[short], seen[short], counts[short], out[short])
    return out[np.arange(k) < counts[:, None]]


def _first_occurrences(seq: np.ndarray) -> np.ndarray:
    """(R, M) bool: where each row of ``seq`` (R, M) holds a value for the first time."""
    order = np.argsort(seq, axis=1, kind="stable")
    ordered = np.take_along_axis(seq, order, 1)
    first_ordered = np.ones(seq.shape, dtype=bool)
    first_ordered[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(first_ordered)
    np.put_along_axis(first, order, first_ordered, 1)
    return first


def _race_after(
    rng: np.random.Generator,
    weights: np.ndarray,
    seq: np.ndarray,
    first: np.ndarray,
    seen: np.ndarray,
    counts: np.ndarray,
    out: np.ndarray,
) -> np.ndarray:
    """Rows that saw ``seen`` < ``counts`` distinct items: their draws ``out`` (S, k), a copy
    the caller made, completed in place at columns ``seen .. counts - 1`` by the exponential
    race over the items not seen, and returned."""
    keys = rng.standard_exponential((len(seq), len(weights))) / weights
    r, c = np.nonzero(first)
    keys[r, seq[r, c]] = np.inf
    need = counts - seen
    kk = int(need.max())
    if kk < len(weights):
        smallest = np.argpartition(keys, kk - 1, axis=1)[:, :kk]
    else:
        smallest = np.broadcast_to(np.arange(kk, dtype=np.int64), keys.shape)
    ranked = np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, 1), axis=1), 1)
    r, j = np.nonzero(np.arange(kk) < need[:, None])
    out[r, seen[r] + j] = ranked[r, j]
    return out
