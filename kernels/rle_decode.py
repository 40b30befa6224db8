"""COCO RLE instances (crowd regions, LVIS masks, filled boxes) decoded straight into uint8
masks at the output size, on the GPU, through the sample's geometry table.

An RLE ``counts = [c0, c1, ...]`` (column-major runs, starting with background) is handed to
the device as its *toggle positions* ``q = cumsum(counts)[:-1]``: the column-major pixel
indices where the value flips (int32, ascending, zero-length runs simply repeat a position).
Compressed COCO strings are turned into counts on the host (they are a few hundred bytes;
``decal.dali_pipes.coco.reader`` parses them), and :func:`toggles_from_counts` gives ``q``.
Nothing of size H×W is built on the host.

Faces (the argument layout is that of :mod:`.rasterize_polygons`, with ``toggles`` (Q,) int32
and ``instances`` (I, 4) int32 ``[toggle begin, end, output row m, geometry table]``):

* :func:`rle_decode_numpy`, the twin: pycocotools ``frPyObjects`` + ``decode`` of the counts
  at the source size, then the geometry tables;
* :func:`rle_decode_cupy`: one launch per batch (``rle_decode.cu``), area and box fused;
* :func:`rle_decode_emulated`: the kernel's per-column procedure in NumPy, for CPU tests.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_utils

from . import _cuda
from .rasterize_polygons import check_raster_arrays, fill_masks, launch_raster_kernel, split_table, toggles_to_output

__all__ = [
    "toggles_from_counts",
    "counts_from_toggles",
    "box_toggles",
    "rle_decode",
    "rle_decode_numpy",
    "rle_decode_cupy",
    "rle_decode_emulated",
]


def toggles_from_counts(counts: Any, height: int, width: int) -> np.ndarray:
    """Toggle positions (Q,) int32 of uncompressed COCO RLE ``counts`` for a height×width mask.

    Raises ValueError when the counts are negative or do not cover ``height·width`` pixels.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    total = int(height) * int(width)
    if total >= 2**31:
        raise ValueError(f"RLE of {height}x{width} pixels exceeds the int32 positions")
    if (counts < 0).any() or int(counts.sum()) != total:
        raise ValueError(f"RLE counts must be >= 0 and sum to {total}")
    return np.cumsum(counts)[:-1].astype(np.int32)


def counts_from_toggles(toggles: np.ndarray, height: int, width: int) -> list[int]:
    """The inverse of :func:`toggles_from_counts`: uncompressed counts, a list of ints."""
    q = np.asarray(toggles, dtype=np.int64)
    return np.diff(np.concatenate([[0], q, [int(height) * int(width)]])).tolist()


def box_toggles(x0: int, y0: int, x1: int, y1: int, height: int) -> np.ndarray:
    """Toggle positions of the filled pixel box [x0, x1) × [y0, y1) in a column-major mask of
    ``height`` rows (empty box: no toggles)."""
    if x1 <= x0 or y1 <= y0:
        return np.zeros(0, np.int32)
    base = np.arange(x0, x1, dtype=np.int64) * int(height)
    return np.stack([base + y0, base + y1], axis=1).reshape(-1).astype(np.int32)


def _check(toggles: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any) -> None:
    if toggles.ndim != 1:
        raise ValueError(f"toggles must be 1-D, got {toggles.shape}")
    check_raster_arrays(instances, tables, masks, areas, boxes)


def _fill_on_host(
    toggles: Any, instances: Any, tables: Any, masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray,
    draw: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray],
) -> None:
    """The host faces' common frame: check the arrays, then fill each listed instance with
    ``draw(q, table, H, W)``, its (H, W) uint8 mask from its toggle slice ``q`` (int32) and
    geometry table row."""
    toggles, instances, tables = np.asarray(toggles), np.asarray(instances), np.asarray(tables)
    _check(toggles, instances, tables, masks, areas, boxes)
    _, h, w = masks.shape
    fill_masks(
        instances, tables, masks, areas, boxes,
        lambda q_begin, q_end, table: draw(toggles[q_begin:q_end], table, h, w),
    )


def rle_decode_numpy(
    toggles: np.ndarray, instances: np.ndarray, tables: np.ndarray, masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray
) -> None:
    """NumPy twin (the specification): pycocotools decode at the source size, then geometry."""
    from .mask_geometry import apply_geometry

    def draw(q: np.ndarray, table: np.ndarray, h: int, w: int) -> np.ndarray:
        rows, cols, src_h, src_w, _, _ = split_table(table, h, w)
        counts = counts_from_toggles(q, src_h, src_w)
        with warnings.catch_warnings():  # pycocotools vs NumPy 2 copy= DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            rle = mask_utils.frPyObjects({"size": [src_h, src_w], "counts": counts}, src_h, src_w)
            source = mask_utils.decode(rle)
        return apply_geometry(source[None], rows, cols)[0]

    _fill_on_host(toggles, instances, tables, masks, areas, boxes, draw)


def rle_decode_cupy(toggles: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any) -> None:
    """CuPy launcher: one launch for every listed RLE instance of the batch."""
    import cupy

    toggles = _cuda.as_device(toggles, cupy.int32)
    instances = _cuda.as_device(instances, cupy.int32)
    tables = _cuda.as_device(tables, cupy.int32)
    _check(toggles, instances, tables, masks, areas, boxes)
    if toggles.size == 0:  # a valid pointer for the kernel even without toggles
        toggles = cupy.zeros(1, dtype=cupy.int32)
    launch_raster_kernel(
        "rle_decode.cu", "rle_decode_u8", (toggles,), instances, tables, masks, areas, boxes,
        shared_words_per_row=1,
    )


def rle_decode(toggles: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any) -> None:
    """Decode the listed RLE instances into rows of ``masks`` (in place); dispatches on
    ``masks`` (CuPy: the kernel, NumPy: the twin)."""
    impl = rle_decode_cupy if _cuda.is_cupy_array(masks) else rle_decode_numpy
    impl(toggles, instances, tables, masks, areas, boxes)


def rle_decode_emulated(
    toggles: np.ndarray, instances: np.ndarray, tables: np.ndarray, masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray
) -> None:
    """The CUDA kernel's per-column procedure in NumPy (for CPU tests)."""

    def draw(q: np.ndarray, table: np.ndarray, h: int, w: int) -> np.ndarray:
        _, cols, src_h, src_w, _, _ = split_table(table, h, w)
        q = q.astype(np.int64)
        cs, rs = [], []
        for c in np.unique(cols[(cols >= 0) & (cols < src_w)]).tolist():
            col0, col1 = c * src_h, (c + 1) * src_h
            k = int(np.searchsorted(q, col0, side="right"))  # first toggle > col0
            end = int(np.searchsorted(q, col1, side="left"))  # first toggle >= col1
            rows = list((q[k:end] - col0).tolist())
            if k % 2:
                rows.append(0)
            if end % 2:
                rows.append(src_h)
            cs.extend([c] * len(rows))
            rs.extend(rows)
        return toggles_to_output(np.array(cs, np.int64), np.array(rs, np.int64), table, h, w)

    _fill_on_host(toggles, instances, tables, masks, areas, boxes, draw)
