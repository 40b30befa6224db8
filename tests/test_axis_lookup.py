"""The per-axis lookups of the batched geometry tables (``kernels/axis_lookup.py``) against
the per-sample specification (``source_rows`` / ``source_columns`` of
``kernels/mask_geometry.py`` over a whole resized axis), and the memo behind
``geometry_tables``: a warm memo, a cold one and a memo too small to hold anything give the
same tables, equal to the per-sample ones (mosaic batches with placeholder tiles, tiles
hanging off every border, tiles outside the canvas, single images with padding)."""

from __future__ import annotations

import numpy as np
import pytest

from decal.dali_pipes.mosaic.pipeline import PLACEHOLDER_SIZE
from decal.dali_pipes.mosaic.twin import NUM_TILES, crop_regions, quadrant_regions, tile_geometries, tile_geometry_batch
from decal.kernels import geometry_batch
from decal.kernels.axis_lookup import AxisLookups, axis_lookups
from decal.kernels.geometry_batch import geometry_tables, jitter_geometries
from decal.kernels.instance_masks import geometry_table, subpixel_table
from decal.kernels.mask_geometry import ResizeGeometry, SampleGeometry, sample_geometry, source_columns, source_rows


def _whole_axis(axis: ResizeGeometry, rows: bool) -> np.ndarray:
    """The specification's lookup of one whole resized axis: a window of exactly its size at
    anchor 0 (the other axis a 1-pixel dummy)."""
    dummy = ResizeGeometry(1, 1, 0.0, 1.0)
    if rows:
        return source_rows(SampleGeometry(axis, dummy, 0, 0, axis.size, 1, False))
    return source_columns(SampleGeometry(dummy, axis, 0, 0, 1, axis.size, False))


def _random_axes(rng: np.random.Generator, k: int) -> list[ResizeGeometry]:
    """Axes of copy-paste's LSJ geometry (ROI adjusted on rounding, lo != 0) and of mosaic's
    exact-size resizes (lo == 0), 1..4000 source pixels, down- and upscaled."""
    axes = []
    for _ in range(k):
        h, w = (int(v) for v in rng.integers(1, 4001, size=2))
        g = sample_geometry(h, w, float(rng.uniform(0.05, 2.0)), 0.5, 0.5, 0, int(rng.integers(1, 1025)))
        axes += [g.rows, g.cols]
        n, m = int(rng.integers(1, 4001)), int(rng.integers(1, 2049))
        axes.append(ResizeGeometry(n, m, 0.0, float(np.float32(n) / np.float32(m))))
    return axes


@pytest.mark.parametrize("rows", [True, False], ids=["rows", "columns"])
def test_axis_lookups_equal_the_per_sample_spec(rows: bool) -> None:
    """Fresh random axes each run, plus 1-pixel sides and exact-integer source positions."""
    rng = np.random.default_rng()
    axes = _random_axes(rng, 30) + [ResizeGeometry(1, 1, 0.0, 1.0), ResizeGeometry(1, 700, 0.0, float(np.float32(1 / 700))),
                                    ResizeGeometry(64, 32, 0.0, 2.0), ResizeGeometry(32, 64, 0.0, 0.5)]  # fmt: skip
    got = axis_lookups(
        np.array([a.in_size for a in axes]), np.array([a.size for a in axes]),
        np.array([a.lo for a in axes], np.float32), np.array([a.scale for a in axes], np.float32), running=rows,
    )  # fmt: skip
    assert got.dtype == np.int32
    for k, axis in enumerate(axes):
        np.testing.assert_array_equal(got[k, : axis.size], _whole_axis(axis, rows), err_msg=str(axis))
    memo = AxisLookups(running=rows)
    n = np.array([a.in_size for a in axes])
    lookups = memo.lookups(n, np.array([a.size for a in axes]), np.array([a.lo for a in axes], np.float32),
                           np.array([a.scale for a in axes], np.float32))  # fmt: skip
    for lookup, axis in zip(lookups, axes):
        assert not lookup.flags.writeable
        np.testing.assert_array_equal(lookup, _whole_axis(axis, rows))


def test_the_memo_shares_equal_axes_and_stays_within_its_bound() -> None:
    """Equal axes give one shared lookup; a bound smaller than the lookups empties the memo
    (or skips a lookup larger than the bound) and changes no value."""
    n, m = np.array([10, 10, 7]), np.array([20, 20, 5])
    lo, scale = np.zeros(3, np.float32), (n.astype(np.float32) / m.astype(np.float32))
    memo = AxisLookups(running=False)
    first = memo.lookups(n, m, lo, scale)
    assert first[0] is first[1] and len(memo) == 2
    again = memo.lookups(n, m, lo, scale)
    assert all(a is b for a, b in zip(first, again))  # from the memo
    small = AxisLookups(running=False, max_bytes=80)  # one 20-entry lookup fills it
    for _ in range(2):
        got = small.lookups(n, m, lo, scale)
        assert len(small) == 1 and all(np.array_equal(a, b) for a, b in zip(got, first))
    tiny = AxisLookups(running=False, max_bytes=4)
    assert [np.array_equal(a, b) for a, b in zip(tiny.lookups(n, m, lo, scale), first)] == [True] * 3
    assert len(tiny) == 0


def _mosaic_batch(rng: np.random.Generator, side: int, b: int):
    """A mosaic batch as the source makes it: 2×2 mosaics around random centres (tiles off
    the borders or clipped to nothing), single images (crop or pad) with placeholder tiles."""
    heights = rng.integers(1, 1500, size=(b, NUM_TILES))
    widths = rng.integers(1, 1500, size=(b, NUM_TILES))
    sizes = rng.integers(1, 2 * side, size=(b, NUM_TILES, 2))
    regions = np.zeros((b, NUM_TILES, 6), np.int64)
    for i in range(b):
        if i % 2:
            centre = (int(rng.integers(0, side + 1)), int(rng.integers(0, side + 1)))
            regions[i] = quadrant_regions(sizes[i], centre, side)
        else:
            _, regions[i, 0] = crop_regions(tuple(int(v) for v in sizes[i, 0]), tuple(rng.uniform(0, 1, 2)), side)
            heights[i, 1:] = widths[i, 1:] = PLACEHOLDER_SIZE
            sizes[i, 1:] = PLACEHOLDER_SIZE
    flips = rng.integers(0, 2, size=b)
    return (heights, widths, sizes, regions, flips, side)


def _spec(geometries, subpixel: bool) -> np.ndarray:
    tables = []
    for g in geometries:
        rows, cols = source_rows(g), source_columns(g)
        tables.append(geometry_table(rows, cols, g.src_h, g.src_w))
        if subpixel:
            tables.append(subpixel_table(rows, cols))
    return np.stack(tables)


@pytest.mark.parametrize("max_bytes", [None, 0], ids=["default memo", "no memo"])
def test_tables_are_the_same_from_a_cold_a_warm_and_no_memo(monkeypatch: pytest.MonkeyPatch, max_bytes) -> None:
    rng = np.random.default_rng()
    if max_bytes is not None:
        monkeypatch.setattr(geometry_batch, "ROW_LOOKUPS", AxisLookups(running=True, max_bytes=max_bytes))
        monkeypatch.setattr(geometry_batch, "COLUMN_LOOKUPS", AxisLookups(running=False, max_bytes=max_bytes))
    geometry_batch.ROW_LOOKUPS.clear()
    geometry_batch.COLUMN_LOOKUPS.clear()
    args = _mosaic_batch(rng, int(rng.choice([33, 96])), 10)
    spec_geometries = tile_geometries(*args)
    batch = tile_geometry_batch(*args)
    h = rng.integers(1, 600, size=12)
    w = rng.integers(1, 600, size=12)
    jitter = jitter_geometries(h, w, rng.uniform(0.1, 2.0, 12), rng.uniform(0, 1, 12), rng.uniform(0, 1, 12),
                               rng.integers(0, 2, 12), 64)  # fmt: skip
    jitter_spec = [jitter.sample(k) for k in range(len(jitter))]
    for _ in range(2):  # cold, then warm
        for subpixel in (False, True):
            np.testing.assert_array_equal(geometry_tables(batch, subpixel=subpixel), _spec(spec_geometries, subpixel))
            np.testing.assert_array_equal(geometry_tables(jitter, subpixel=subpixel), _spec(jitter_spec, subpixel))
    if max_bytes == 0:
        assert len(geometry_batch.ROW_LOOKUPS) == len(geometry_batch.COLUMN_LOOKUPS) == 0
    else:
        assert len(geometry_batch.ROW_LOOKUPS) > 0 and len(geometry_batch.COLUMN_LOOKUPS) > 0
