"""Hard paste alpha: per destination sample, the union of the masks pasted into it.

CUDA: ``paste_alpha.cu``, one launch per batch (grid = pixel blocks x samples; each thread ORs
the sample's list of pasted masks at its pixel, stopping at the first hit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda

_THREADS = 256


def _check(masks: Any, paste_offsets: Any, paste_indices: Any, num_samples: int) -> None:
    if masks.ndim != 3:
        raise ValueError(f"masks must be (M, H, W), got shape {masks.shape}")
    if paste_offsets.shape != (num_samples + 1,):
        raise ValueError(f"paste_offsets {paste_offsets.shape} must be ({num_samples + 1},)")
    if paste_indices.ndim != 1:
        raise ValueError(f"paste_indices must be 1-D, got shape {paste_indices.shape}")


def paste_alpha_numpy(
    masks: np.ndarray, paste_offsets: np.ndarray, paste_indices: np.ndarray, num_samples: int
) -> np.ndarray:
    """NumPy twin (the specification). See :func:`paste_alpha`."""
    masks = np.asarray(masks)
    paste_offsets = np.asarray(paste_offsets, dtype=np.int64)
    paste_indices = np.asarray(paste_indices, dtype=np.int64)
    _check(masks, paste_offsets, paste_indices, num_samples)
    _, h, w = masks.shape
    alpha = np.zeros((num_samples, h, w), dtype=np.uint8)
    for b in range(num_samples):  # the spec; the CUDA path has no per-sample loop
        chosen = paste_indices[paste_offsets[b] : paste_offsets[b + 1]]
        if len(chosen):
            alpha[b] = np.any(masks[chosen] != 0, axis=0)
    return alpha


def paste_alpha_cupy(
    masks: Any, paste_offsets: Any, paste_indices: Any, num_samples: int
) -> Any:
    """CuPy launcher: one kernel launch for the batch. See :func:`paste_alpha`."""
    import cupy

    masks = _cuda.as_device_mask(masks)
    paste_offsets = _cuda.as_device(paste_offsets, cupy.int64)
    paste_indices = _cuda.as_device(paste_indices, cupy.int64)
    _check(masks, paste_offsets, paste_indices, num_samples)
    _, h, w = masks.shape
    alpha = _cuda.empty((num_samples, h, w), cupy.uint8)
    grid = _cuda.plane_grid(num_samples, h * w, _THREADS, "num_samples", masks)
    if grid is None:
        return alpha
    kernel = _cuda.get_kernel("paste_alpha.cu", "paste_alpha_u8x4" if grid.vec4 else "paste_alpha_u8")
    kernel(
        (grid.blocks_x, num_samples, 1),
        (_THREADS, 1, 1),
        (masks, paste_offsets, paste_indices, np.int64(grid.words), alpha),
    )
    return alpha


def paste_alpha(masks: Any, paste_offsets: Any, paste_indices: Any, num_samples: int) -> Any:
    """Union of the masks pasted into each destination sample.

    Args:
        masks: (M, H, W) uint8, nonzero = instance: every instance of the batch (M may be 0;
            H and W are still read from the shape).
        paste_offsets: (B + 1,) int64 CSR offsets into ``paste_indices``.
        paste_indices: (P,) int64 global instance indices (rows of ``masks``), see
            :class:`~decal.kernels.paste_plan.PastePlan`; must be in range (the CUDA path
            does not check).
        num_samples: B.

    Returns:
        alpha (B, H, W) uint8 in {0, 1} on the device of ``masks``: 1 where any listed mask of
        sample b is nonzero; all zeros for a sample with an empty list.
    """
    impl = paste_alpha_cupy if _cuda.is_cupy_array(masks) else paste_alpha_numpy
    return impl(masks, paste_offsets, paste_indices, num_samples)
