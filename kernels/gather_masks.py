"""Write the output masks of a Copy-Paste batch once, into their compacted slots.

Row ``j`` of the output is ``masks[src_rows[j]]``; when ``clear[j] >= 0`` (a surviving
destination instance) the pixels under ``alpha_hard[clear[j]]`` are cleared on the way, as
:func:`~decal.kernels.occlusion_update.occlusion_update` would have (other values kept), and
when ``clear[j] < 0`` (a pasted instance) the mask is copied unchanged. The slots themselves
come from a prefix sum over the keep flags on the device (``copy_paste_fused``).

CUDA: ``gather_masks.cu``, one launch per batch (grid = pixel blocks x output rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda

_THREADS = 256


def _check(masks: Any, alpha_hard: Any, src_rows: Any, clear: Any) -> None:
    if masks.ndim != 3 or alpha_hard.ndim != 3 or masks.shape[1:] != alpha_hard.shape[1:]:
        raise ValueError(f"masks {masks.shape} and alpha_hard {alpha_hard.shape} must be (., H, W)")
    if src_rows.ndim != 1 or clear.shape != src_rows.shape:
        raise ValueError(f"src_rows {src_rows.shape} and clear {clear.shape} must be equal 1-D")


def gather_masks_numpy(masks: np.ndarray, alpha_hard: np.ndarray, src_rows: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """NumPy twin (the specification). See :func:`gather_masks`."""
    masks, alpha_hard = _cuda.as_host_mask(masks), _cuda.as_host_mask(alpha_hard)
    src_rows = np.asarray(src_rows, dtype=np.int64)
    clear = np.asarray(clear, dtype=np.int64)
    _check(masks, alpha_hard, src_rows, clear)
    out = masks[src_rows].copy()
    cleared = clear >= 0
    if cleared.any():
        covered = alpha_hard[clear[cleared]] != 0
        out[cleared] = np.where(covered, np.uint8(0), out[cleared])
    return out


def gather_masks_cupy(masks: Any, alpha_hard: Any, src_rows: Any, clear: Any) -> Any:
    """CuPy launcher: one launch for all output rows. See :func:`gather_masks`."""
    import cupy

    masks = _cuda.as_device_mask(masks)
    alpha_hard = _cuda.as_device_mask(alpha_hard)
    src_rows = _cuda.as_device(src_rows, cupy.int64)
    clear = _cuda.as_device(clear, cupy.int64)
    _check(masks, alpha_hard, src_rows, clear)
    n = int(src_rows.shape[0])
    _, h, w = masks.shape
    out = _cuda.empty((n, h, w), cupy.uint8)
    grid = _cuda.plane_grid(n, h * w, _THREADS, "output masks", masks, alpha_hard)
    if grid is None:
        return out
    hard_arg = alpha_hard if alpha_hard.size else cupy.zeros((1, h, w), cupy.uint8)
    kernel = _cuda.get_kernel("gather_masks.cu", "gather_masks_u8x4" if grid.vec4 else "gather_masks_u8")
    kernel((grid.blocks_x, n, 1), (_THREADS, 1, 1), (masks, hard_arg, src_rows, clear, np.int64(grid.words), out))
    return out


def gather_masks(masks: Any, alpha_hard: Any, src_rows: Any, clear: Any) -> Any:
    """Gather (and occlude) masks into a new array.

    Args:
        masks: (M, H, W) uint8 (NumPy or CuPy).
        alpha_hard: (B, H, W) uint8, nonzero = covered by pasted pixels.
        src_rows: (N,) int64 rows of ``masks`` (in range; the CUDA path does not check).
        clear: (N,) int64 sample whose ``alpha_hard`` clears row j, or -1 to copy it as is.

    Returns:
        (N, H, W) uint8 on the device of ``masks``.
    """
    impl = gather_masks_cupy if _cuda.is_cupy_array(masks) else gather_masks_numpy
    return impl(masks, alpha_hard, src_rows, clear)
