"""A whole batch's mask geometry and geometry tables in a few vectorised NumPy passes.

:mod:`decal.kernels.mask_geometry` is the specification: one sample at a time, in plain
scalar arithmetic (:func:`~decal.kernels.mask_geometry.sample_geometry`,
:func:`~decal.kernels.mask_geometry.placed_geometry`,
:func:`~decal.kernels.mask_geometry.source_rows`,
:func:`~decal.kernels.mask_geometry.source_columns`) and
:func:`~decal.kernels.instance_masks.geometry_table` /
:func:`~decal.kernels.instance_masks.subpixel_table`. A descriptor source needs K of them per
batch (K = B for copy-paste, 4·B tiles for mosaic, placeholder tiles included); building them
one by one in Python is what capped its host side. This module does the same arithmetic on
(K,) arrays, in the same float32 / float64 steps and the same order (float32 products and
quotients, DALI's float32 running sum for the rows, rounding half away from zero), so every
table is bit-identical to the per-sample one (``tests/test_geometry_batch.py`` checks it on
random inputs, exact rounding ties included). The tables are assembled from per-axis lookups
(resized pixel → source pixel, :mod:`decal.kernels.axis_lookup`), each distinct axis computed
once and memoised, so a batch whose axes were seen before (mosaic tiles without scale jitter)
makes no float arithmetic at all: its tables are one gather per axis from the memo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .axis_lookup import AxisLookups
from .mask_geometry import ResizeGeometry, SampleGeometry

__all__ = ["GeometryBatch", "jitter_geometries", "placed_geometries", "geometry_tables"]

_F32 = np.float32


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Element-wise C ``roundf``: nearest integer, halves away from zero; (K,) int64.
    ``x`` holds float32 values, exact in float64."""
    x = np.asarray(x, dtype=np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


@dataclass(frozen=True)
class GeometryBatch:
    """K samples' :class:`~decal.kernels.mask_geometry.SampleGeometry`, as (K,) arrays.

    Attributes:
        src_h, src_w: int64 source sizes (pixels).
        size_h, size_w: int64 resized sizes (pixels).
        lo_y, lo_x: float32 start of the source ROI (source pixels).
        scale_y, scale_x: float32 source pixels per resized pixel.
        anchor_y, anchor_x: int64 window corner in the resized image (negative: padding).
        flip: bool horizontal flip after the window.
        out_h, out_w: the window (output) size shared by the batch, pixels.
    """

    src_h: np.ndarray
    src_w: np.ndarray
    size_h: np.ndarray
    size_w: np.ndarray
    lo_y: np.ndarray
    lo_x: np.ndarray
    scale_y: np.ndarray
    scale_x: np.ndarray
    anchor_y: np.ndarray
    anchor_x: np.ndarray
    flip: np.ndarray
    out_h: int
    out_w: int

    def __len__(self) -> int:
        return len(self.src_h)

    @classmethod
    def from_samples(cls, geometries: Sequence[SampleGeometry]) -> "GeometryBatch":
        """The batch of per-sample geometries, which must share the output size (ValueError)."""
        if not geometries:
            raise ValueError("a batch needs at least one sample")
        out_h, out_w = geometries[0].out_h, geometries[0].out_w
        if any((g.out_h, g.out_w) != (out_h, out_w) for g in geometries):
            raise ValueError("samples of a batch must share the output size")

        def column(get, dtype) -> np.ndarray:
            return np.array([get(g) for g in geometries], dtype=dtype)

        return cls(
            src_h=column(lambda g: g.rows.in_size, np.int64), src_w=column(lambda g: g.cols.in_size, np.int64),
            size_h=column(lambda g: g.rows.size, np.int64), size_w=column(lambda g: g.cols.size, np.int64),
            lo_y=column(lambda g: g.rows.lo, _F32), lo_x=column(lambda g: g.cols.lo, _F32),
            scale_y=column(lambda g: g.rows.scale, _F32), scale_x=column(lambda g: g.cols.scale, _F32),
            anchor_y=column(lambda g: g.anchor_y, np.int64), anchor_x=column(lambda g: g.anchor_x, np.int64),
            flip=column(lambda g: g.flip, bool), out_h=int(out_h), out_w=int(out_w),
        )  # fmt: skip

    def sample(self, k: int) -> SampleGeometry:
        """Sample ``k`` as a :class:`~decal.kernels.mask_geometry.SampleGeometry`."""
        return SampleGeometry(
            rows=ResizeGeometry(int(self.src_h[k]), int(self.size_h[k]), float(self.lo_y[k]), float(self.scale_y[k])),
            cols=ResizeGeometry(int(self.src_w[k]), int(self.size_w[k]), float(self.lo_x[k]), float(self.scale_x[k])),
            anchor_y=int(self.anchor_y[k]), anchor_x=int(self.anchor_x[k]),
            out_h=self.out_h, out_w=self.out_w, flip=bool(self.flip[k]),
        )  # fmt: skip


def _sizes(*sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(s, dtype=np.int64).reshape(-1) for s in sizes)
    if any(len(a) != len(arrays[0]) for a in arrays):
        raise ValueError(f"per-sample arrays differ in length: {[len(a) for a in arrays]}")
    if any(len(a) and a.min() < 1 for a in arrays):
        raise ValueError("image and output sizes must be positive")
    return arrays


def _resize_longer(n: np.ndarray, other: np.ndarray, longer: np.ndarray) -> tuple[np.ndarray, ...]:
    """One axis (``n``, the other axis ``other``) of ``resize_longer`` for K samples:
    (size int64, lo float32, scale float32), as :func:`~decal.kernels.mask_geometry.resize_longer`."""
    n32, other32 = n.astype(_F32), other.astype(_F32)
    s = longer / n32  # float32 quotients
    final = np.minimum(s, longer / other32)
    out = np.where(s == final, longer, (n32.astype(np.float64) * final.astype(np.float64)).astype(_F32))
    out64 = out.astype(np.float64)
    size = np.maximum(1, _round_half_away(out64))
    adjust = size != out64
    adj = np.clip(size / out64, -10.0, 10.0)
    center = n32.astype(np.float64) * 0.5  # float32(0 + n) · 0.5
    lo = np.where(adjust, (center + (0.0 - center) * adj).astype(_F32), _F32(0.0))
    hi = np.where(adjust, (center + (n32.astype(np.float64) - center) * adj).astype(_F32), n32)
    scale = (hi - lo) / size.astype(_F32)  # float32 difference, float32 quotient
    return size, lo.astype(_F32), scale.astype(_F32)


def _crop_anchor(crop_pos: np.ndarray, size: np.ndarray, window: int) -> np.ndarray:
    """:func:`~decal.kernels.mask_geometry.crop_anchor` for K samples: (K,) int64."""
    raw = np.asarray(crop_pos).astype(_F32) * (size - window).astype(_F32)
    return _round_half_away(raw)


def jitter_geometries(
    heights: np.ndarray, widths: np.ndarray, scale: np.ndarray, crop_x: np.ndarray, crop_y: np.ndarray,
    flip: np.ndarray, output_size: int,
) -> GeometryBatch:  # fmt: skip
    """:func:`~decal.kernels.mask_geometry.sample_geometry` of K samples at once.

    Args:
        heights, widths: (K,) source sizes, pixels (>= 1).
        scale, crop_x, crop_y: (K,) scale-jitter draws (any float dtype; used as float32).
        flip: (K,) horizontal flips (0/1 or bool).
        output_size: S, the square window.
    """
    output_size = int(output_size)
    (h, w) = _sizes(heights, widths)
    if output_size < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    longer = np.asarray(scale).reshape(-1).astype(_F32) * _F32(float(output_size))
    if len(longer) != len(h):
        raise ValueError(f"{len(h)} sizes but {len(longer)} scales")
    if len(longer) and not np.all(longer > 0):
        raise ValueError("resize_longer must be > 0")
    size_h, lo_y, scale_y = _resize_longer(h, w, longer)
    size_w, lo_x, scale_x = _resize_longer(w, h, longer)
    return GeometryBatch(
        src_h=h, src_w=w, size_h=size_h, size_w=size_w, lo_y=lo_y, lo_x=lo_x, scale_y=scale_y, scale_x=scale_x,
        anchor_y=_crop_anchor(np.asarray(crop_y).reshape(-1), size_h, output_size),
        anchor_x=_crop_anchor(np.asarray(crop_x).reshape(-1), size_w, output_size),
        flip=np.asarray(flip).reshape(-1).astype(bool), out_h=output_size, out_w=output_size,
    )  # fmt: skip


def placed_geometries(
    heights: np.ndarray, widths: np.ndarray, sizes: np.ndarray, anchors: np.ndarray, output_size: int, flips: np.ndarray
) -> GeometryBatch:
    """:func:`~decal.kernels.mask_geometry.placed_geometry` of K images at once.

    Args:
        heights, widths: (K,) source sizes, pixels (>= 1).
        sizes: (K, 2) resized (h, w), pixels (>= 1); anchors: (K, 2) (y, x) window corner in
            the resized image; flips: (K,).
        output_size: S, the square canvas.
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.int64).reshape(-1, 2)
    h, w, size_h, size_w = _sizes(heights, widths, sizes[:, 0], sizes[:, 1])
    return GeometryBatch(
        src_h=h, src_w=w, size_h=size_h, size_w=size_w,
        lo_y=np.zeros(len(h), _F32), lo_x=np.zeros(len(h), _F32),
        scale_y=h.astype(_F32) / size_h.astype(_F32), scale_x=w.astype(_F32) / size_w.astype(_F32),
        anchor_y=anchors[:, 0].copy(), anchor_x=anchors[:, 1].copy(),
        flip=np.asarray(flips).reshape(-1).astype(bool), out_h=int(output_size), out_w=int(output_size),
    )  # fmt: skip


def _spans(size: np.ndarray, anchor: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the window positions [a, b) that show a resized pixel (a == b: none)."""
    a = np.maximum(0, -anchor)
    return a, np.maximum(a, np.minimum(window, size - anchor))


#: The memos of row and column lookups every :func:`geometry_tables` call shares (per process).
ROW_LOOKUPS = AxisLookups(running=True)
COLUMN_LOOKUPS = AxisLookups(running=False)


def geometry_tables(g: GeometryBatch, *, subpixel: bool = False) -> np.ndarray:
    """The geometry tables of K samples: (K, out_h + out_w + 4) int32, row k equal to
    ``geometry_table(source_rows(g_k), source_columns(g_k), src_h, src_w)``; with
    ``subpixel`` (2·K, ...) with each sample's ``subpixel_table`` right after its own
    (:mod:`decal.kernels.instance_masks` gives the layout).

    Each distinct axis (source size, resized size, ROI start, scale) is computed once and
    memoised (:class:`~decal.kernels.axis_lookup.AxisLookups`); the windows of all K samples
    are then one gather per axis, and the flipped samples' columns one reversed copy."""
    k, h, w = len(g), g.out_h, g.out_w
    rows = ROW_LOOKUPS.windows(g.src_h, g.size_h, g.lo_y, g.scale_y, g.anchor_y, h)
    cols = COLUMN_LOOKUPS.windows(g.src_w, g.size_w, g.lo_x, g.scale_x, g.anchor_x, w)
    flipped = np.flatnonzero(g.flip)
    cols[flipped] = cols[flipped, ::-1]
    y0, y1 = _spans(g.size_h, g.anchor_y, h)
    some = y1 > y0
    y0, y1 = np.where(some, y0, 0), np.where(some, y1, 0)
    nn = np.concatenate([rows, cols, np.stack([g.src_h, g.src_w, y0, y1], axis=1).astype(np.int32)], axis=1)
    if not subpixel:
        return nn
    sub = np.empty_like(nn)
    sub[:, :h] = np.where(rows >= 0, np.arange(h, dtype=np.int32), -1)
    sub[:, h : h + w] = np.where(cols >= 0, np.arange(w, dtype=np.int32), -1)
    sub[:, -4:] = np.stack([np.full(k, h), np.full(k, w), y0, y1], axis=1)
    return np.stack([nn, sub], axis=1).reshape(2 * k, h + w + 4)
