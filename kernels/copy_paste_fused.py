"""Copy-Paste for one batch on the GPU mask path: fewer passes over the masks, compaction on
the device, two small host synchronisations.

:func:`copy_paste_batch_fused` returns exactly what :func:`~decal.kernels.copy_paste.copy_paste_batch`
returns for the same inputs and generator (``tests/test_copy_paste_fused.py`` checks it on the
CPU twins), but it is built for masks that were rasterised on the device together with their
areas and boxes (:func:`~decal.kernels.instance_masks.rasterize_instances`):

1. host: the plan (partners, pasted subsets) from the areas (sync 1: M int64 to the host);
   the plan and the output candidates go to the device in one copy;
2. :func:`~decal.kernels.paste_alpha.paste_alpha` (+ :func:`~decal.kernels.gaussian_blur.gaussian_blur`);
3. :func:`~decal.kernels.composite_occlusion.composite_occlusion`: the blend and every
   destination instance's area and box after occlusion, one pass, no mask written;
4. device: keep flags (mmdetection thresholds), then the output slots by a prefix sum over
   them (``cumsum``) and a scatter, so no index array comes back from the host; sync 2: the
   M keep flags come to the host for the labels and the ragged offsets;
5. :func:`~decal.kernels.gather_masks.gather_masks`: every output mask written once, in its
   slot (surviving destination masks occluded on the way, pasted masks copied).

**Mask representation: uint8, decided on bytes moved.** :func:`traffic_model` counts the
device-memory bytes of making the masks and running this step, per variant; ``decal bench``
(mode ``masks``, CPU) evaluates it on the benchmark's data (COCO-like, ~640×480, 1–50
instances, LSJ at 1024²; per image about 14 destination instances, 6 pasted, 12 kept). For a
64-image batch (``bench/RESULTS.md`` has the run):

=================================  ======  ==================================================
variant                            GiB     where the bytes go
=================================  ======  ==================================================
default pipeline, DALI-resized     ~15.8   resize/crop/flip/transpose of the mask stacks 6.5,
masks, ``copy_paste_batch``                occlusion 2.7, gather 2.3, DALI output copy 2.3;
                                           plus ~0.26 GiB of masks over PCIe
GPU raster + this module (uint8)   ~8.2    raster 0.9, composite+occlusion 1.5, gather 3.1,
                                           DALI output copy 2.3; nothing mask-sized over PCIe
the same, masks bit-packed         ~4.7    (uint8 only for the output masks)
=================================  ======  ==================================================

So rasterising on the device and fusing halves the traffic of the default path; bit-packing
would save a further ~40 %, but 3.4 of its 4.7 GiB are the uint8 output masks (torchvision's
Mask R-CNN takes (N, S, S) uint8) and DALI's copy of them, which no internal format avoids.
uint8 is kept here: the step's four kernels stay the tested uint8 ones, DALI and torch take the
planes as they are, and the packed variant (a second paste_alpha / composite_occlusion /
gather_masks on 32-bit words; the rasteriser already holds each tile as column words, so it
would emit them for free) is worth its code only if the GPU run shows this step, not decoding,
is what keeps (b) below 0.8 × (a): ``decal bench``'s ``kernels`` mode times each step against
a device-to-device copy for that decision. The largest single term left is DALI's copy of the
outputs of ``python_function``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._cuda import get_array_module, to_host
from .composite_occlusion import composite_occlusion
from .copy_paste import CopyPasteParams, CopyPasteResult
from .gather_masks import gather_masks
from .gaussian_blur import gaussian_blur
from .occlusion_update import occlusion_keep
from .paste_alpha import paste_alpha
from .paste_plan import PastePlan, draw_paste_plan

__all__ = ["copy_paste_batch_fused", "output_candidates", "traffic_model"]


def output_candidates(
    instance_offsets: np.ndarray, paste_offsets: np.ndarray, paste_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row that may appear in the output, in output order (host, before keep is known).

    Per image b: its destination instances in order, then the instances pasted into it.

    Returns:
        ``(src_rows, is_dest, sample)`` (C,) int64 / bool / int64: the row of ``masks`` each
        candidate copies, whether it is a destination instance (kept only if it survives the
        occlusion) or a pasted one (always kept), and its image.
    """
    instance_offsets = np.asarray(instance_offsets, dtype=np.int64)
    paste_offsets = np.asarray(paste_offsets, dtype=np.int64)
    paste_indices = np.asarray(paste_indices, dtype=np.int64)
    batch = len(instance_offsets) - 1
    n_dest, n_paste = np.diff(instance_offsets), np.diff(paste_offsets)
    per_image = n_dest + n_paste
    starts = np.concatenate([[0], np.cumsum(per_image)])[:-1]
    total = int(per_image.sum())
    sample = np.repeat(np.arange(batch, dtype=np.int64), per_image)
    rank = np.arange(total, dtype=np.int64) - np.repeat(starts, per_image)
    is_dest = rank < n_dest[sample]
    src = np.empty(total, dtype=np.int64)
    src[is_dest] = instance_offsets[sample[is_dest]] + rank[is_dest]
    pasted = ~is_dest
    src[pasted] = paste_indices[paste_offsets[sample[pasted]] + rank[pasted] - n_dest[sample[pasted]]]
    return src, is_dest, sample


def _upload(xp: Any, arrays: list[np.ndarray]) -> list[Any]:
    """int64 host arrays to the device in one copy (views of one buffer); as is for NumPy."""
    if xp is np:
        return arrays
    flat = np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays])
    dev = xp.asarray(flat)  # CuPy >= 13: asynchronous on the current stream
    out, start = [], 0
    for a in arrays:
        out.append(dev[start : start + a.size].reshape(a.shape))
        start += a.size
    return out


def copy_paste_batch_fused(
    images: Any,
    masks: Any,
    areas: Any,
    boxes: Any,
    instance_offsets: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    params: CopyPasteParams,
    rng: np.random.Generator,
    *,
    areas_host: np.ndarray | None = None,
    draw_plan: Callable[..., PastePlan] = draw_paste_plan,
) -> CopyPasteResult:
    """Copy-Paste over a batch whose masks come with their areas and boxes.

    Args:
        images: (B, H, W, C) uint8, NumPy or CuPy.
        masks: (M, H, W) uint8 in {0, 1} on the same device; image b owns rows
            ``instance_offsets[b]:instance_offsets[b + 1]``.
        areas, boxes: (M,) int64 / (M, 4) float32 of ``masks``
            (:func:`~decal.kernels.mask_boxes.mask_boxes` semantics), same device.
        instance_offsets: (B + 1,) int64 host; labels (M,) int64 host; iscrowd (M,) bool host.
        params, rng: as :func:`~decal.kernels.copy_paste.copy_paste_batch`.
        areas_host: ``areas`` already copied to the host (saves the first synchronisation
            when the caller fetched them together with other metadata).
        draw_plan: as in :func:`~decal.kernels.copy_paste.copy_paste_batch`.

    Returns:
        The same :class:`~decal.kernels.copy_paste.CopyPasteResult` as ``copy_paste_batch``.
    """
    xp = get_array_module(images)
    instance_offsets = np.asarray(instance_offsets, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    iscrowd = np.asarray(iscrowd, dtype=bool)
    batch = images.shape[0]
    m = masks.shape[0]
    if m != instance_offsets[-1] or len(labels) != m or len(iscrowd) != m:
        raise ValueError(
            f"masks ({m}), labels ({len(labels)}), iscrowd ({len(iscrowd)}) and instance_offsets "
            f"(total {instance_offsets[-1]}) disagree on the number of instances"
        )
    counts = np.diff(instance_offsets)
    instance_sample = np.repeat(np.arange(batch, dtype=np.int64), counts)

    areas_host = to_host(areas) if areas_host is None else np.asarray(areas_host)  # sync 1
    plan = draw_plan(rng, instance_offsets, (areas_host > 0) & ~iscrowd, params.max_num_pasted)
    cand_src, cand_dest, cand_sample = output_candidates(instance_offsets, plan.paste_offsets, plan.paste_indices)
    partner, p_off, p_idx, offsets_x, c_src, c_dest, c_sample = _upload(
        xp,
        [plan.partner, plan.paste_offsets, plan.paste_indices, instance_offsets, cand_src,
         cand_dest.astype(np.int64), cand_sample],
    )

    alpha_hard = paste_alpha(masks, p_off, p_idx, batch)
    alpha = gaussian_blur(alpha_hard, params.blend_sigma) if params.blend_sigma > 0 else alpha_hard
    out_images, areas_after, boxes_after = composite_occlusion(
        images, images, partner, alpha, alpha_hard, masks, offsets_x
    )
    keep = occlusion_keep(
        areas, boxes, areas_after, boxes_after,
        mask_occluded_thr=params.mask_occluded_thr, bbox_occluded_thr=params.bbox_occluded_thr,
    )

    # compaction on the device: candidates that survive, numbered by a prefix sum
    is_dest = c_dest != 0
    if m:
        emit = xp.where(is_dest, keep[xp.where(is_dest, c_src, 0)], True)
    else:
        emit = xp.ones(c_src.shape, dtype=bool)
    slot = xp.cumsum(emit.astype(xp.int64)) - 1
    keep_host = to_host(keep).astype(bool)  # sync 2
    total = int(keep_host.sum() + plan.num_pasted.sum())
    target = xp.where(emit, slot, total)  # dropped candidates land on a spare slot
    src_rows = xp.zeros(total + 1, dtype=xp.int64)
    clear = xp.zeros(total + 1, dtype=xp.int64)
    if c_src.size:
        src_rows[target] = c_src
        clear[target] = xp.where(is_dest, c_sample, -1)
    src_rows, clear = src_rows[:total], clear[:total]

    out_masks = gather_masks(masks, alpha_hard, src_rows, clear)
    from_after = (clear >= 0)
    if total:
        out_boxes = xp.where(from_after[:, None], boxes_after[src_rows], boxes[src_rows])
        out_areas = xp.where(from_after, areas_after[src_rows], areas[src_rows])
    else:
        out_boxes = xp.zeros((0, 4), dtype=xp.float32)
        out_areas = xp.zeros(0, dtype=xp.int64)

    emit_host = np.where(cand_dest, keep_host[np.where(cand_dest, cand_src, 0)] if m else True, True)
    rows_host = cand_src[emit_host]
    kept_per_image = np.bincount(instance_sample[keep_host], minlength=batch)
    out_offsets = np.concatenate([[0], np.cumsum(kept_per_image + plan.num_pasted)]).astype(np.int64)
    return CopyPasteResult(
        images=out_images,
        masks=out_masks,
        boxes=out_boxes.astype(xp.float32, copy=False),
        areas=out_areas.astype(xp.int64, copy=False),
        instance_offsets=out_offsets,
        labels=labels[rows_host],
        iscrowd=iscrowd[rows_host],
        pasted=~cand_dest[emit_host],
        plan=plan,
    )


def traffic_model(
    num_images: int,
    num_instances: int,
    num_pasted: int,
    num_kept: int,
    side: int,
    source_pixels: int = 640 * 480,
    channels: int = 3,
) -> dict[str, dict[str, int]]:
    """Device memory traffic (bytes) of making the masks and running Copy-Paste, per variant.

    Args:
        num_images: B; num_instances: M destination instances; num_pasted: P; num_kept: K
            surviving destination instances; side: S (planes are S×S); source_pixels: mean
            h·w of the original images; channels: C.

    Returns:
        ``{variant: {step: bytes, ..., "total": bytes, "pcie_masks": bytes}}``:

        * ``"dali_masks_unfused"``: the default pipeline on the GPU: an H×W×(N+1) stack per
          image crosses PCIe (``pcie_masks``), DALI resizes (NN), crops and flips it (each a
          read and a write; the resized plane counted as S², LSJ makes it 0.01–4 S²), the step
          transposes it to N×S×S, then ``copy_paste_batch``;
        * ``"gpu_raster_fused"``: descriptors over PCIe (negligible), the rasteriser writes
          M·S² once, then this module's fused step;
        * ``"gpu_raster_bitpacked"``: the same on 1-bit masks, uint8 written for the outputs
          only.

        Every variant also pays ``dali_output_copy``: DALI copies what ``python_function``
        returns into its own buffers (the (K + P) output masks read and written once more).
        Hard alpha, no blur; every read from DRAM (no cache reuse): an upper bound.
    """
    a = side * side
    b, m, p, k, c = num_images, num_instances, num_pasted, num_kept, channels
    blend = (2 * c + 1 + c) * b * a  # read dst, src, alpha; write out
    models = {
        "dali_masks_unfused": {
            "resize_crop_flip_transpose": m * source_pixels + 7 * m * a,
            "mask_boxes": m * a,
            "paste_alpha": p * a + b * a,
            "composite": blend,
            "occlusion_update": 3 * m * a,  # read masks and alpha, write occluded masks
            "gather": 2 * (k + p) * a,
        },
        "gpu_raster_fused": {
            "rasterize": m * a,
            "paste_alpha": p * a + b * a,
            "composite_occlusion": blend + m * a,
            "gather_masks": 2 * (k + p) * a + k * a,  # read mask and the kept ones' alpha; write
        },
        "gpu_raster_bitpacked": {  # alpha written as uint8 (for the blend) and as bits
            "rasterize": m * a // 8,
            "paste_alpha": p * a // 8 + b * a + b * a // 8,
            "composite_occlusion": blend + m * a // 8 + b * a // 8,
            "gather_masks": (k + p) * a // 8 + k * a // 8 + (k + p) * a,
        },
    }
    for steps in models.values():
        steps["dali_output_copy"] = 2 * (k + p) * a
        steps["total"] = sum(steps.values())
    models["dali_masks_unfused"]["pcie_masks"] = m * source_pixels
    models["gpu_raster_fused"]["pcie_masks"] = 0
    models["gpu_raster_bitpacked"]["pcie_masks"] = 0
    return models
