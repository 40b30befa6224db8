"""The per-axis lookups of the batched geometry tables (``kernels/axis_lookup.py``) against
the per-sample specification (``source_rows`` / ``source_columns`` of
``kernels/mask_geometry.py`` over a whole resized axis), and the windows that the memo cuts out
of them, cold, warm, bounded to nothing and shared by threads (the tables they make:
``tests/test_geometry_batch.py``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from decal.kernels.axis_lookup import AxisLookups, axis_lookups
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


def _window(axis: ResizeGeometry, anchor: int, window: int, rows: bool) -> np.ndarray:
    """The specification's window of ``window`` positions at ``anchor`` on one axis."""
    dummy = ResizeGeometry(1, 1, 0.0, 1.0)
    if rows:
        return source_rows(SampleGeometry(axis, dummy, anchor, 0, window, 1, False))
    return source_columns(SampleGeometry(dummy, axis, 0, anchor, 1, window, False))


def _windows(memo: AxisLookups, axes: list[ResizeGeometry], anchors: np.ndarray, window: int) -> np.ndarray:
    return memo.windows(
        np.array([a.in_size for a in axes], np.int64), np.array([a.size for a in axes], np.int64),
        np.array([a.lo for a in axes], np.float32), np.array([a.scale for a in axes], np.float32),
        np.asarray(anchors, np.int64), window,
    )  # fmt: skip


@pytest.mark.parametrize("rows", [True, False], ids=["rows", "columns"])
def test_windows_equal_the_per_sample_spec_cold_warm_and_unmemoised(rows: bool) -> None:
    """Windows inside the axis, hanging off either end, just outside it (nothing shown) and
    far outside it; the same axis at several anchors; repeated calls from the memo; a window
    larger than the arena's padding so far; a memo bounded to nothing."""
    rng = np.random.default_rng()
    axes = _random_axes(rng, 12)
    axes = axes + axes[:5]  # equal axes in one call share one lookup
    for memo in (AxisLookups(running=rows), AxisLookups(running=rows, max_bytes=0)):
        for window in (int(rng.integers(1, 40)), 700, 5, 1500):
            m = np.array([a.size for a in axes])
            anchors = rng.integers(-window - 3, m + 3)
            anchors[:4] = [-window, -window + 1, 0, m[3] - 1]  # just outside, first shown, flush, last shown
            anchors[4] = m[4]  # just past the end: nothing shown
            for _ in range(2):  # cold, then warm
                got = _windows(memo, axes, anchors, window)
                assert got.dtype == np.int32 and got.shape == (len(axes), window)
                for k, axis in enumerate(axes):
                    np.testing.assert_array_equal(got[k], _window(axis, int(anchors[k]), window, rows), err_msg=str(k))


def test_the_memo_is_bounded_and_empties_when_full() -> None:
    """An arena past its bound at the start of a call is emptied; the values do not change."""
    n, m = np.array([10, 10, 7]), np.array([20, 20, 5])
    lo, scale = np.zeros(3, np.float32), n.astype(np.float32) / m.astype(np.float32)
    anchors = np.array([0, -2, 1])
    memo = AxisLookups(running=False, max_bytes=4 * (16 + 20 + 16 + 5 + 16))
    first = memo.windows(n, m, lo, scale, anchors, 16)
    assert len(memo) == 2  # equal axes share a lookup
    np.testing.assert_array_equal(memo.windows(n, m, lo, scale, anchors, 16), first)
    assert len(memo) == 2
    other = memo.windows(n + 5, m, lo, scale * np.float32(1.5), anchors, 16)  # two more lookups pass the bound ...
    assert len(memo) == 4
    np.testing.assert_array_equal(memo.windows(n, m, lo, scale, anchors, 16), first)  # ... so this call empties it
    assert len(memo) == 2
    assert not np.array_equal(other, first)


def test_only_exact_size_axes_are_remembered() -> None:
    """Axes with ROI start 0 (mosaic's exact-size tiles) stay in the memo; a scale-jittered
    axis (ROI adjusted, lo != 0) is computed into scratch space each time, and a call mixing
    both still gets every window right."""
    n, m = np.array([640, 640, 480]), np.array([512, 300, 384])
    scale = n.astype(np.float32) / m.astype(np.float32)
    lo = np.array([0.0, 0.25, 0.0], np.float32)
    anchors = np.array([-5, 3, 100])
    memo = AxisLookups(running=True)
    for _ in range(3):
        got = memo.windows(n, m, lo, scale, anchors, 256)
        assert len(memo) == 2
        for k in range(3):
            axis = ResizeGeometry(int(n[k]), int(m[k]), float(lo[k]), float(scale[k]))
            np.testing.assert_array_equal(got[k], _window(axis, int(anchors[k]), 256, True))


def test_threads_sharing_a_memo_get_their_own_values() -> None:
    """Several threads (a server's pipelines) call one memo that they keep emptying and
    growing (a tiny bound, growing windows): every result is still the specification's."""
    memo = AxisLookups(running=True, max_bytes=4096)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for step in range(40):
                axes = _random_axes(rng, 3)
                window = 8 + 4 * step + seed
                anchors = rng.integers(-window, np.array([a.size for a in axes]))
                got = _windows(memo, axes, anchors, window)
                for k, axis in enumerate(axes):
                    np.testing.assert_array_equal(got[k], _window(axis, int(anchors[k]), window, True))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
