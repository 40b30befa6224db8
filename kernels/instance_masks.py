"""A batch's per-instance masks as compact descriptors, and their rasterisation at the output
size (the GPU mask path of the copy-paste pipeline).

Instead of H×W×N mask stacks, the host describes a batch with a few small int32 arrays
(:class:`MaskDescriptors`): polygon vertices on pycocotools' 5× grid, RLE toggle positions, and
one geometry table per sample (which source pixel every output row / column shows, see
:mod:`.mask_geometry`). :func:`rasterize_instances` turns them into the (M, S, S) uint8 masks
plus their areas and tight boxes: on the GPU with two launches per batch
(:mod:`.rasterize_polygons`, :mod:`.rle_decode`; the second only when the batch holds RLE
instances), on the CPU with the pycocotools twins.

Bytes on the wire for a 64-image batch at 1024² with ~15 polygon instances of ~25 vertices per
image: vertices 64·15·25·8 B ≈ 0.2 MB plus the geometry tables 64·(2·1024 + 4)·4 B ≈ 0.5 MB,
where the default pipeline sends every mask at its original size (~0.26 GiB per batch of the
benchmark's data, ``bench/RESULTS.md``) and resizes ~1 GiB of uint8 planes on the device.

Instances are given per sample as a list of ``("poly", [xy, ...])`` (each ``xy`` a (K, 2) or
flat float array of source-pixel coordinates, K >= 3; the object is the union of its polygons)
or ``("rle", toggles)`` (:func:`~decal.kernels.rle_decode.toggles_from_counts` at the source
size). Every instance gets exactly one output row, in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from . import _cuda
from .mask_geometry import SampleGeometry, source_columns, source_rows, transform_points
from .rasterize_polygons import rasterize_polygons, upsample_vertices
from .rle_decode import rle_decode

__all__ = [
    "MaskDescriptors",
    "geometry_table",
    "subpixel_table",
    "build_descriptors",
    "rasterize_instances",
    "ARRAY_FIELDS",
]

#: The array fields of :class:`MaskDescriptors`, in their wire order.
ARRAY_FIELDS = ("tables", "verts", "polys", "poly_instances", "toggles", "rle_instances")


@dataclass(frozen=True)
class MaskDescriptors:
    """Everything the rasterisers need for one batch (NumPy on the host, CuPy on the device).

    Attributes:
        height, width: the output size (H, W).
        num_instances: M, the number of output rows.
        tables: (T, H + W + 4) int32 geometry tables (:func:`geometry_table`).
        verts: (V, 2) int32 polygon vertices on the 5× grid.
        polys: (NP, 2) int32 [vertex begin, end) of each polygon.
        poly_instances: (IP, 4) int32 [polygon begin, end, output row, table].
        toggles: (Q,) int32 RLE toggle positions (source-size, column-major).
        rle_instances: (IR, 4) int32 [toggle begin, end, output row, table].
    """

    height: int
    width: int
    num_instances: int
    tables: Any
    verts: Any
    polys: Any
    poly_instances: Any
    toggles: Any
    rle_instances: Any

    def to_device(self) -> "MaskDescriptors":
        """The same descriptors on the current CUDA device: one host-to-device copy."""
        import cupy

        host = [np.ascontiguousarray(getattr(self, f), dtype=np.int32) for f in ARRAY_FIELDS]
        flat = np.concatenate([a.reshape(-1) for a in host]) if host else np.zeros(0, np.int32)
        dev = cupy.asarray(flat)
        out, start = {}, 0
        for name, a in zip(ARRAY_FIELDS, host):
            out[name] = dev[start : start + a.size].reshape(a.shape)
            start += a.size
        return replace(self, **out)

    @classmethod
    def concatenate(cls, parts: Sequence[dict[str, Any]], height: int, width: int, num_instances: int) -> "MaskDescriptors":
        """Join per-sample pieces (dicts of the :data:`ARRAY_FIELDS`, global offsets already
        applied, as :func:`build_descriptors` splits them) back into one batch."""
        xp = _cuda.get_array_module(parts[0]["tables"]) if parts else np
        joined = {}
        for name in ARRAY_FIELDS:
            arrays = [p[name] for p in parts]
            joined[name] = xp.concatenate(arrays) if arrays else np.zeros((0,) + _TAIL[name], np.int32)
        return cls(height=height, width=width, num_instances=num_instances, **joined)

    @classmethod
    def from_columns(
        cls, columns: Sequence[Sequence[Any]], height: int, width: int, num_instances: int
    ) -> "MaskDescriptors":
        """The batch of a step's six descriptor inputs: ``columns`` holds, in
        :data:`ARRAY_FIELDS` order, one list of B per-sample pieces each (as a source's
        columns deliver them, global offsets already applied)."""
        if len(columns) != len(ARRAY_FIELDS):
            raise ValueError(f"expected the {len(ARRAY_FIELDS)} columns {ARRAY_FIELDS}, got {len(columns)}")
        parts = [dict(zip(ARRAY_FIELDS, sample)) for sample in zip(*columns)]
        return cls.concatenate(parts, height, width, num_instances)

    def split(self, bounds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Per-sample pieces: ``bounds[name]`` (B + 1,) offsets along each array's first axis."""
        n = len(bounds["tables"]) - 1
        return [
            {name: getattr(self, name)[bounds[name][b] : bounds[name][b + 1]] for name in ARRAY_FIELDS}
            for b in range(n)
        ]


_TAIL = {"tables": (0,), "verts": (2,), "polys": (2,), "poly_instances": (4,), "toggles": (), "rle_instances": (4,)}


def geometry_table(rows: np.ndarray, cols: np.ndarray, src_h: int, src_w: int) -> np.ndarray:
    """One geometry table row: ``rows | cols | src_h, src_w, y0, y1`` (int32).

    ``rows`` (H,) / ``cols`` (W,) are :func:`~decal.kernels.mask_geometry.source_rows` /
    :func:`~decal.kernels.mask_geometry.source_columns` (-1 = padding); ``[y0, y1)`` is the run
    of valid rows (``y0 = y1 = 0`` when none).
    """
    rows = np.asarray(rows, dtype=np.int32)
    cols = np.asarray(cols, dtype=np.int32)
    valid = np.flatnonzero(rows >= 0)
    y0, y1 = (int(valid[0]), int(valid[-1]) + 1) if len(valid) else (0, 0)
    if len(valid) and (len(valid) != y1 - y0 or np.any(np.diff(rows[y0:y1]) < 0)):
        raise ValueError("valid rows must be one contiguous, non-decreasing run")
    return np.concatenate([rows, cols, np.array([src_h, src_w, y0, y1], np.int32)]).astype(np.int32)


def subpixel_table(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The identity table of the output window (for polygons already mapped into it by
    :func:`~decal.kernels.mask_geometry.transform_points`), restricted to the valid pixels of
    ``rows``/``cols``: padding stays empty."""
    h, w = len(rows), len(cols)
    r = np.where(np.asarray(rows) >= 0, np.arange(h), -1)
    c = np.where(np.asarray(cols) >= 0, np.arange(w), -1)
    return geometry_table(r, c, h, w)


def build_descriptors(
    samples: Sequence[Sequence[tuple[str, Any]]],
    geometries: Sequence[SampleGeometry],
    *,
    subpixel: bool = False,
) -> tuple[MaskDescriptors, dict[str, np.ndarray]]:
    """Descriptors of a batch (host NumPy) and the per-sample bounds of each array.

    Args:
        samples: per sample, its instances (see the module docstring).
        geometries: per sample, its :class:`~decal.kernels.mask_geometry.SampleGeometry`.
        subpixel: rasterise polygons at the output resolution (transformed vertices) instead of
            reproducing pycocotools-then-nearest-neighbour exactly (RLE is always the latter).

    Returns:
        ``(descriptors, bounds)``; ``bounds[name]`` is the (B + 1,) int64 offsets of each
        sample's rows in array ``name`` (for :meth:`MaskDescriptors.split`).
    """
    if len(samples) != len(geometries):
        raise ValueError(f"{len(samples)} samples but {len(geometries)} geometries")
    if not geometries:
        raise ValueError("a batch needs at least one sample")
    height, width = geometries[0].out_h, geometries[0].out_w
    tables, verts, polys, pinst, toggles, rinst = [], [], [], [], [], []
    counts = {name: [] for name in ARRAY_FIELDS}
    n_verts = n_polys = n_toggles = n_tables = row = 0
    for instances, g in zip(samples, geometries):
        if (g.out_h, g.out_w) != (height, width):
            raise ValueError("samples of a batch must share the output size")
        rows, cols = source_rows(g), source_columns(g)
        t_nn = n_tables
        sample_tables = [geometry_table(rows, cols, g.src_h, g.src_w)]
        if subpixel:
            sample_tables.append(subpixel_table(rows, cols))
        t_poly = t_nn + (1 if subpixel else 0)
        n_tables += len(sample_tables)
        tables.extend(sample_tables)
        c = dict.fromkeys(ARRAY_FIELDS, 0)
        c["tables"] = len(sample_tables)
        for kind, data in instances:
            if kind == "poly":
                p_begin = n_polys
                for xy in data:
                    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
                    if len(xy) < 3:
                        raise ValueError(f"a polygon needs at least 3 vertices, got {len(xy)}")
                    up = upsample_vertices(transform_points(xy, g) if subpixel else xy)
                    verts.append(up)
                    polys.append((n_verts, n_verts + len(up)))
                    n_verts += len(up)
                    n_polys += 1
                    c["verts"] += len(up)
                    c["polys"] += 1
                pinst.append((p_begin, n_polys, row, t_poly))
                c["poly_instances"] += 1
            elif kind == "rle":
                q = np.asarray(data, dtype=np.int32).reshape(-1)
                if len(q) and (np.any(np.diff(q) < 0) or q[0] < 0 or q[-1] > g.src_h * g.src_w):
                    raise ValueError("RLE toggles must be ascending positions within the source mask")
                toggles.append(q)
                rinst.append((n_toggles, n_toggles + len(q), row, t_nn))
                n_toggles += len(q)
                c["toggles"] += len(q)
                c["rle_instances"] += 1
            else:
                raise ValueError(f"instance kind must be 'poly' or 'rle', got {kind!r}")
            row += 1
        for name in ARRAY_FIELDS:
            counts[name].append(c[name])

    desc = MaskDescriptors(
        height=height,
        width=width,
        num_instances=row,
        tables=np.stack(tables).astype(np.int32),
        verts=np.concatenate(verts).astype(np.int32) if verts else np.zeros((0, 2), np.int32),
        polys=np.asarray(polys, dtype=np.int32).reshape(-1, 2),
        poly_instances=np.asarray(pinst, dtype=np.int32).reshape(-1, 4),
        toggles=np.concatenate(toggles).astype(np.int32) if toggles else np.zeros(0, np.int32),
        rle_instances=np.asarray(rinst, dtype=np.int32).reshape(-1, 4),
    )
    bounds = {name: np.concatenate([[0], np.cumsum(counts[name])]).astype(np.int64) for name in ARRAY_FIELDS}
    return desc, bounds


def rasterize_instances(desc: MaskDescriptors) -> tuple[Any, Any, Any]:
    """(masks (M, H, W) uint8, areas (M,) int64, boxes (M, 4) float32) of a batch.

    On the device of ``desc.tables``: CuPy arrays run the two kernels (outputs allocated with
    :func:`~decal.kernels._cuda.empty`, so poisoned under ``DECAL_POISON=1``: every row must be
    written by one of them), NumPy arrays the pycocotools twins.
    """
    m, h, w = desc.num_instances, desc.height, desc.width
    if _cuda.is_cupy_array(desc.tables):
        import cupy

        masks = _cuda.empty((m, h, w), cupy.uint8)
        areas = _cuda.empty((m,), cupy.int64)
        boxes = _cuda.empty((m, 4), cupy.float32)
    else:
        masks = np.zeros((m, h, w), np.uint8)
        areas = np.zeros(m, np.int64)
        boxes = np.zeros((m, 4), np.float32)
    if m == 0:
        return masks, areas, boxes
    if desc.poly_instances.shape[0]:
        rasterize_polygons(desc.verts, desc.polys, desc.poly_instances, desc.tables, masks, areas, boxes)
    if desc.rle_instances.shape[0]:
        rle_decode(desc.toggles, desc.rle_instances, desc.tables, masks, areas, boxes)
    return masks, areas, boxes
