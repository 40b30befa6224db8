"""The fused Copy-Paste update: composite the images and measure what is left of every
destination instance, in one pass over each sample's pixels.

Equivalent to :func:`~decal.kernels.composite.composite` followed by the areas and boxes of
:func:`~decal.kernels.occlusion_update.occlusion_update` (the twin is exactly that
composition), except that the occluded masks are *not* written: only the instances that survive
the thresholds are written, once, into their final slot by
:func:`~decal.kernels.gather_masks.gather_masks`. That saves one full write of every
destination mask and one full read back (see ``copy_paste_fused`` for the byte count).

CUDA: ``composite_occlusion.cu``, one launch per batch, grid = (sample, band of rows): each
block blends its band and then reduces each of the sample's instances over the band, so the
band's alpha is fetched from DRAM once, not once per instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda
from .composite import check_composite_inputs, composite_numpy
from .occlusion_update import occlusion_update_numpy

_BLOCK = (32, 8, 1)


def _check(dst_images: Any, src_images: Any, partner: Any, alpha: Any, alpha_hard: Any, masks: Any, offsets: Any) -> None:
    check_composite_inputs(dst_images, src_images, partner, alpha)
    b, h, w, _ = dst_images.shape
    if alpha_hard.shape != (b, h, w):
        raise ValueError(f"alpha_hard {alpha_hard.shape} must be ({b}, {h}, {w})")
    if masks.ndim != 3 or masks.shape[1:] != (h, w):
        raise ValueError(f"masks {masks.shape} must be (M, {h}, {w})")
    if offsets.shape != (b + 1,):
        raise ValueError(f"instance_offsets {offsets.shape} must be ({b + 1},)")


def composite_occlusion_numpy(
    dst_images: np.ndarray,
    src_images: np.ndarray,
    partner: np.ndarray,
    alpha: np.ndarray,
    alpha_hard: np.ndarray,
    masks: np.ndarray,
    instance_offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin (the specification): ``composite`` then ``occlusion_update``'s areas/boxes."""
    dst_images, src_images = np.asarray(dst_images), np.asarray(src_images)
    partner, alpha, alpha_hard = np.asarray(partner), np.asarray(alpha), np.asarray(alpha_hard)
    masks, offsets = np.asarray(masks), np.asarray(instance_offsets, dtype=np.int64)
    _check(dst_images, src_images, partner, alpha, alpha_hard, masks, offsets)
    out = composite_numpy(dst_images, src_images, partner, alpha)
    sample = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    if len(sample) != masks.shape[0]:
        raise ValueError(f"instance_offsets cover {len(sample)} instances, masks hold {masks.shape[0]}")
    _, areas, boxes = occlusion_update_numpy(masks, sample, alpha_hard)
    return out, areas, boxes


def composite_occlusion_cupy(
    dst_images: Any, src_images: Any, partner: Any, alpha: Any, alpha_hard: Any, masks: Any, instance_offsets: Any
) -> tuple[Any, Any, Any]:
    """CuPy launcher: one launch for the batch. See :func:`composite_occlusion`."""
    import cupy

    dst_images = _cuda.as_device(dst_images, cupy.uint8)
    src_images = _cuda.as_device(src_images, cupy.uint8)
    partner = _cuda.as_device(partner, cupy.int64)
    alpha_hard = _cuda.as_device_mask(alpha_hard)
    alpha = cupy.asarray(alpha)
    if alpha.dtype != cupy.uint8:
        alpha = alpha.astype(cupy.float32, copy=False)
    alpha = cupy.ascontiguousarray(alpha)
    masks = _cuda.as_device_mask(masks)
    offsets = _cuda.as_device(instance_offsets, cupy.int64)
    _check(dst_images, src_images, partner, alpha, alpha_hard, masks, offsets)
    b, h, w, c = dst_images.shape
    m = masks.shape[0]
    out = _cuda.empty((b, h, w, c), cupy.uint8)
    areas = _cuda.empty((m,), cupy.int64)
    boxes = _cuda.empty((m, 4), cupy.float32)
    if b == 0 or h == 0 or w == 0:
        if m:
            areas.fill(0)
            boxes.fill(0)
        return out, areas, boxes
    sms = _cuda.num_sms(cupy.cuda.Device().id)
    bands = max(1, min(h, _cuda.ceil_div(8 * sms, b)))
    rows_per_band = _cuda.ceil_div(h, bands)
    bands = _cuda.ceil_div(h, rows_per_band)
    _cuda.check_grid_yz(bands, "row bands")
    vec4 = w % 4 == 0 and all(x.data.ptr % 4 == 0 for x in (masks, alpha_hard, dst_images, src_images, out))
    name = "composite_occlusion_" + ("u8" if alpha.dtype == cupy.uint8 else "f32") + ("_x4" if vec4 else "")
    ws = cupy.zeros((max(m, 1), 8), dtype=cupy.uint32)  # box_reduce.cuh workspace
    if m == 0:  # valid pointers for the (unused) per-instance outputs
        masks_arg, areas_arg, boxes_arg = cupy.zeros((1, h, w), cupy.uint8), cupy.zeros(1, cupy.int64), cupy.zeros((1, 4), cupy.float32)
    else:
        masks_arg, areas_arg, boxes_arg = masks, areas, boxes
    kernel = _cuda.get_kernel("composite_occlusion.cu", name)
    kernel(
        (b, bands, 1),
        _BLOCK,
        (dst_images, src_images, partner, alpha, alpha_hard, masks_arg, offsets, out,
         np.int32(h), np.int32(w), np.int32(c), np.int32(rows_per_band), ws, areas_arg, boxes_arg),
    )
    return out, areas, boxes


def composite_occlusion(
    dst_images: Any, src_images: Any, partner: Any, alpha: Any, alpha_hard: Any, masks: Any, instance_offsets: Any
) -> tuple[Any, Any, Any]:
    """Blend each image with its partner and measure each destination instance after occlusion.

    Args:
        dst_images: (B, H, W, C) uint8 (NumPy or CuPy).
        src_images: (B2, H, W, C) uint8, usually the same array.
        partner: (B,) int64 row of ``src_images`` pasted into each destination.
        alpha: (B, H, W) float32 in [0, 1] (blurred) or uint8 (hard) blending alpha.
        alpha_hard: (B, H, W) uint8, nonzero where sample b received pasted pixels (the
            occluder; may be the same array as ``alpha``).
        masks: (M, H, W) uint8 destination masks, instances of sample b at rows
            ``instance_offsets[b]:instance_offsets[b + 1]``; not modified.
        instance_offsets: (B + 1,) int64 CSR offsets.

    Returns:
        ``(images, areas, boxes)``: images as :func:`~decal.kernels.composite.composite`;
        areas (M,) int64 and boxes (M, 4) float32 of ``masks`` with the pixels under
        ``alpha_hard`` cleared, as :func:`~decal.kernels.occlusion_update.occlusion_update`.
    """
    impl = composite_occlusion_cupy if _cuda.is_cupy_array(dst_images) else composite_occlusion_numpy
    return impl(dst_images, src_images, partner, alpha, alpha_hard, masks, instance_offsets)
