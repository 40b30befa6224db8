"""Polygon instances rasterised straight into uint8 masks at the output size (GPU mask path).

The CPU copy-paste path rasterises every instance with pycocotools at the image's original
size and lets DALI resize, crop and flip the H×W×N stack (nearest neighbour). The GPU path
never builds that stack: for each output pixel it evaluates pycocotools' polygon rule at the
source pixel that DALI's geometry would have brought there (:mod:`.mask_geometry`), directly
on the device. So the masks are the same bits, and only the polygon vertices cross PCIe.

**The rule** (pycocotools ``maskApi.c`` ``rleFrPoly``, the rasteriser behind ``frPyObjects``):
vertices are snapped to a 5× grid, ``X = (int)(5·x + .5)``; the closed boundary is walked edge
by edge with a DDA; a source column ``c`` is toggled wherever two consecutive boundary points
straddle its centre (upsampled x ``5c+2`` and ``5c+3``), at source row
``clamp(ceil((v + .5) / 5 - .5), 0, h)`` with ``v`` the smaller upsampled y of the two; a pixel
is inside when an odd number of its column's toggles lie at or above it. Columns outside
``[0, w)`` are skipped; an object made of several polygons is their union (the reader merges
them with ``pycocotools.mask.merge``). The CUDA kernel computes, per (edge, column), the one
toggle an edge can make in that column in closed form (x-major edges) or by a binary search
over its monotone DDA (y-major edges), with pycocotools' own double arithmetic
(``rasterize_polygons.cu``), then maps toggles to output rows through the sample's geometry
table and takes a prefix XOR down each column (``raster_common.cuh``).

**Faces.**

* :func:`rasterize_polygons_numpy`, the twin and the specification: pycocotools
  ``frPyObjects`` + ``merge`` + ``decode`` at the source size, then the geometry tables
  (:func:`~decal.kernels.mask_geometry.apply_geometry`).
* :func:`rasterize_polygons_cupy`: one launch per batch, grid = (32-column tile, instance),
  area and tight box fused (the copy-paste step needs no separate ``mask_boxes`` pass).
* :func:`rasterize_polygons_emulated`: a NumPy port of the kernel's decision procedure
  (per-column toggles, output-row lookup, prefix XOR), so the CPU test suite proves the
  algorithm against pycocotools even where no GPU runs the CUDA port.

**Subpixel mode.** A sample's polygons may instead be mapped continuously into the output
window (:func:`~decal.kernels.mask_geometry.transform_points`) and rasterised with the same
rule at the output resolution (an identity geometry table restricted to the non-padded
window). That is sharper when LSJ upscales (up to 3.2× for 640-pixel images at 1024²), but it
no longer equals pycocotools-then-NN: the two differ on edge pixels only
(``tests/test_rasterize.py`` measures the rate; ``bench/RESULTS.md`` reports it).

Inputs (all int32, as :class:`~decal.kernels.instance_masks.MaskDescriptors` holds them):
``verts`` (V, 2) upsampled (x, y); ``polys`` (NP, 2) [vertex begin, end) of each polygon, at
least 3 vertices; ``instances`` (I, 4) [polygon begin, end, output row m, geometry table];
``tables`` (T, H + W + 4): ``rows[H] | cols[W] | src_h, src_w, y0, y1`` (see
:func:`~decal.kernels.instance_masks.geometry_table`). Outputs are written in place into rows
``m`` of ``masks`` (M, H, W) uint8, ``areas`` (M,) int64 and ``boxes`` (M, 4) float32 (xyxy,
max exclusive, zeros for an empty mask, as :func:`~decal.kernels.mask_boxes.mask_boxes`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_utils

from . import _cuda
from .mask_boxes import boxes_from_nonzero

__all__ = [
    "store_areas_and_boxes",
    "fill_masks",
    "upsample_vertices",
    "downsample_vertices",
    "split_table",
    "rasterize_polygons",
    "rasterize_polygons_numpy",
    "rasterize_polygons_cupy",
    "rasterize_polygons_emulated",
    "polygon_column_toggles",
]

_TILE = 32
_THREADS = 256
_MAX_SHARED_BYTES = 48 * 1024
#: Largest |upsampled coordinate| accepted: keeps every int conversion of the rule exact.
MAX_UPSAMPLED = 2**30


def upsample_vertices(xy: Any) -> np.ndarray:
    """pycocotools' snapping of polygon vertices to its 5× grid: ``(int)(5·x + .5)``.

    Args:
        xy: (K, 2) float (x, y) pixel coordinates (or a flat ``[x0, y0, x1, y1, ...]``).

    Returns:
        (K, 2) int32, C truncation toward zero as in ``maskApi.c``.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    up = np.trunc(5.0 * xy + 0.5)
    if up.size and not np.all(np.abs(up) < MAX_UPSAMPLED):
        raise ValueError(f"polygon coordinates beyond ±{MAX_UPSAMPLED / 5:g} px (or not finite)")
    return up.astype(np.int32)


def downsample_vertices(up: np.ndarray) -> np.ndarray:
    """Float coordinates that :func:`upsample_vertices` maps back onto ``up`` exactly (the
    twin hands these to pycocotools): ``X / 5``, or ``(X - 1) / 5`` for negative ``X``
    (C truncation rounds those toward zero)."""
    up = np.asarray(up, dtype=np.float64)
    return np.where(up < 0, (up - 1.0) / 5.0, up / 5.0)


def split_table(table: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:
    """(rows, cols, src_h, src_w, y0, y1) of one geometry table row."""
    table = np.asarray(table)
    src_h, src_w, y0, y1 = (int(v) for v in table[height + width : height + width + 4])
    return table[:height], table[height : height + width], src_h, src_w, y0, y1


def _check(verts: Any, polys: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any) -> None:
    if verts.ndim != 2 or verts.shape[1] != 2:
        raise ValueError(f"verts must be (V, 2), got {verts.shape}")
    if polys.ndim != 2 or polys.shape[1] != 2:
        raise ValueError(f"polys must be (NP, 2), got {polys.shape}")
    check_raster_arrays(instances, tables, masks, areas, boxes)


def check_raster_arrays(instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any) -> None:
    """Check the arrays every mask rasteriser (polygons, RLE) shares: ``instances`` (I, 4),
    ``masks`` (M, H, W), ``tables`` (T, H + W + 4), ``areas`` (M,) and ``boxes`` (M, 4).

    Raises:
        ValueError: naming the array and the shape it must have.
    """
    if instances.ndim != 2 or instances.shape[1] != 4:
        raise ValueError(f"instances must be (I, 4), got {instances.shape}")
    if masks.ndim != 3:
        raise ValueError(f"masks must be (M, H, W), got {masks.shape}")
    m, h, w = masks.shape
    if tables.ndim != 2 or tables.shape[1] != h + w + 4:
        raise ValueError(f"tables must be (T, H + W + 4) = (T, {h + w + 4}), got {tables.shape}")
    if areas.shape != (m,) or boxes.shape != (m, 4):
        raise ValueError(f"areas {areas.shape} / boxes {boxes.shape} must be ({m},) / ({m}, 4)")


def store_areas_and_boxes(masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray, rows: list[int]) -> None:
    """Write the pixel count (``areas`` (M,) int64) and tight xyxy box (``boxes`` (M, 4)
    float32 px) of each finished mask ``masks[rows]`` (M, H, W) into their rows."""
    if rows:
        a, b = boxes_from_nonzero(masks[rows] != 0)
        areas[rows], boxes[rows] = a, b


def fill_masks(
    instances: np.ndarray, tables: np.ndarray, masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray,
    draw: Callable[[int, int, np.ndarray], np.ndarray],
) -> None:  # fmt: skip
    """The host rasterisers' loop (twins and emulations): for each listed instance ``(begin,
    end, m, t)`` of ``instances`` (I, 4), ``masks[m] = draw(begin, end, tables[t])`` (an
    (H, W) uint8 mask from the instance's descriptor range and geometry table), then the
    areas and boxes of the rows written."""
    done = []
    for begin, end, m, t in instances.tolist():  # the spec; the CUDA path has no loop
        masks[m] = draw(begin, end, tables[t])
        done.append(m)
    store_areas_and_boxes(masks, areas, boxes, done)


def _fill_on_host(
    verts: Any, polys: Any, instances: Any, tables: Any, masks: np.ndarray, areas: np.ndarray, boxes: np.ndarray,
    draw: Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray],
) -> None:  # fmt: skip
    """The host faces' common frame: check the arrays, then fill each listed instance with
    ``draw(verts, polys, table, H, W)``, its (H, W) uint8 mask from the (V, 2) vertices, its
    own (n, 2) polygon ranges and its geometry table row."""
    verts, polys = np.asarray(verts), np.asarray(polys)
    instances, tables = np.asarray(instances), np.asarray(tables)
    _check(verts, polys, instances, tables, masks, areas, boxes)
    _, h, w = masks.shape
    fill_masks(
        instances, tables, masks, areas, boxes,
        lambda p_begin, p_end, table: draw(verts, polys[p_begin:p_end], table, h, w),
    )  # fmt: skip


def rasterize_polygons_numpy(
    verts: np.ndarray,
    polys: np.ndarray,
    instances: np.ndarray,
    tables: np.ndarray,
    masks: np.ndarray,
    areas: np.ndarray,
    boxes: np.ndarray,
) -> None:
    """NumPy twin (the specification): pycocotools at the source size, then the geometry."""
    from .mask_geometry import apply_geometry


    def draw(verts: np.ndarray, polys: np.ndarray, table: np.ndarray, h: int, w: int) -> np.ndarray:
        rows, cols, src_h, src_w, _, _ = split_table(table, h, w)
        pieces = [downsample_vertices(verts[a:b]).ravel().tolist() for a, b in polys.tolist()]
        if any(len(p) < 6 for p in pieces):
            raise ValueError("every polygon needs at least 3 vertices")
        if pieces:
            with warnings.catch_warnings():  # pycocotools vs NumPy 2 copy= DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                rle = mask_utils.merge(mask_utils.frPyObjects(pieces, src_h, src_w))
                source = mask_utils.decode(rle)
        else:
            source = np.zeros((src_h, src_w), np.uint8)
        return apply_geometry(source[None], rows, cols)[0]

    _fill_on_host(verts, polys, instances, tables, masks, areas, boxes, draw)


def rasterize_polygons_cupy(
    verts: Any, polys: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any
) -> None:
    """CuPy launcher: one launch for every listed instance of the batch. See the module."""
    import cupy

    verts = _cuda.as_device(verts, cupy.int32)
    polys = _cuda.as_device(polys, cupy.int32)
    instances = _cuda.as_device(instances, cupy.int32)
    tables = _cuda.as_device(tables, cupy.int32)
    _check(verts, polys, instances, tables, masks, areas, boxes)
    launch_raster_kernel(
        "rasterize_polygons.cu", "rasterize_polygons_u8", (verts, polys), instances, tables,
        masks, areas, boxes, shared_words_per_row=2,
    )


def launch_raster_kernel(
    cu_name: str,
    kernel_name: str,
    data: tuple[Any, ...],
    instances: Any,
    tables: Any,
    masks: Any,
    areas: Any,
    boxes: Any,
    shared_words_per_row: int,
) -> None:
    """Launch a ``raster_common.cuh`` kernel: grid (ceil(W / 32), I), 256 threads."""
    import cupy

    num = int(instances.shape[0])
    m, h, w = masks.shape
    if num == 0:
        return
    if h == 0 or w == 0:  # empty planes: nothing to draw, but the rows' areas and boxes exist
        rows = instances[:, 2].astype(cupy.int64)
        areas[rows] = 0
        boxes[rows] = 0
        return
    for name, arr, dtype in (("masks", masks, cupy.uint8), ("areas", areas, cupy.int64), ("boxes", boxes, cupy.float32)):
        if not (isinstance(arr, cupy.ndarray) and arr.dtype == dtype and arr.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-contiguous cupy {np.dtype(dtype).name} array")
    shared = 4 * shared_words_per_row * h
    if shared > _MAX_SHARED_BYTES:
        raise ValueError(f"output height {h} too large for the rasteriser's shared memory")
    _cuda.check_grid_yz(num, "instances")
    ws = cupy.zeros((m, 8), dtype=cupy.uint32)  # box_reduce.cuh workspace; zero = identity
    kernel = _cuda.get_kernel(cu_name, kernel_name)
    kernel(
        (_cuda.ceil_div(w, _TILE), num, 1),
        (_THREADS, 1, 1),
        (*data, instances, tables, np.int32(h), np.int32(w), masks, ws, areas, boxes),
        shared_mem=shared,
    )


def rasterize_polygons(
    verts: Any, polys: Any, instances: Any, tables: Any, masks: Any, areas: Any, boxes: Any
) -> None:
    """Rasterise the listed polygon instances into rows of ``masks`` (in place).

    Dispatches on ``masks``: CuPy runs the kernel, NumPy the twin. See the module docstring
    for the argument layout. Rows not listed are left untouched.
    """
    impl = rasterize_polygons_cupy if _cuda.is_cupy_array(masks) else rasterize_polygons_numpy
    impl(verts, polys, instances, tables, masks, areas, boxes)


# --------------------------------------------------------------------------- emulation


def _dda(base: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(int)(base + s·t + .5) in double, op by op (NumPy never fuses these into an FMA)."""
    return np.trunc((base + s * t) + 0.5).astype(np.int64)


def polygon_column_toggles(up: np.ndarray, columns: np.ndarray, src_h: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's per-(edge, column) rule in NumPy, vectorised over ``columns``.

    Args:
        up: (K, 2) upsampled vertices of one closed polygon.
        columns: (C,) source column indices to evaluate (each in [0, w)).
        src_h: source height (toggle rows are clamped to [0, src_h]).

    Returns:
        (column indices, toggle rows): one entry per toggle, as ``edge_toggle_row`` in
        ``rasterize_polygons.cu`` produces them.
    """
    up = np.asarray(up, dtype=np.int64).reshape(-1, 2)
    columns = np.asarray(columns, dtype=np.int64)
    k = len(up)
    out_c, out_r = [], []
    target = 5 * columns + 2
    for e in range(k):
        x0, y0 = up[e]
        x1, y1 = up[(e + 1) % k]
        dx, dy = abs(x1 - x0), abs(y1 - y0)
        xmajor = dx >= dy
        flip = (x0 > x1) if xmajor else (y0 > y1)
        xs, ys, xe, ye = (x1, y1, x0, y0) if flip else (x0, y0, x1, y1)
        if xmajor:
            t = target - xs
            ok = (t >= 0) & (t < dx)
            if not ok.any():
                continue
            s = np.float64(ye - ys) / np.float64(dx)
            t = t[ok].astype(np.float64)
            vmin = np.minimum(_dda(np.float64(ys), s, t), _dda(np.float64(ys), s, t + 1.0))
            cols = columns[ok]
        else:
            if xe == xs:
                continue
            s = np.float64(xe - xs) / np.float64(dy)
            inc = xe > xs
            u0 = int(_dda(np.float64(xs), s, np.float64(0.0)))
            u1 = int(_dda(np.float64(xs), s, np.float64(dy)))
            ok = (u0 <= target) & (u1 > target) if inc else (u0 > target) & (u1 <= target)
            if not ok.any():
                continue
            tg = target[ok]
            lo = np.zeros(len(tg), np.int64)
            hi = np.full(len(tg), dy, np.int64)
            while np.any(hi - lo > 1):
                mid = (lo + hi) >> 1
                u = _dda(np.float64(xs), s, mid.astype(np.float64))
                past = (u > tg) if inc else (u <= tg)
                active = hi - lo > 1
                hi = np.where(active & past, mid, hi)
                lo = np.where(active & ~past, mid, lo)
            vmin = ys + lo
            cols = columns[ok]
        yd = (vmin.astype(np.float64) + 0.5) / 5.0 - 0.5
        rows = np.ceil(np.clip(yd, 0.0, float(src_h))).astype(np.int64)
        out_c.append(cols)
        out_r.append(rows)
    if not out_c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_c), np.concatenate(out_r)


def toggles_to_output(
    col_idx: np.ndarray, src_rows: np.ndarray, table: np.ndarray, height: int, width: int
) -> np.ndarray:
    """The kernel's tile logic for one part: source toggles (column, row) → the (H, W) mask.

    Each output column X with ``cols[X] = c`` receives column c's toggles, mapped to output
    rows by the lower bound over the valid rows (``output_row`` in ``raster_common.cuh``);
    then a prefix XOR down the columns.
    """
    rows, cols, _, _, y0, y1 = split_table(table, height, width)
    valid_rows = rows[y0:y1]
    tog = np.zeros((height + 1, width), np.uint8)
    if len(col_idx):
        out_rows = y0 + np.searchsorted(valid_rows, src_rows, side="left")
        # group toggles by source column, then replicate to every output column showing it
        order = np.argsort(col_idx, kind="stable")
        col_sorted, out_sorted = col_idx[order], out_rows[order]
        for x in np.flatnonzero(cols >= 0):
            lo, hi = np.searchsorted(col_sorted, [cols[x], cols[x] + 1])
            if hi > lo:
                np.bitwise_xor.at(tog[:, x], np.minimum(out_sorted[lo:hi], height), 1)
    return (np.bitwise_xor.accumulate(tog[:height], axis=0) & 1).astype(np.uint8)


def rasterize_polygons_emulated(
    verts: np.ndarray,
    polys: np.ndarray,
    instances: np.ndarray,
    tables: np.ndarray,
    masks: np.ndarray,
    areas: np.ndarray,
    boxes: np.ndarray,
) -> None:
    """The CUDA kernel's algorithm, in NumPy (for CPU tests). Same arguments as the twin."""

    def draw(verts: np.ndarray, polys: np.ndarray, table: np.ndarray, h: int, w: int) -> np.ndarray:
        _, cols, src_h, src_w, _, _ = split_table(table, h, w)
        columns = np.unique(cols[(cols >= 0) & (cols < src_w)])
        union = np.zeros((h, w), np.uint8)
        for a, b in polys.tolist():
            c, r = polygon_column_toggles(verts[a:b], columns, src_h)
            union |= toggles_to_output(c, r, table, h, w)
        return union

    _fill_on_host(verts, polys, instances, tables, masks, areas, boxes, draw)
