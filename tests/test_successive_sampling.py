"""Weighted draws without replacement (kernels/successive_sampling.py): the law of NumPy's
``Generator.choice(replace=False, p=...)`` (successive sampling), checked against exact
probabilities, and the shape of what is returned."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from decal.kernels.successive_sampling import draw_without_replacement


def _successive_probability(weights: np.ndarray, ordered: tuple[int, ...]) -> float:
    """P(the draws are ``ordered``, in this order): each pick proportional to what is left."""
    left, p = float(weights.sum()), 1.0
    for i in ordered:
        p *= weights[i] / left
        left -= weights[i]
    return p


@pytest.mark.parametrize(
    "weights, n",
    [
        (np.array([1.0, 2.0, 3.0, 4.0]), 2),  # nearly always step 1 (distinct i.i.d. draws)
        (np.array([0.05, 1.0, 1.0, 30.0, 0.5]), 2),
        (np.array([100.0, 1.0, 1.0, 1.0, 1.0]), 4),  # mostly finished by the race (step 2)
        (np.array([1.0, 2.0, 3.0]), 3),  # whole permutations
    ],
)
def test_ordered_draws_follow_successive_sampling(weights: np.ndarray, n: int) -> None:
    rows = 200_000
    draws = draw_without_replacement(np.random.default_rng(0), weights, np.full(rows, n)).reshape(rows, n)
    assert all(len(set(row)) == n for row in draws[:1000].tolist())
    tuples, seen = np.unique(draws, axis=0, return_counts=True)
    observed = {tuple(t): c for t, c in zip(tuples.tolist(), seen.tolist())}
    for ordered in itertools.permutations(range(len(weights)), n):
        p = _successive_probability(weights, ordered)
        sigma = np.sqrt(rows * p * (1 - p))
        got = observed.pop(ordered, 0)
        assert abs(got - rows * p) <= 5 * sigma + 1, (ordered, got, rows * p)
    assert not observed  # nothing but ordered tuples of distinct items


def test_matches_numpy_choice_in_law() -> None:
    """The frequency of each item among the first three draws, against ``choice``'s own."""
    weights = np.array([0.2, 5.0, 1.0, 1.0, 0.7, 3.0])
    rows = 60_000
    ours = draw_without_replacement(np.random.default_rng(1), weights, np.full(rows, 3))
    rng = np.random.default_rng(2)
    theirs = np.concatenate([rng.choice(6, size=3, replace=False, p=weights / weights.sum()) for _ in range(rows)])
    a, b = np.bincount(ours, minlength=6) / rows, np.bincount(theirs, minlength=6) / rows
    np.testing.assert_allclose(a, b, atol=0.02)


def test_counts_per_row_distinct_and_in_range() -> None:
    rng = np.random.default_rng(3)
    weights = rng.random(50) + 1e-3
    counts = np.array([0, 1, 50, 7, 0, 49, 3])
    out = draw_without_replacement(rng, weights, counts)
    assert out.dtype == np.int64 and len(out) == counts.sum()
    for row in np.split(out, np.cumsum(counts)[:-1]):
        assert len(set(row.tolist())) == len(row) and np.all((row >= 0) & (row < 50))
    full = np.split(out, np.cumsum(counts)[:-1])[2]
    assert sorted(full.tolist()) == list(range(50))  # every item when a row takes them all


def test_empty_and_deterministic_and_refused() -> None:
    w = np.array([1.0, 2.0, 3.0])
    assert len(draw_without_replacement(np.random.default_rng(0), w, np.zeros(4, np.int64))) == 0
    assert len(draw_without_replacement(np.random.default_rng(0), w, np.zeros(0, np.int64))) == 0
    a = draw_without_replacement(np.random.default_rng(5), w, np.array([2, 3, 1]))
    b = draw_without_replacement(np.random.default_rng(5), w, np.array([2, 3, 1]))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="counts must lie in"):
        draw_without_replacement(np.random.default_rng(0), w, np.array([4]))
    with pytest.raises(ValueError, match="counts must lie in"):
        draw_without_replacement(np.random.default_rng(0), w, np.array([1, -1]))
