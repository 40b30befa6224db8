"""Instances that cannot show in a sample's output window, found before DALI resizes them.

The copy-paste pipeline resizes every mask channel to the jittered size and then crops the
S×S window; with LSJ's upscaling (r up to 2) most of the resized pixels fall outside the window.
An instance none of whose pixels lies in the source rows and columns the window samples is empty
after resize → crop → flip, and the copy-paste step drops empty instances from its output and
never pastes them (:func:`~decal.kernels.copy_paste.copy_paste_batch`; the paste draws
choose among non-empty instances only, so dropping an empty one earlier changes no draw). So it
can be dropped in the source, saving its resize, crop, flip and copy-paste work, and the batch
comes out the same, bit for bit (``tests/test_window_prune.py``).

The window's source region comes from :mod:`~decal.kernels.mask_geometry` (DALI's own
nearest-neighbour geometry), widened by one pixel on every side as a margin: an instance is
dropped only when it has no pixel in the widened region.
"""

from __future__ import annotations

import numpy as np

from ...kernels.mask_geometry import sample_geometry, source_columns, source_rows

__all__ = ["window_region", "instances_in_window"]

#: source pixels added around the sampled region before an instance is judged outside it
MARGIN = 1


def window_region(
    height: int, width: int, scale: float, crop_x: float, crop_y: float, flip: int, output_size: int
) -> tuple[slice, slice] | None:
    """(rows, columns) of the source image that the output window samples, widened by
    :data:`MARGIN`; None when the window shows no source pixel (all padding)."""
    geometry = sample_geometry(height, width, scale, crop_x, crop_y, flip, output_size)
    rows, cols = source_rows(geometry), source_columns(geometry)
    rows, cols = rows[rows >= 0], cols[cols >= 0]
    if not len(rows) or not len(cols):
        return None
    return (
        slice(max(0, int(rows.min()) - MARGIN), min(height, int(rows.max()) + 1 + MARGIN)),
        slice(max(0, int(cols.min()) - MARGIN), min(width, int(cols.max()) + 1 + MARGIN)),
    )


def instances_in_window(
    masks: np.ndarray, scale: float, crop_x: float, crop_y: float, flip: int, output_size: int
) -> np.ndarray:
    """(N,) bool: which of the H×W×N uint8 ``masks`` (source size, one channel per instance)
    have a pixel in the output window's source region (:func:`window_region`); all True when
    that region is the whole image (an instance with no pixel at all is then kept: the step
    drops it, as before)."""
    height, width, count = masks.shape
    region = window_region(height, width, scale, crop_x, crop_y, flip, output_size)
    if region is None:
        return np.zeros(count, dtype=bool)
    if region == (slice(0, height), slice(0, width)):
        return np.ones(count, dtype=bool)  # the window sees the whole image: nothing to drop
    # OR over rows, then over columns: contiguous inner loops (a nonzero byte survives an OR)
    return np.bitwise_or.reduce(np.bitwise_or.reduce(masks[region[0], region[1], :], axis=0), axis=0) != 0
