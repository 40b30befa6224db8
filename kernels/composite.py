"""Copy-Paste blend: ``image = src * alpha + dst * (1 - alpha)`` per destination sample.

This is the compositing step of Copy-Paste (Ghiasi et al. 2021, "Simple Copy-Paste is a Strong
Data Augmentation Method for Instance Segmentation"), with an optionally Gaussian-blurred alpha;
mmdetection's ``CopyPaste`` uses the hard (unblurred) union mask, which is the uint8 alpha
here. CutMix, CP^2 and Mosaic reuse it with other alpha generators.

Arithmetic (both faces, float32, each product and sum rounded separately, no FMA)::

    a = alpha (uint8: 1.0 where nonzero, else 0.0)
    v = dst * (1 - a) + src * a
    out = uint8(clip(floor(v + 0.5), 0, 255))

CUDA: ``composite.cu``, one launch per batch (grid = pixel blocks x samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda

_THREADS = 256


def check_composite_inputs(dst_images: Any, src_images: Any, partner: Any, alpha: Any) -> None:
    """Check the arrays of a composite: images (B, H, W, C) both, ``partner`` (B,), ``alpha``
    (B, H, W). Raises ValueError naming the array and the shape it must have."""
    if dst_images.ndim != 4 or src_images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C): {dst_images.shape}, {src_images.shape}")
    b, h, w, c = dst_images.shape
    if src_images.shape[1:] != (h, w, c):
        raise ValueError(f"src_images {src_images.shape} do not match dst {dst_images.shape}")
    if partner.shape != (b,):
        raise ValueError(f"partner {partner.shape} must be ({b},)")
    if alpha.shape != (b, h, w):
        raise ValueError(f"alpha {alpha.shape} must be ({b}, {h}, {w})")


def composite_numpy(
    dst_images: np.ndarray, src_images: np.ndarray, partner: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """NumPy twin (the specification). See :func:`composite`."""
    dst_images = np.asarray(dst_images, dtype=np.uint8)
    src_images = np.asarray(src_images, dtype=np.uint8)
    partner = np.asarray(partner, dtype=np.int64)
    alpha = np.asarray(alpha)
    check_composite_inputs(dst_images, src_images, partner, alpha)
    a = (alpha != 0).astype(np.float32) if alpha.dtype == np.uint8 else alpha.astype(np.float32)
    a = a[..., None]
    keep = np.float32(1.0) - a
    v = dst_images.astype(np.float32) * keep + src_images[partner].astype(np.float32) * a
    v = np.floor(v + np.float32(0.5))
    return np.clip(v, np.float32(0.0), np.float32(255.0)).astype(np.uint8)


def composite_cupy(dst_images: Any, src_images: Any, partner: Any, alpha: Any) -> Any:
    """CuPy launcher: one kernel launch for the batch. See :func:`composite`."""
    import cupy

    dst_images = _cuda.as_device(dst_images, cupy.uint8)
    src_images = _cuda.as_device(src_images, cupy.uint8)
    partner = _cuda.as_device(partner, cupy.int64)
    alpha = cupy.asarray(alpha)
    if alpha.dtype != cupy.uint8:
        alpha = alpha.astype(cupy.float32, copy=False)
    alpha = cupy.ascontiguousarray(alpha)
    check_composite_inputs(dst_images, src_images, partner, alpha)
    b, h, w, c = dst_images.shape
    out = _cuda.empty((b, h, w, c), cupy.uint8)
    plane = h * w
    if b == 0 or plane == 0 or c == 0:
        return out
    _cuda.check_grid_yz(b, "batch size")
    blocks_x = _cuda.row_blocks(plane, b, _THREADS)
    name = "composite_u8" if alpha.dtype == cupy.uint8 else "composite_f32"
    kernel = _cuda.get_kernel("composite.cu", name)
    kernel(
        (blocks_x, b, 1),
        (_THREADS, 1, 1),
        (dst_images, src_images, partner, alpha, out, np.int64(plane), np.int32(c)),
    )
    return out


def composite(dst_images: Any, src_images: Any, partner: Any, alpha: Any) -> Any:
    """Blend each destination image with its partner source image through ``alpha``.

    Args:
        dst_images: (B, H, W, C) uint8 destination images (NumPy or CuPy).
        src_images: (B2, H, W, C) uint8 source images, usually the same array as
            ``dst_images``.
        partner: (B,) int64, row of ``src_images`` pasted into each destination (must be in
            range; the CUDA path does not check).
        alpha: (B, H, W) float32 in [0, 1] (soft) or uint8 in {0, 1} (hard; nonzero = 1).

    Returns:
        (B, H, W, C) uint8, new array on the device of ``dst_images``:
        ``floor(dst * (1 - a) + src[partner] * a + 0.5)`` clipped to [0, 255], float32.
    """
    impl = composite_cupy if _cuda.is_cupy_array(dst_images) else composite_numpy
    return impl(dst_images, src_images, partner, alpha)
