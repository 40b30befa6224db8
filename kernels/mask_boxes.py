"""Area and tight box of every instance mask of a batch.

Boxes are xyxy float32 in pixels with an *exclusive* max, ``(x_first, y_first, x_last + 1,
y_last + 1)``: the same numbers as pycocotools ``toBbox`` (``[x, y, w, h]`` read as
``(x, y, x + w, y + h)``) and mmdetection ``BitmapMasks.get_bboxes``. An empty mask has area 0
and box ``(0, 0, 0, 0)``.

CUDA: ``mask_boxes.cu`` with the reduction in ``box_reduce.cuh`` (shared with
``occlusion_update``): one launch per batch, grid = (instance, band of rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _cuda

_BLOCK = (32, 8, 1)
_MIN_ROWS_PER_BAND = 16


def boxes_from_nonzero(nz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas (M,) int64 and boxes (M, 4) float32 of a boolean (M, H, W) array (NumPy)."""
    m, h, w = nz.shape
    areas = nz.sum(axis=(1, 2), dtype=np.int64)
    boxes = np.zeros((m, 4), dtype=np.float32)
    if m == 0 or h == 0 or w == 0:
        return areas, boxes
    rows = nz.any(axis=2)  # (M, H)
    cols = nz.any(axis=1)  # (M, W)
    present = areas > 0
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - np.argmax(rows[:, ::-1], axis=1)
    boxes[~present] = 0.0
    return areas, boxes


def mask_boxes_numpy(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin (the specification). See :func:`mask_boxes`."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (M, H, W), got shape {masks.shape}")
    return boxes_from_nonzero(masks != 0)


def launch_box_kernel(
    cu_name: str, kernel_base: str, masks: Any, extra: tuple[Any, ...] = (), vec4_ok: bool = True
) -> tuple[Any, Any]:
    """Launch a ``box_reduce.cuh`` kernel over ``masks`` (M, H, W) uint8 on the device.

    ``extra`` are the arguments between ``masks`` and ``H`` (occlusion: sample, alpha,
    new_masks). Returns (areas (M,) int64, boxes (M, 4) float32), freshly allocated.
    """
    import cupy

    m, h, w = masks.shape
    areas = _cuda.empty((m,), np.int64)
    boxes = _cuda.empty((m, 4), np.float32)
    if m == 0:
        return areas, boxes
    if h >= 2**31 or w >= 2**31:
        raise ValueError(f"mask size {h}x{w} too large")
    target_blocks = 16 * _cuda.num_sms(cupy.cuda.Device().id)
    bands_wanted = _cuda.ceil_div(target_blocks, m)
    rows_per_band = max(_MIN_ROWS_PER_BAND, _cuda.ceil_div(h, bands_wanted))
    bands = max(1, _cuda.ceil_div(h, rows_per_band))
    _cuda.check_grid_yz(bands, "row bands")
    vec4 = vec4_ok and w % 4 == 0 and masks.data.ptr % 4 == 0
    kernel = _cuda.get_kernel(cu_name, kernel_base + ("_u8x4" if vec4 else "_u8"))
    ws = cupy.zeros((m, 8), dtype=cupy.uint32)  # box_reduce.cuh WS_WORDS; zero = identity
    kernel(
        (m, bands, 1),
        _BLOCK,
        (masks, *extra, np.int32(h), np.int32(w), np.int32(rows_per_band), ws, areas, boxes),
    )
    return areas, boxes


def mask_boxes_cupy(masks: Any) -> tuple[Any, Any]:
    """CuPy launcher: one kernel launch for the whole batch. See :func:`mask_boxes`."""
    masks = _cuda.as_device_mask(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (M, H, W), got shape {masks.shape}")
    return launch_box_kernel("mask_boxes.cu", "mask_boxes", masks)


def mask_boxes(masks: Any) -> tuple[Any, Any]:
    """Pixel count and tight box of each mask.

    Args:
        masks: (M, H, W) uint8, 0 = background and nonzero = instance (NumPy or CuPy; M may
            be 0).

    Returns:
        ``(areas, boxes)`` on the same device as ``masks``: areas (M,) int64 pixel counts;
        boxes (M, 4) float32 xyxy in pixels, max exclusive (``x_last + 1``); an empty mask
        gives area 0 and box ``(0, 0, 0, 0)``.
    """
    impl = mask_boxes_cupy if _cuda.is_cupy_array(masks) else mask_boxes_numpy
    return impl(masks)
