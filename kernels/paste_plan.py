"""Host-side random draws for one batch of Copy-Paste: partners and pasted subsets.

This is the only random part of Copy-Paste. It runs on the host over per-instance
metadata (a few hundred integers per batch), never over pixels, so that the CPU and the GPU
paths make exactly the same draws under the same seed.

Semantics follow mmdetection's ``CopyPaste`` (``mmdet/datasets/transforms/transforms.py``,
``_get_selected_inds``): the number pasted is uniform over ``[0, min(N, max_num_pasted)]``
and the subset is drawn without replacement. mmdetection draws
``randint(0, min(N + 1, max_num_pasted))``, which excludes ``max_num_pasted`` itself;
we include it, as the decal specification states. The two agree whenever
``N < max_num_pasted`` (the default cap is 100). mmdetection draws its partner from the
whole dataset; decal draws it from the batch, as a random cyclic shift of a random order,
so no image is its own partner when the batch holds two or more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PastePlan:
    """What each destination image of a batch pastes.

    Attributes:
        partner: (B,) int64, the batch index of each destination's source image.
        paste_offsets: (B + 1,) int64, CSR offsets into ``paste_indices``.
        paste_indices: (P,) int64, global instance indices (rows of the batch's
            (M, H, W) mask array) pasted into each destination, ascending per destination.
    """

    partner: np.ndarray
    paste_offsets: np.ndarray
    paste_indices: np.ndarray

    @property
    def num_pasted(self) -> np.ndarray:
        """(B,) int64: how many instances each destination receives."""
        return np.diff(self.paste_offsets)


def draw_partners(rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """A random partner per sample: a cyclic shift of a random order, (B,) int64.

    With ``batch_size >= 2`` no sample is its own partner; with 1 the partner is itself
    (and :func:`draw_paste_plan` pastes nothing).
    """
    order = rng.permutation(batch_size)
    partner = np.empty(batch_size, dtype=np.int64)
    partner[order] = np.roll(order, -1)
    return partner


def draw_paste_plan(
    rng: np.random.Generator,
    instance_offsets: np.ndarray,
    pasteable: np.ndarray,
    max_num_pasted: int,
) -> PastePlan:
    """Draw partners and pasted subsets for a batch.

    Args:
        rng: the batch's generator (seeded per (seed, epoch, shard, batch)).
        instance_offsets: (B + 1,) int64 CSR offsets of each sample's instances.
        pasteable: (M,) bool, True for instances that may be pasted (not crowd, and
            non-empty after the geometric transforms).
        max_num_pasted: the cap on instances pasted into one image (mmdetection: 100).

    Returns:
        The :class:`PastePlan`. A sample whose partner is itself pastes nothing.
    """
    instance_offsets = np.asarray(instance_offsets, dtype=np.int64)
    pasteable = np.asarray(pasteable, dtype=bool)
    batch_size = len(instance_offsets) - 1
    partner = draw_partners(rng, batch_size)
    chosen: list[np.ndarray] = []
    for b in range(batch_size):  # host metadata only: B small draws, no pixels
        p = int(partner[b])
        start, stop = int(instance_offsets[p]), int(instance_offsets[p + 1])
        candidates = start + np.flatnonzero(pasteable[start:stop])
        if p == b or len(candidates) == 0:
            chosen.append(np.empty(0, dtype=np.int64))
            continue
        n = int(rng.integers(0, min(len(candidates), max_num_pasted) + 1))
        chosen.append(np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64))
    counts = np.array([len(c) for c in chosen], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return PastePlan(partner=partner, paste_offsets=offsets, paste_indices=indices.astype(np.int64))
