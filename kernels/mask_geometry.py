"""The copy-paste pipeline's per-sample geometry on the host, exactly as DALI 2.4 applies it.

The images go through ``fn.resize(resize_longer=r·S)`` → ``fn.crop(S×S, crop_pos, pad)`` →
``fn.flip(horizontal)``. The GPU mask path never resizes a mask: it rasterises each instance
straight into the S×S output (``rasterize_polygons``, ``rle_decode``). For that it needs, per
sample, which *source* pixel every output pixel shows. This module computes it the way DALI's
CPU operators do (nearest neighbour), so the GPU masks are bit-identical to what the CPU path
(pycocotools at the original size, then DALI's NN resize, crop and flip) produces.

What DALI 2.4 does, read from its sources (``resize_attr_base.cc`` ``AdjustOutputSize`` /
``CalculateSampleParams``, ``resampling_setup.cc``, ``resampling_impl_cpu.h`` ``ResampleNN``)
and checked pixel by pixel against the CPU operators in ``tests/test_rasterize.py``:

* **Output size** (``resize_longer = L``, mode "not_larger"): per axis ``s_d = L / in_d`` in
  float32; ``final = min_d s_d``; the axis whose scale equals ``final`` gets ``out = L``, the
  other ``out = float32(in · final)``; the integer size is ``max(1, round(out))``, rounding half
  away from zero (``L`` itself is ``float32(float32(r) · float32(S))``, DALI's arithmetic on a
  float32 DataNode and a Python float).
* **ROI** (``subpixel_scale=True``, the default): when the rounded size differs from the
  fractional one, the source ROI ``[0, in]`` is scaled about its centre by
  ``adj = size / out`` so that the scale factor is kept: ``lo = c - c·adj``, ``hi = c + c·adj``
  (``c = in / 2``, double arithmetic stored to float32).
* **Nearest neighbour** (CPU): ``scale = float32((hi - lo) / size)``; output column ``x``
  samples source column ``floor(lo + (x + 0.5) · scale)`` (float32, no FMA); output row ``y``
  samples ``floor(sy_y)`` with ``sy_0 = lo + 0.5 · scale`` and ``sy_{y+1} = sy_y + scale``
  *accumulated* in float32; both clamped to ``[0, in - 1]``. The pixel-centre convention: the
  centre of output pixel ``i`` (at ``i + 0.5``) maps to ``lo + (i + 0.5) · scale`` in source
  coordinates, whose pixel ``j`` covers ``[j, j + 1)``.
* **Crop** (``out_of_bounds_policy="pad"``): the window's anchor is
  ``round(float32(crop_pos) · float32(size - S))``, rounding half away from zero (negative when
  the resized image is smaller than the window: then it is padded).
* **Flip**: output column ``X`` shows window column ``S - 1 - X``.

Where a ``floor`` above lands exactly on an integer in exact arithmetic (a pixel centre that
maps onto a source pixel boundary, e.g. the middle row of an odd-sized output), the answer is a
float rounding artefact and DALI's CPU and GPU resize kernels can disagree with each other
(the GPU evaluates ``fma(y, scale, lo + 0.5·scale)``). decal reproduces the CPU operator, on
both of its backends, so the CPU and GPU pipelines of decal agree exactly.

The *subpixel* alternative (:func:`transform_points`) maps polygon vertices continuously into
the output window, to rasterise them at the output resolution (sharper edges when upscaling);
it agrees with the NN geometry except on edge pixels (see ``rasterize_polygons``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ResizeGeometry",
    "SampleGeometry",
    "resize_longer",
    "resize_to",
    "crop_anchor",
    "sample_geometry",
    "placed_geometry",
    "batch_geometry",
    "source_columns",
    "source_rows",
    "index_tables",
    "apply_geometry",
    "transform_points",
]

_F32 = np.float32


def _round_half_away(x: float) -> int:
    """C ``roundf``/``lround``: nearest integer, halves away from zero (``x`` exact in float64)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


@dataclass(frozen=True)
class ResizeGeometry:
    """DALI's resize of one axis: ``size`` output pixels sampling the source ROI [lo, hi)."""

    in_size: int
    size: int
    lo: float  # float32 value
    scale: float  # float32 value: source pixels per output pixel


def resize_longer(height: int, width: int, longer: float) -> tuple[ResizeGeometry, ResizeGeometry]:
    """(rows, columns) geometry of ``fn.resize(resize_longer=longer)`` on a height×width image.

    ``longer`` must be the float32 value DALI sees (see the module docstring).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    requested = _F32(longer)
    if not requested > 0:
        raise ValueError(f"resize_longer must be > 0, got {longer}")
    in_sizes = (_F32(height), _F32(width))
    scales = [_F32(requested / n) for n in in_sizes]  # float / float in float32
    final = min(scales)
    axes = []
    for n, s in zip(in_sizes, scales):
        out = requested if s == final else _F32(np.float64(n) * np.float64(final))
        size = max(1, _round_half_away(float(out)))
        lo, hi = _F32(0.0), _F32(n)
        if size != float(out):
            adj = min(max(size / float(out), -10.0), 10.0)
            center = float(_F32(lo + hi)) * 0.5
            lo = _F32(center + (float(lo) - center) * adj)
            hi = _F32(center + (float(hi) - center) * adj)
        scale = _F32(_F32(hi - lo) / _F32(size))
        axes.append(ResizeGeometry(int(n), size, float(lo), float(scale)))
    return axes[0], axes[1]


def resize_to(height: int, width: int, out_h: int, out_w: int) -> tuple[ResizeGeometry, ResizeGeometry]:
    """(rows, columns) geometry of ``fn.resize(size=(out_h, out_w))`` on a height×width image.

    Both output sides are given as whole numbers (the mosaic's planned tile sizes), so DALI
    keeps them as they are and its ROI is the whole image: ``lo = 0``, ``scale = float32(in) /
    float32(out)`` source pixels per output pixel (:func:`resize_longer`'s arithmetic without
    the rounding adjustment).
    """
    if min(height, width, out_h, out_w) < 1:
        raise ValueError(f"image and output sizes must be positive, got {height}x{width} -> {out_h}x{out_w}")
    return tuple(
        ResizeGeometry(int(n), int(size), 0.0, float(_F32(_F32(n) / _F32(size))))
        for n, size in ((height, out_h), (width, out_w))
    )  # type: ignore[return-value]


def crop_anchor(crop_pos: float, size: int, window: int) -> int:
    """Anchor of ``fn.crop``'s window in a ``size``-pixel axis (may be negative: padding)."""
    raw = _F32(crop_pos) * _F32(size - window)  # float32 product, exact in float64
    return _round_half_away(float(raw))


@dataclass(frozen=True)
class SampleGeometry:
    """Everything the mask path needs to know about one sample's geometry.

    Attributes:
        rows, cols: the resize of each axis (:class:`ResizeGeometry`).
        anchor_y, anchor_x: the crop window's top-left corner in the resized image.
        out_h, out_w: the window (output) size.
        flip: horizontal flip after the crop.
    """

    rows: ResizeGeometry
    cols: ResizeGeometry
    anchor_y: int
    anchor_x: int
    out_h: int
    out_w: int
    flip: bool

    @property
    def src_h(self) -> int:
        return self.rows.in_size

    @property
    def src_w(self) -> int:
        return self.cols.in_size


def sample_geometry(
    height: int, width: int, scale: float, crop_x: float, crop_y: float, flip: int | bool, output_size: int
) -> SampleGeometry:
    """The geometry the copy-paste pipeline applies to one sample (``scale_jitter`` draws)."""
    longer = _F32(_F32(scale) * _F32(float(output_size)))
    rows, cols = resize_longer(height, width, float(longer))
    return SampleGeometry(
        rows=rows,
        cols=cols,
        anchor_y=crop_anchor(crop_y, rows.size, output_size),
        anchor_x=crop_anchor(crop_x, cols.size, output_size),
        out_h=output_size,
        out_w=output_size,
        flip=bool(flip),
    )


def placed_geometry(
    height: int, width: int, size: tuple[int, int], anchor: tuple[int, int], output_size: int, flip: int | bool
) -> SampleGeometry:
    """An image resized to exactly ``size`` (h, w) (:func:`resize_to`) and shown in an S×S
    canvas whose pixel (y, x) is the resized pixel (y + anchor_y, x + anchor_x) where that
    exists (empty elsewhere), the canvas then flipped horizontally when ``flip``.

    This is how a mosaic tile lands on its canvas: a tile placed at canvas ``(out_y, out_x)``
    showing its part from ``(in_y, in_x)`` has ``anchor = (in_y - out_y, in_x - out_x)``; the
    window's valid rows and columns are the tile's region clipped to the canvas.
    """
    rows, cols = resize_to(height, width, int(size[0]), int(size[1]))
    return SampleGeometry(
        rows=rows, cols=cols, anchor_y=int(anchor[0]), anchor_x=int(anchor[1]),
        out_h=int(output_size), out_w=int(output_size), flip=bool(flip),
    )  # fmt: skip


def batch_geometry(
    sizes: list[tuple[int, int]], scale, crop_x, crop_y, flip, output_size: int
) -> list[SampleGeometry]:
    """:func:`sample_geometry` for each (height, width) of a batch."""
    return [
        sample_geometry(h, w, scale[i], crop_x[i], crop_y[i], flip[i], output_size)
        for i, (h, w) in enumerate(sizes)
    ]


def _nn_columns(axis: ResizeGeometry, x: np.ndarray | None = None) -> np.ndarray:
    """Source index of each resized column ``x`` (default: all of them, ``0 … size-1``):
    ``floor(lo + (x + 0.5) · scale)`` in float32, element by element."""
    x = np.arange(axis.size, dtype=_F32) if x is None else x.astype(_F32)
    with np.errstate(over="ignore"):
        src = _F32(axis.lo) + (x + _F32(0.5)) * _F32(axis.scale)
    return np.clip(np.floor(src), 0, axis.in_size - 1).astype(np.int32)


def _nn_rows(axis: ResizeGeometry, count: int | None = None) -> np.ndarray:
    """Source index of the first ``count`` resized rows (default: all ``size``): the float32
    running sum of DALI's CPU kernel (a prefix: row k never depends on a later row)."""
    count = axis.size if count is None else count
    steps = np.full(count, _F32(axis.scale), dtype=_F32)
    if count:
        steps[0] = _F32(_F32(axis.lo) + _F32(_F32(0.5) * _F32(axis.scale)))
    src = np.cumsum(steps, dtype=_F32)  # np.add.accumulate: sequential float32 additions
    return np.clip(np.floor(src), 0, axis.in_size - 1).astype(np.int32)


def _window_span(size: int, anchor: int, window: int) -> tuple[int, int]:
    """The output positions ``[a, b)`` of a ``window`` at ``anchor`` that show one of ``size``
    resized pixels (``a == b`` when none do)."""
    a, b = max(0, -anchor), min(window, size - anchor)
    return a, max(a, b)


def source_columns(g: SampleGeometry) -> np.ndarray:
    """(out_w,) int32: the source column shown by each output column, -1 where padded.
    Only the window's columns are computed (the same values as over the whole resized row)."""
    a, b = _window_span(g.cols.size, g.anchor_x, g.out_w)
    cols = np.full(g.out_w, -1, dtype=np.int32)
    cols[a:b] = _nn_columns(g.cols, np.arange(a + g.anchor_x, b + g.anchor_x))
    return cols[::-1].copy() if g.flip else cols


def source_rows(g: SampleGeometry) -> np.ndarray:
    """(out_h,) int32: the source row shown by each output row, -1 where padded. The valid
    rows form one contiguous run, along which the source row never decreases. The running
    sum stops at the window's last row."""
    a, b = _window_span(g.rows.size, g.anchor_y, g.out_h)
    rows = np.full(g.out_h, -1, dtype=np.int32)
    rows[a:b] = _nn_rows(g.rows, b + g.anchor_y)[a + g.anchor_y :]
    return rows


def index_tables(geometries: list[SampleGeometry]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column tables of a batch: ((B, out_h) int32, (B, out_w) int32), -1 = padding.

    All samples must share the output size (the pipeline's S×S).
    """
    if not geometries:
        return np.zeros((0, 0), np.int32), np.zeros((0, 0), np.int32)
    shapes = {(g.out_h, g.out_w) for g in geometries}
    if len(shapes) != 1:
        raise ValueError(f"samples of a batch must share the output size, got {sorted(shapes)}")
    rows = np.stack([source_rows(g) for g in geometries])
    cols = np.stack([source_columns(g) for g in geometries])
    return rows, cols


def apply_geometry(masks: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resize + crop/pad + flip of source-size masks through the tables.

    Args:
        masks: (N, h, w) masks at the source size (any dtype).
        rows: (out_h,) int32 from :func:`source_rows`; cols: (out_w,) from
            :func:`source_columns`.

    Returns:
        (N, out_h, out_w) of the masks' dtype, zero where padded. This is the twin of DALI's
        ``resize(INTERP_NN)`` → ``crop(pad, fill 0)`` → ``flip`` on a mask tensor.
    """
    masks = np.asarray(masks)
    out = np.zeros((masks.shape[0], len(rows), len(cols)), dtype=masks.dtype)
    vr, vc = rows >= 0, cols >= 0
    if masks.shape[0] and vr.any() and vc.any():
        out[:, np.flatnonzero(vr)[:, None], np.flatnonzero(vc)[None, :]] = masks[
            :, rows[vr][:, None], cols[vc][None, :]
        ]
    return out


def transform_points(xy: np.ndarray, g: SampleGeometry) -> np.ndarray:
    """Map source-pixel coordinates (K, 2) ``(x, y)`` continuously into the output window.

    The continuous version of the NN mapping: source coordinate ``lo + u · scale`` sits at
    resized coordinate ``u``, then the window anchor is subtracted and ``x`` mirrored about
    the window (``x → out_w - x``). float64. Used by the *subpixel* rasterisation mode.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(xy)
    out[:, 0] = (xy[:, 0] - g.cols.lo) / g.cols.scale - g.anchor_x
    out[:, 1] = (xy[:, 1] - g.rows.lo) / g.rows.scale - g.anchor_y
    if g.flip:
        out[:, 0] = g.out_w - out[:, 0]
    return out
