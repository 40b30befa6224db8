"""Occlusion of destination instances by pasted pixels, and which instances survive it.

:func:`occlusion_update` clears, in every destination mask, the pixels covered by its sample's
hard alpha and re-derives area and tight box (one fused CUDA pass: ``occlusion_update.cu`` with
the reduction of ``box_reduce.cuh``, shared with ``mask_boxes``).

:func:`occlusion_keep` is the survival rule of mmdetection's ``CopyPaste._copy_paste``
(``mmdet/datasets/transforms/transforms.py``): after pasting, a destination instance is kept
when its mask still has more than ``mask_occluded_thr`` (300) pixels *or* every coordinate of
its box moved by at most ``bbox_occluded_thr`` (10) pixels (``valid_inds = bbox_inds |
mask_inds``). One deliberate difference: an instance with zero remaining pixels is always
dropped, even if its (zeroed) box happens to lie within the threshold of the old one, following
Ghiasi et al. 2021, "we remove fully occluded objects".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda
from .mask_boxes import boxes_from_nonzero, launch_box_kernel


def _check(masks: Any, instance_sample: Any, alpha_hard: Any) -> None:
    if masks.ndim != 3 or alpha_hard.ndim != 3:
        raise ValueError(f"masks {masks.shape} and alpha_hard {alpha_hard.shape} must be 3-D")
    if masks.shape[1:] != alpha_hard.shape[1:]:
        raise ValueError(f"masks {masks.shape} and alpha_hard {alpha_hard.shape} differ in H, W")
    if instance_sample.shape != (masks.shape[0],):
        raise ValueError(f"instance_sample {instance_sample.shape} must be ({masks.shape[0]},)")


def occlusion_update_numpy(
    masks: np.ndarray, instance_sample: np.ndarray, alpha_hard: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin (the specification). See :func:`occlusion_update`."""
    masks = _cuda.as_host_mask(masks)
    alpha_hard = _cuda.as_host_mask(alpha_hard)
    instance_sample = np.asarray(instance_sample, dtype=np.int64)
    _check(masks, instance_sample, alpha_hard)
    covered = alpha_hard[instance_sample] != 0  # (M, H, W)
    new_masks = np.where(covered, np.uint8(0), masks)
    areas, boxes = boxes_from_nonzero(new_masks != 0)
    return new_masks, areas, boxes


def occlusion_update_cupy(
    masks: Any, instance_sample: Any, alpha_hard: Any
) -> tuple[Any, Any, Any]:
    """CuPy launcher: one fused launch (clear + area + box) for the batch. See
    :func:`occlusion_update`."""
    import cupy

    masks = _cuda.as_device_mask(masks)
    alpha_hard = _cuda.as_device_mask(alpha_hard)
    instance_sample = _cuda.as_device(instance_sample, cupy.int64)
    _check(masks, instance_sample, alpha_hard)
    new_masks = _cuda.empty(masks.shape, cupy.uint8)
    vec4_ok = alpha_hard.data.ptr % 4 == 0
    areas, boxes = launch_box_kernel(
        "occlusion_update.cu",
        "occlusion_update",
        masks,
        (instance_sample, alpha_hard, new_masks),
        vec4_ok=vec4_ok,
    )
    return new_masks, areas, boxes


def occlusion_update(masks: Any, instance_sample: Any, alpha_hard: Any) -> tuple[Any, Any, Any]:
    """Clear the pasted-over pixels of every destination mask; recompute areas and boxes.

    Args:
        masks: (M, H, W) uint8, nonzero = instance (all instances of the batch, destination
            order); not modified. Other dtypes are read as ``masks != 0``.
        instance_sample: (M,) int64, the batch sample (0..B-1) each instance belongs to.
        alpha_hard: (B, H, W) uint8, nonzero where sample b received pasted pixels (other
            dtypes are read as ``alpha_hard != 0``). Indices in ``instance_sample`` must be
            in range; the CUDA path does not check.

    Returns:
        ``(new_masks, areas, boxes)``: new_masks (M, H, W) uint8 = ``masks`` with zeros where
        ``alpha_hard[instance_sample[m]] != 0`` (other values kept as they were); areas (M,)
        int64 and boxes (M, 4) float32 xyxy (max exclusive) of ``new_masks``, exactly as
        :func:`~decal.kernels.mask_boxes.mask_boxes`.
    """
    impl = occlusion_update_cupy if _cuda.is_cupy_array(masks) else occlusion_update_numpy
    return impl(masks, instance_sample, alpha_hard)


def occlusion_keep(
    areas_before: Any,
    boxes_before: Any,
    areas_after: Any,
    boxes_after: Any,
    mask_occluded_thr: int = 300,
    bbox_occluded_thr: float = 10.0,
) -> Any:
    """Which destination instances survive the paste (NumPy or CuPy, no kernel).

    Args:
        areas_before: (M,) int64 areas before pasting (unused by the rule; kept so the call
            site reads symmetrically and for callers that log how much was occluded).
        boxes_before: (M, 4) float32 xyxy before pasting.
        areas_after: (M,) int64 areas after :func:`occlusion_update`.
        boxes_after: (M, 4) float32 xyxy after :func:`occlusion_update`.
        mask_occluded_thr: pixels; keep if more than this many remain (mmdetection: 300).
        bbox_occluded_thr: pixels; keep if no box coordinate moved by more (mmdetection: 10).

    Returns:
        keep (M,) bool = ``(areas_after > 0) & ((areas_after > mask_occluded_thr) |
        all(|boxes_after - boxes_before| <= bbox_occluded_thr, axis=1))``.
    """
    xp = _cuda.get_array_module(areas_after)
    boxes_moved = xp.abs(xp.asarray(boxes_after) - xp.asarray(boxes_before))
    bbox_ok = xp.all(boxes_moved <= bbox_occluded_thr, axis=1)
    areas_after = xp.asarray(areas_after)
    return (areas_after > 0) & ((areas_after > mask_occluded_thr) | bbox_ok)
