"""Self-training Copy-Paste's host-side draws (the NumPy specification): the labelled /
second-set split of a batch and a paste plan whose partners are labelled images only
(``dali_pipes/self_training/loader.py`` describes the family)."""

from __future__ import annotations

import math

import numpy as np

from ...kernels.paste_plan import PastePlan

__all__ = ["check_ratio", "draw_labelled_paste_plan", "split_counts"]


def split_counts(total: int, ratio: float) -> tuple[int, int]:
    """``(labelled, second)`` images of a batch of ``total``: second = floor(ratio · total)."""
    second = int(math.floor(ratio * total + 1e-9))
    return total - second, second


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float; ValueError unless it is a number in [0, 1)."""
    if not (isinstance(ratio, (int, float)) and 0.0 <= ratio < 1.0):
        raise ValueError(f"second-set ratio must be in [0, 1), got {ratio!r}")
    return float(ratio)


def draw_labelled_paste_plan(
    rng: np.random.Generator,
    instance_offsets: np.ndarray,
    pasteable: np.ndarray,
    max_num_pasted: int,
    *,
    is_labelled: np.ndarray,
    paste_into_labelled: bool = True,
) -> PastePlan:
    """A paste plan whose partners are labelled images only (host draws).

    Args:
        rng, instance_offsets, pasteable, max_num_pasted: as
            :func:`~decal.kernels.paste_plan.draw_paste_plan`.
        is_labelled: (B,) bool, which images of the batch are labelled.
        paste_into_labelled: labelled images receive instances too (from another labelled
            image); otherwise only second-set images do.

    Each receiving image draws its partner uniformly among the labelled images other than
    itself, then the pasted subset as copy-paste does (n uniform in ``[0, min(N, cap)]``,
    without replacement). An image without a possible partner pastes nothing (its partner
    is itself).
    """
    offsets = np.asarray(instance_offsets, dtype=np.int64)
    pasteable = np.asarray(pasteable, dtype=bool)
    is_labelled = np.asarray(is_labelled, dtype=bool)
    batch_size = len(offsets) - 1
    if is_labelled.shape != (batch_size,):
        raise ValueError(f"is_labelled {is_labelled.shape} must be ({batch_size},)")
    labelled = np.flatnonzero(is_labelled)
    partner = np.arange(batch_size, dtype=np.int64)
    chosen: list[np.ndarray] = []
    for b in range(batch_size):  # host metadata only
        sources = labelled[labelled != b]
        if (is_labelled[b] and not paste_into_labelled) or len(sources) == 0:
            chosen.append(np.empty(0, dtype=np.int64))
            continue
        p = int(rng.choice(sources))
        partner[b] = p
        start, stop = int(offsets[p]), int(offsets[p + 1])
        candidates = start + np.flatnonzero(pasteable[start:stop])
        n = int(rng.integers(0, min(len(candidates), max_num_pasted) + 1)) if len(candidates) else 0
        chosen.append(np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64))
    counts = np.array([len(c) for c in chosen], dtype=np.int64)
    return PastePlan(
        partner=partner,
        paste_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        paste_indices=np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, np.int64),
    )
