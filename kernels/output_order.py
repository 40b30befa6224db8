"""Where each instance lands in a Copy-Paste batch's output: per image, its surviving
destination instances in input order, then the instances pasted into it (mmdetection's
``CopyPaste`` order: ``dst`` instances first, then ``src``).

Host-side index arithmetic shared by :func:`~decal.kernels.copy_paste.copy_paste_batch` and
:func:`~decal.kernels.instance_bank.bank_copy_paste_batch`; no kernel, no device array.
"""

from __future__ import annotations

import numpy as np

__all__ = ["output_order", "place_rows", "rank_within_groups"]


def rank_within_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting at each new value of a sorted (n,) integer array; (n,) int64."""
    n = len(sorted_groups)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))


def output_order(
    kept_sample: np.ndarray, pasted_sample: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The output rows of the kept and the pasted instances of a batch.

    Args:
        kept_sample: (K,) int64, sorted: the image of each surviving destination instance,
            in input order.
        pasted_sample: (P,) int64, sorted: the image of each pasted instance, in paste order.
        batch_size: B.

    Returns:
        ``(offsets, kept_rows, pasted_rows)``: (B + 1,) int64 output instance offsets (image b
        owns rows ``offsets[b]:offsets[b + 1]``), and the (K,) / (P,) int64 output row of each
        kept / pasted instance.
    """
    kept_sample = np.asarray(kept_sample, dtype=np.int64)
    pasted_sample = np.asarray(pasted_sample, dtype=np.int64)
    kept_per_image = np.bincount(kept_sample, minlength=batch_size)
    pasted_per_image = np.bincount(pasted_sample, minlength=batch_size)
    offsets = np.concatenate([[0], np.cumsum(kept_per_image + pasted_per_image)]).astype(np.int64)
    kept_rows = offsets[:-1][kept_sample] + rank_within_groups(kept_sample)
    pasted_rows = offsets[:-1][pasted_sample] + kept_per_image[pasted_sample] + rank_within_groups(pasted_sample)
    return offsets, kept_rows, pasted_rows


def place_rows(
    total: int, dtype: np.dtype | type, kept_rows: np.ndarray, kept_values: np.ndarray,
    pasted_rows: np.ndarray, pasted_values: np.ndarray | bool,
) -> np.ndarray:
    """A host (total, ...) array of ``dtype`` holding ``kept_values`` at ``kept_rows`` and
    ``pasted_values`` (an array, or one value for every pasted row) at ``pasted_rows``, the
    rows :func:`output_order` gives (together they cover ``0 .. total - 1`` once)."""
    kept_values = np.asarray(kept_values, dtype=dtype)
    out = np.empty((total, *kept_values.shape[1:]), dtype=dtype)
    out[kept_rows] = kept_values
    out[pasted_rows] = pasted_values
    return out
