"""The batched geometry path (``kernels/geometry_batch.py``) against the per-sample
specification (``kernels/mask_geometry.py``, ``geometry_table``/``subpixel_table``), table
for table, on random inputs: source sizes 1..4000, LSJ scales 0.1–2.0 (and beyond), crops
and pads, flips, odd output sizes, exact ties of DALI's rounding, mosaic tiles hanging off or
outside the canvas and placeholder tiles; from a cold, a warm and no memo of the per-axis
lookups (``kernels/axis_lookup.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from decal.dali_pipes.mosaic.pipeline import PLACEHOLDER_SIZE
from decal.dali_pipes.mosaic.twin import NUM_TILES, crop_regions, quadrant_regions, tile_geometries, tile_geometry_batch
from decal.kernels import geometry_batch
from decal.kernels.axis_lookup import AxisLookups
from decal.kernels.geometry_batch import GeometryBatch, geometry_tables, jitter_geometries, placed_geometries
from decal.kernels.instance_masks import geometry_table, subpixel_table
from decal.kernels.mask_geometry import placed_geometry, sample_geometry, source_columns, source_rows


def _spec_tables(geometries, subpixel: bool) -> np.ndarray:
    """The per-sample specification: one table (two with ``subpixel``) per geometry."""
    tables = []
    for g in geometries:
        rows, cols = source_rows(g), source_columns(g)
        tables.append(geometry_table(rows, cols, g.src_h, g.src_w))
        if subpixel:
            tables.append(subpixel_table(rows, cols))
    return np.stack(tables)


def _check(batch: GeometryBatch, spec: list) -> None:
    assert len(batch) == len(spec)
    for k, g in enumerate(spec):
        assert batch.sample(k) == g, k
    for subpixel in (False, True):
        got = geometry_tables(batch, subpixel=subpixel)
        want = _spec_tables(spec, subpixel)
        assert got.dtype == np.int32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _jitter_case(rng: np.random.Generator, k: int, side: int, scales: np.ndarray | None = None):
    h = rng.integers(1, 4001, size=k)
    w = rng.integers(1, 4001, size=k)
    small = rng.random(k) < 0.3  # small images too: the window's padding and 1-pixel sides
    h[small] = rng.integers(1, 40, size=int(small.sum()))
    scale = rng.uniform(0.1, 2.0, size=k).astype(np.float32) if scales is None else scales
    crop_x = rng.uniform(0, 1, size=k).astype(np.float32)
    crop_y = rng.uniform(0, 1, size=k).astype(np.float32)
    crop_x[rng.random(k) < 0.2] = rng.choice([0.0, 0.5, 1.0])
    flip = (rng.random(k) < 0.5).astype(np.int32)
    spec = [
        sample_geometry(int(h[i]), int(w[i]), scale[i], crop_x[i], crop_y[i], flip[i], side) for i in range(k)
    ]
    return jitter_geometries(h, w, scale, crop_x, crop_y, flip, side), spec


@pytest.mark.parametrize("side", [1, 7, 64, 255, 1024])
def test_jitter_geometries_equal_the_per_sample_tables(side: int) -> None:
    """Copy-paste's LSJ geometry, fresh random inputs each run, odd and even output sizes."""
    rng = np.random.default_rng()
    for _ in range(3):
        batch, spec = _jitter_case(rng, 24, side)
        _check(batch, spec)


def test_jitter_geometries_exact_rounding_ties() -> None:
    """Sizes and scales where DALI's roundings land exactly on halves: the resized size
    (``in · scale = k + 0.5``), the crop anchor (``crop · (size - S) = k + 0.5``) and output
    pixels whose source position is an exact integer (scale 1.0, 0.5, 2.0, 0.25)."""
    side = 33
    # (h, w, scale): 21×66 at 1.0 resizes to 10.5 → 11 rows (ROI adjusted); 6×132 to 1.5;
    # 1×66 to 0.5 (→ 1); at 2.0 the 66-pixel side minus S is 33, odd: crop 0.5 ties
    cases = [(21, 66, 1.0), (66, 21, 1.0), (6, 132, 1.0), (1, 66, 1.0), (21, 66, 2.0), (66, 21, 2.0),
             (10, 21, 1.0), (64, 64, 0.5), (33, 66, 2.0), (1, 1, 0.1), (4000, 1, 2.0), (99, 33, 0.25)]  # fmt: skip
    args = [(h, w, scale, crop, 1.0 - crop, flip) for h, w, scale in cases
            for crop in (0.0, 0.25, 0.5, 1.0) for flip in (0, 1)]  # fmt: skip
    arr = np.array(args, np.float64)
    batch = jitter_geometries(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5], side)
    spec = [sample_geometry(int(a[0]), int(a[1]), a[2], a[3], a[4], int(a[5]), side) for a in args]
    # the ties are there: a half-pixel resized size (rounded up, its ROI adjusted) ...
    tied = spec[0].rows
    assert (tied.size, tied.lo) != (10, 0.0) and tied.size == 11 and tied.lo != 0.0
    # ... and crop anchors at exact halves, positive and negative
    halves = [np.float32(a[3]) * np.float32(g.cols.size - side) for a, g in zip(args, spec)]
    halves += [np.float32(a[4]) * np.float32(g.rows.size - side) for a, g in zip(args, spec)]
    assert any(v % 1 == 0.5 and v > 0 for v in halves) and any(v % 1 == 0.5 and v < 0 for v in halves)
    _check(batch, spec)


def test_placed_geometries_equal_the_per_sample_tables() -> None:
    """Exact-size resizes placed anywhere: windows inside, hanging off every edge, entirely
    outside the canvas, tiles larger than the canvas."""
    rng = np.random.default_rng()
    side = int(rng.choice([31, 48, 640]))
    k = 40
    h, w = rng.integers(1, 4001, size=k), rng.integers(1, 4001, size=k)
    sizes = rng.integers(1, 3 * side, size=(k, 2))
    anchors = rng.integers(-3 * side, 3 * side, size=(k, 2))
    flips = rng.integers(0, 2, size=k)
    spec = [placed_geometry(int(h[i]), int(w[i]), tuple(sizes[i]), tuple(anchors[i]), side, int(flips[i])) for i in range(k)]
    _check(placed_geometries(h, w, sizes, anchors, side, flips), spec)


def _mosaic_case(rng: np.random.Generator, side: int, b: int) -> tuple:
    """The arguments of ``tile_geometries`` for a mosaic batch: 2×2 mosaics around centres
    over the whole canvas (tiles hanging off or vanishing), every third sample a single-image
    window with unused placeholder tiles."""
    heights = rng.integers(1, 4001, size=(b, NUM_TILES))
    widths = rng.integers(1, 4001, size=(b, NUM_TILES))
    sizes = rng.integers(1, 2 * side, size=(b, NUM_TILES, 2))
    regions = np.zeros((b, NUM_TILES, 6), np.int64)
    for i in range(b):
        if i % 3:
            centre = (int(rng.integers(0, side + 1)), int(rng.integers(0, side + 1)))
            regions[i] = quadrant_regions(sizes[i], centre, side)
        else:  # one image: tiles 1..3 are placeholders
            _, regions[i, 0] = crop_regions(tuple(int(v) for v in sizes[i, 0]), tuple(rng.uniform(0, 1, 2)), side)
            heights[i, 1:] = widths[i, 1:] = PLACEHOLDER_SIZE
            sizes[i, 1:] = PLACEHOLDER_SIZE
    flips = rng.integers(0, 2, size=b)
    return heights, widths, sizes, regions, flips, side


def test_tile_geometry_batch_equals_tile_geometries() -> None:
    """Mosaic batches: 2×2 mosaics around centres over the whole canvas (tiles hanging off
    or vanishing), single-image windows with unused placeholder tiles."""
    args = _mosaic_case(np.random.default_rng(), 47, 12)
    _check(tile_geometry_batch(*args), tile_geometries(*args))


@pytest.mark.parametrize("max_bytes", [None, 0], ids=["default memo", "no memo"])
def test_tables_are_the_same_from_a_cold_a_warm_and_no_memo(monkeypatch: pytest.MonkeyPatch, max_bytes) -> None:
    """The per-axis lookups behind the tables (``kernels/axis_lookup.py``) change no value:
    mosaic and jittered batches twice each, from an emptied memo, then from a warm one, or
    through a memo bounded to nothing."""
    rng = np.random.default_rng()
    if max_bytes is not None:
        monkeypatch.setattr(geometry_batch, "ROW_LOOKUPS", AxisLookups(running=True, max_bytes=max_bytes))
        monkeypatch.setattr(geometry_batch, "COLUMN_LOOKUPS", AxisLookups(running=False, max_bytes=max_bytes))
    geometry_batch.ROW_LOOKUPS.clear()
    geometry_batch.COLUMN_LOOKUPS.clear()
    args = _mosaic_case(rng, int(rng.choice([33, 96])), 10)
    mosaic = tile_geometry_batch(*args)
    jitter, jitter_spec = _jitter_case(rng, 12, 64)
    for _ in range(2):  # cold, then warm
        _check(mosaic, tile_geometries(*args))
        _check(jitter, jitter_spec)
    geometry_tables(mosaic)  # mosaic tiles: exact-size resizes, remembered
    assert len(geometry_batch.ROW_LOOKUPS) > 0 and len(geometry_batch.COLUMN_LOOKUPS) > 0


def test_from_samples_round_trip_and_errors() -> None:
    """A list of per-sample geometries converts losslessly; mixed output sizes, empty
    batches, non-positive sizes and mismatched lengths are refused."""
    rng = np.random.default_rng()
    batch, spec = _jitter_case(rng, 5, 20)
    again = GeometryBatch.from_samples(spec)
    _check(again, spec)
    with pytest.raises(ValueError, match="share the output size"):
        GeometryBatch.from_samples([spec[0], sample_geometry(9, 9, 1.0, 0.5, 0.5, 0, 21)])
    with pytest.raises(ValueError, match="at least one sample"):
        GeometryBatch.from_samples([])
    with pytest.raises(ValueError, match="positive"):
        jitter_geometries([0], [5], [1.0], [0.5], [0.5], [0], 8)
    with pytest.raises(ValueError, match="length"):
        jitter_geometries([4, 5], [5], [1.0], [0.5], [0.5], [0], 8)
    with pytest.raises(ValueError, match="resize_longer"):
        jitter_geometries([4], [5], [0.0], [0.5], [0.5], [0], 8)


def test_empty_batch_of_tables() -> None:
    """Zero samples give a (0, 2·S + 4) table array, not an error."""
    batch = jitter_geometries([], [], [], [], [], [], 6)
    assert geometry_tables(batch).shape == (0, 16)
    assert geometry_tables(batch, subpixel=True).shape == (0, 16)
