"""Gaussian blur of the paste alpha (soft Copy-Paste edges), separable, clamp-to-edge.

Both faces compute, per pass (rows first, then columns), for every output pixel
``acc = 0; acc = acc + w[k] * in[clamp(i + k - r)]`` for k = 0..2r in float32 with every
product and sum rounded separately, so the CUDA path (``gaussian_blur.cu``, two launches per
batch, no FMA) and the NumPy twin agree to the last bit in practice (tests allow 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _cuda

_ROW_THREADS = 256
_COL_TILE = 32  # gaussian_blur.cu COL_TILE_W and COL_TILE_H
_COL_BLOCK = (32, 8, 1)
_MAX_SHARED = 48 * 1024


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian weights.

    Args:
        sigma: standard deviation in pixels.

    Returns:
        (2r + 1,) float32 with r = ceil(3 sigma): ``exp(-x^2 / (2 sigma^2))`` for
        x = -r..r, computed in float64, divided by its sum, cast to float32. ``[1.0]`` when
        ``sigma <= 0``.
    """
    if not sigma > 0:
        return np.ones(1, dtype=np.float32)
    r = int(math.ceil(3.0 * float(sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-(x * x) / (2.0 * float(sigma) ** 2))
    return (w / w.sum()).astype(np.float32)


def _check(alpha: Any) -> None:
    if alpha.ndim != 3:
        raise ValueError(f"alpha must be (B, H, W), got shape {alpha.shape}")


def gaussian_blur_numpy(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """NumPy twin (the specification). See :func:`gaussian_blur`."""
    out = np.asarray(alpha).astype(np.float32)  # always a copy
    _check(out)
    if not sigma > 0 or out.size == 0:
        return out
    w = gaussian_kernel_1d(sigma)
    r = (len(w) - 1) // 2
    for axis in (2, 1):  # rows (along W), then columns (along H)
        n = out.shape[axis]
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="edge")  # clamp-to-edge
        acc = np.zeros_like(out)
        for k in range(2 * r + 1):
            window = padded[:, :, k : k + n] if axis == 2 else padded[:, k : k + n, :]
            acc = acc + w[k] * window
        out = acc
    return out


def gaussian_blur_cupy(alpha: Any, sigma: float) -> Any:
    """CuPy launcher: two launches (rows, columns) for the batch. See :func:`gaussian_blur`."""
    import cupy

    alpha = cupy.asarray(alpha)
    _check(alpha)
    if alpha.dtype not in (cupy.uint8, cupy.float32):
        alpha = alpha.astype(cupy.float32)
    alpha = cupy.ascontiguousarray(alpha)
    if not sigma > 0 or alpha.size == 0:
        return alpha.astype(cupy.float32, copy=True)
    b, h, w = alpha.shape
    _cuda.check_grid_yz(b, "batch size")
    weights = cupy.asarray(gaussian_kernel_1d(sigma))
    r = (weights.size - 1) // 2
    suffix = "u8" if alpha.dtype == cupy.uint8 else "f32"
    tmp = _cuda.empty((b, h, w), cupy.float32)
    out = _cuda.empty((b, h, w), cupy.float32)
    args = (weights, np.int32(r), np.int32(h), np.int32(w))

    # rows
    threads = min(_ROW_THREADS, _cuda.ceil_div(w, 32) * 32)
    shared = 4 * ((2 * r + 1) + threads + 2 * r)
    if shared <= _MAX_SHARED and h <= _cuda.MAX_GRID_YZ:
        kernel = _cuda.get_kernel("gaussian_blur.cu", f"blur_rows_{suffix}")
        grid = (_cuda.ceil_div(w, threads), h, b)
        kernel(grid, (threads, 1, 1), (alpha, tmp, *args), shared_mem=shared)
    else:
        _direct(f"blur_direct_{suffix}", alpha, tmp, args, vertical=0)

    # columns
    shared = 4 * ((2 * r + 1) + (_COL_TILE + 2 * r) * _COL_TILE)
    if shared <= _MAX_SHARED and _cuda.ceil_div(h, _COL_TILE) <= _cuda.MAX_GRID_YZ:
        kernel = _cuda.get_kernel("gaussian_blur.cu", "blur_cols_f32")
        grid = (_cuda.ceil_div(w, _COL_TILE), _cuda.ceil_div(h, _COL_TILE), b)
        kernel(grid, _COL_BLOCK, (tmp, out, *args), shared_mem=shared)
    else:
        _direct("blur_direct_f32", tmp, out, args, vertical=1)
    return out


def _direct(name: str, src: Any, dst: Any, args: tuple[Any, ...], vertical: int) -> None:
    """Untiled pass for a sigma too large for the shared-memory tile."""
    b, h, w = src.shape
    blocks_x = _cuda.row_blocks(h * w, b, 256)
    kernel = _cuda.get_kernel("gaussian_blur.cu", name)
    kernel((blocks_x, b, 1), (256, 1, 1), (src, dst, *args, np.int32(vertical)))


def gaussian_blur(alpha: Any, sigma: float) -> Any:
    """Blur each (H, W) plane of a batch with a Gaussian of standard deviation ``sigma``.

    Args:
        alpha: (B, H, W) uint8 in {0, 1} or float32 (NumPy or CuPy).
        sigma: standard deviation in pixels; ``sigma <= 0`` returns a float32 copy.

    Returns:
        (B, H, W) float32 on the device of ``alpha``; separable (rows, then columns) with
        weights :func:`gaussian_kernel_1d` and clamp-to-edge (replicate) borders. Values stay
        within the input's range up to float32 rounding: the float32 weights sum to 1 only
        within a few ulps, so a {0, 1} alpha gives values in [0, 1 + 1e-6] (``composite``
        clips its result, so this never shows in an image).
    """
    impl = gaussian_blur_cupy if _cuda.is_cupy_array(alpha) else gaussian_blur_numpy
    return impl(alpha, sigma)
