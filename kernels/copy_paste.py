"""Copy-Paste for one batch, composed from the batched kernels (Ghiasi et al. 2021).

Steps, each one batched kernel (NumPy twin on the CPU, one CuPy launch per batch on the GPU):

1. :func:`~decal.kernels.mask_boxes.mask_boxes`: area and tight box of every instance
   after the geometric transforms; empty ones are dropped and never pasted.
2. :func:`~decal.kernels.paste_plan.draw_paste_plan` (host): partner and pasted subset,
   mmdetection ``CopyPaste`` semantics.
3. :func:`~decal.kernels.paste_alpha.paste_alpha`: alpha = union of the pasted masks.
4. :func:`~decal.kernels.gaussian_blur.gaussian_blur` when ``blend_sigma > 0``: the
   smoothed alpha used for the image blend only (the masks use the hard alpha).
5. :func:`~decal.kernels.composite.composite`: image = src·alpha + dst·(1 − alpha).
6. :func:`~decal.kernels.occlusion_update.occlusion_update`: destination masks lose the
   pasted pixels; areas and boxes re-derived. An instance is kept if it keeps more than
   ``mask_occluded_thr`` pixels or its box moved at most ``bbox_occluded_thr`` px
   (mmdetection ``CopyPaste._copy_paste``), and always dropped when no pixel is left.
7. Output per image: kept destination instances, then the pasted ones (appended, as
   mmdetection does), with boxes taken from their masks.

Host synchronisation: the per-instance areas (M integers) come to the host once to draw
the plan, and the keep flags (M booleans) once to size the ragged outputs. Pixels never
leave the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._cuda import get_array_module, to_host
from .occlusion_update import occlusion_keep
from .output_order import output_order, place_rows
from .parallel_batch import BatchOps
from .paste_plan import PastePlan, draw_paste_plan


@dataclass(frozen=True)
class CopyPasteParams:
    """Copy-Paste parameters; defaults are mmdetection's ``CopyPaste`` defaults.

    Attributes:
        max_num_pasted: cap on instances pasted into one image.
        blend_sigma: Gaussian sigma in pixels for the alpha used to blend the image
            (Ghiasi et al. blend with a smoothed alpha); 0 pastes with the hard mask.
        mask_occluded_thr: a partly occluded destination instance is kept if more than
            this many pixels remain ...
        bbox_occluded_thr: ... or if every box coordinate moved at most this many pixels.
        paste_by_box: use filled boxes as masks (datasets without masks; mmdetection's
            ``paste_by_box``).
    """

    max_num_pasted: int = 100
    blend_sigma: float = 0.0
    mask_occluded_thr: int = 300
    bbox_occluded_thr: float = 10.0
    paste_by_box: bool = False

    def __post_init__(self) -> None:
        if self.max_num_pasted < 0:
            raise ValueError(f"max_num_pasted must be >= 0, got {self.max_num_pasted}")
        if self.blend_sigma < 0:
            raise ValueError(f"blend_sigma must be >= 0, got {self.blend_sigma}")
        if self.mask_occluded_thr < 0 or self.bbox_occluded_thr < 0:
            raise ValueError("mask_occluded_thr and bbox_occluded_thr must be >= 0")


@dataclass(frozen=True)
class PastedBatch:
    """A batch after a paste step (the fields every paste result has). Pixel arrays live
    where the inputs lived.

    Attributes:
        images: (B, H, W, C) uint8.
        masks: (M', H, W) uint8 in {0, 1}, instances of all images, image by image.
        boxes: (M', 4) float32 xyxy px (exclusive max), the tight box of each mask.
        areas: (M',) int64 pixel count of each mask.
        instance_offsets: (B + 1,) int64 host CSR offsets of each image's instances.
        labels: (M',) int64 host category ids.
        iscrowd: (M',) bool host.
        pasted: (M',) bool host, True for instances pasted in this step.
    """

    images: Any
    masks: Any
    boxes: Any
    areas: Any
    instance_offsets: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    pasted: np.ndarray


@dataclass(frozen=True)
class CopyPasteResult(PastedBatch):
    """A batch after Copy-Paste: the :class:`PastedBatch` fields, and ``plan``, the draws
    that were made."""

    plan: PastePlan


def copy_paste_batch(
    images: Any,
    masks: Any,
    instance_offsets: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    params: CopyPasteParams,
    rng: np.random.Generator,
    *,
    draw_plan: Callable[..., PastePlan] = draw_paste_plan,
    ops: BatchOps | None = None,
) -> CopyPasteResult:
    """Copy-Paste over a whole batch; the partner of each image is another image of it.

    Args:
        images: (B, H, W, C) uint8, NumPy (CPU path) or CuPy (GPU path).
        masks: (M, H, W) uint8 in {0, 1}, same array module as ``images``; the instances
            of image b are rows ``instance_offsets[b]:instance_offsets[b + 1]``.
        instance_offsets: (B + 1,) int64 host array.
        labels: (M,) int64 host category ids.
        iscrowd: (M,) bool host; crowd regions are never pasted.
        params: the thresholds and blend.
        rng: the batch's generator; all draws are made on the host from it.
        draw_plan: draws partners and pasted subsets, called as
            ``draw_plan(rng, instance_offsets, pasteable, max_num_pasted)``;
            :func:`~decal.kernels.paste_plan.draw_paste_plan` by default (self-training
            Copy-Paste restricts the partners to the labelled images of the batch).
        ops: the pixel operations; :meth:`BatchOps.serial` (the batched kernels) by default,
            :meth:`BatchOps.threaded` to run the NumPy twins in chunks on a thread pool (same
            result, bit for bit; NumPy arrays only).
    """
    xp = get_array_module(images)
    ops = BatchOps.serial() if ops is None else ops
    instance_offsets = np.asarray(instance_offsets, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    iscrowd = np.asarray(iscrowd, dtype=bool)
    batch_size = images.shape[0]
    counts = np.diff(instance_offsets)
    if masks.shape[0] != instance_offsets[-1] or len(labels) != masks.shape[0]:
        raise ValueError(
            f"masks ({masks.shape[0]}), labels ({len(labels)}) and instance_offsets "
            f"(total {instance_offsets[-1]}) disagree on the number of instances"
        )
    instance_sample = np.repeat(np.arange(batch_size, dtype=np.int64), counts)

    areas_before, boxes_before = ops.mask_boxes(masks)
    nonempty = to_host(areas_before) > 0
    plan = draw_plan(rng, instance_offsets, nonempty & ~iscrowd, params.max_num_pasted)

    alpha_hard = ops.paste_alpha(
        masks, xp.asarray(plan.paste_offsets), xp.asarray(plan.paste_indices), batch_size
    )
    alpha = ops.gaussian_blur(alpha_hard, params.blend_sigma) if params.blend_sigma > 0 else alpha_hard
    out_images = ops.composite(images, images, xp.asarray(plan.partner), alpha)

    updated, areas_after, boxes_after = ops.occlusion_update(masks, xp.asarray(instance_sample), alpha_hard)
    keep = to_host(
        occlusion_keep(
            areas_before,
            boxes_before,
            areas_after,
            boxes_after,
            mask_occluded_thr=params.mask_occluded_thr,
            bbox_occluded_thr=params.bbox_occluded_thr,
        )
    ).astype(bool)

    kept_rows = np.flatnonzero(keep)
    paste_sample = np.repeat(np.arange(batch_size, dtype=np.int64), plan.num_pasted)
    out_offsets, kept_dest, paste_dest = output_order(instance_sample[kept_rows], paste_sample, batch_size)

    total = int(out_offsets[-1])
    height, width = masks.shape[1:]
    out_masks = xp.empty((total, height, width), dtype=xp.uint8)
    out_boxes = xp.empty((total, 4), dtype=xp.float32)
    out_areas = xp.empty(total, dtype=xp.int64)
    kept_dest_x, paste_dest_x = xp.asarray(kept_dest), xp.asarray(paste_dest)
    kept_rows_x, paste_rows_x = xp.asarray(kept_rows), xp.asarray(plan.paste_indices)
    ops.copy_rows(out_masks, kept_dest_x, updated, kept_rows_x)
    ops.copy_rows(out_masks, paste_dest_x, masks, paste_rows_x)
    out_boxes[kept_dest_x] = boxes_after[kept_rows_x]
    out_boxes[paste_dest_x] = boxes_before[paste_rows_x]
    out_areas[kept_dest_x] = areas_after[kept_rows_x]
    out_areas[paste_dest_x] = areas_before[paste_rows_x]

    out_labels = place_rows(total, np.int64, kept_dest, labels[kept_rows], paste_dest, labels[plan.paste_indices])
    out_crowd = place_rows(total, bool, kept_dest, iscrowd[kept_rows], paste_dest, iscrowd[plan.paste_indices])
    out_pasted = place_rows(total, bool, kept_dest, np.zeros(len(kept_rows), bool), paste_dest, True)
    return CopyPasteResult(
        images=out_images,
        masks=out_masks,
        boxes=out_boxes,
        areas=out_areas,
        instance_offsets=out_offsets,
        labels=out_labels,
        iscrowd=out_crowd,
        pasted=out_pasted,
        plan=plan,
    )

