"""Per-axis lookups of DALI's nearest-neighbour resize (resized pixel → source pixel), for many
axes at once, memoised by the axis's geometry.

One axis of a resize (:class:`~decal.kernels.mask_geometry.ResizeGeometry`: source size ``n``,
resized size ``m``, ROI start ``lo``, ``scale`` source pixels per resized pixel, both float32)
shows at resized pixel ``j`` (0 <= j < m) the source pixel ``clamp(floor(p_j), 0, n - 1)``:

* columns: ``p_j = lo + (j + 0.5) · scale``, float32 (:func:`~decal.kernels.mask_geometry.source_columns`);
* rows: DALI's float32 running sum ``p_0 = lo + 0.5 · scale``, ``p_j = p_(j-1) + scale``
  (:func:`~decal.kernels.mask_geometry.source_rows`).

The lookup of an axis, (m,) int32, is a function of ``(n, m, lo, scale)`` alone: the window
(anchor, padding) and the flip only decide which part of it a geometry table shows
(:func:`~decal.kernels.geometry_batch.geometry_tables`). So a batch computes each distinct axis
once, in one NumPy pass over all of them, and :class:`AxisLookups` keeps the exact-size ones
(ROI start 0) across batches, up to a byte bound. Mosaic places its tiles by exact-size
resizes, and with the default ``jitter="none"`` an image has two sizes (a tile or the whole
canvas), so after the first epochs its lookups come from the memo. A scale-jittered resize
(copy-paste's LSJ) adjusts its ROI (``lo != 0``) and rarely recurs: its lookups are computed
into scratch space each batch and never fill the memo.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["AxisLookups", "axis_lookups"]

_F32 = np.float32

#: Default bound of one memo's arena, bytes (a lookup takes ``4 · (m + window)``).
MEMO_BYTES = 4 << 20


def axis_lookups(n: np.ndarray, m: np.ndarray, lo: np.ndarray, scale: np.ndarray, *, running: bool) -> np.ndarray:
    """The lookups of K axes as one (K, max(m)) int32 array; row k is valid up to ``m[k]``
    (what lies beyond is unspecified).

    Args:
        n: (K,) int64 source sizes (>= 1); m: (K,) int64 resized sizes (>= 1).
        lo, scale: (K,) float32 ROI start and source pixels per resized pixel.
        running: rows (DALI's float32 running sum) instead of columns (float32 products).

    The float32 operations are those of :mod:`decal.kernels.mask_geometry`, in the same order,
    so the values are bit-identical to it (``tests/test_axis_lookup.py``).
    """
    k = len(n)
    width = int(m.max()) if k else 0
    if running:
        steps = np.empty((k, width), _F32)
        steps[:] = scale[:, None]
        steps[:, 0] = lo + _F32(0.5) * scale
        p = np.cumsum(steps, axis=1, dtype=_F32)  # sequential float32 additions, row by row
    else:
        j = np.arange(width, dtype=_F32)  # exact: whole numbers below 2**24
        with np.errstate(over="ignore", invalid="ignore"):
            p = lo[:, None] + (j[None, :] + _F32(0.5)) * scale[:, None]  # float32, no FMA
    np.floor(p, out=p)
    np.maximum(p, 0, out=p)
    np.minimum(p, (n - 1).astype(_F32)[:, None], out=p)  # exact: whole numbers below 2**24
    return p.astype(np.int32)


class AxisLookups:
    """The lookups of one kind of axis (rows or columns), memoised, and the windows that
    geometry tables cut out of them.

    The memo is one arena: ``pad`` entries of -1, then each lookup followed by ``pad``
    entries of -1. A window of ``window <= pad`` positions at ``anchor`` on an axis whose
    lookup starts at ``s`` is then the contiguous run ``arena[s + anchor : s + anchor +
    window]`` whenever it shows any resized pixel (``-pad < anchor < m``), the padding
    supplying the -1 on either side, and ``arena[:window]`` (all -1) when it shows none; so
    the windows of a whole batch are one gather of rows from a strided view of the arena.
    Only exact-size axes (``lo == 0``) are remembered; the others of a call are written to
    scratch space after them (:meth:`_add`). When the arena passes ``max_bytes`` at the start
    of a call it is emptied (its storage kept); the values never depend on what it holds. Calls hold a lock: sources of several pipelines (a
    server's streams) share the memo from their own threads.

    Args:
        running: rows (True) or columns (False), as :func:`axis_lookups`.
        max_bytes: bound on the arena's bytes between calls (a call may add one batch's
            lookups beyond it).
    """

    def __init__(self, *, running: bool, max_bytes: int = MEMO_BYTES) -> None:
        self.running = bool(running)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._reset(0)

    def __len__(self) -> int:
        """The number of lookups held."""
        return len(self._start)

    def clear(self) -> None:
        """Forget every lookup."""
        with self._lock:
            self._reset(self._pad)

    def _reset(self, pad: int) -> None:
        """Empty the arena (its storage is kept: no fresh pages to fault in at every refill);
        its padding becomes ``pad`` entries."""
        self._pad = int(pad)
        if not hasattr(self, "_arena") or len(self._arena) < self._pad:
            self._arena = np.empty(max(self._pad, 1024), np.int32)
        self._arena[: self._pad] = -1
        self._used = self._pad
        self._start: dict[tuple, int] = {}

    def windows(
        self, n: np.ndarray, m: np.ndarray, lo: np.ndarray, scale: np.ndarray, anchor: np.ndarray, window: int
    ) -> np.ndarray:
        """(K, window) int32: row k shows, at window position x, the source pixel of resized
        pixel ``x + anchor[k]`` of axis k (:func:`axis_lookups`), -1 where that is outside
        [0, m[k]). Arguments as :func:`axis_lookups`, plus ``anchor`` (K,) int64 and the
        window size (>= 1). Axes the memo lacks are computed in one :func:`axis_lookups` pass."""
        window = int(window)
        with self._lock:
            return self._windows(n, m, lo, scale, anchor, window)

    def _windows(
        self, n: np.ndarray, m: np.ndarray, lo: np.ndarray, scale: np.ndarray, anchor: np.ndarray, window: int
    ) -> np.ndarray:
        if window > self._pad or self._used * 4 > self.max_bytes:
            self._reset(max(window, self._pad))
        shown = (anchor < m) & (anchor > -window)
        at = np.zeros(len(m), np.int64)  # arena[0 : window] is all padding
        rows = np.flatnonzero(shown)
        end = self._used
        if len(rows):
            keys = list(zip(n[rows].tolist(), m[rows].tolist(), lo[rows].tolist(), scale[rows].tolist()))
            found = [self._start.get(key) for key in keys]
            if None in found:
                scratch, end = self._add([key for key in dict.fromkeys(keys) if key not in self._start])
                found = [scratch.get(key, self._start.get(key)) if f is None else f for key, f in zip(keys, found)]
            at[rows] = np.array(found, np.int64) + anchor[rows]
        view = np.lib.stride_tricks.as_strided(self._arena, shape=(end - window + 1, window), strides=(4, 4), writeable=False)
        return view[at]

    def _add(self, keys: list[tuple]) -> tuple[dict[tuple, int], int]:
        """Compute the lookups of ``keys`` (one pass) and write them to the arena, each
        followed by its padding. Those of exact-size resizes (ROI start 0: how mosaic places
        its tiles, which recur with their image) are remembered; the others (a scale-jittered
        resize adjusts its ROI and rarely recurs) go to a scratch region after them that the
        next call overwrites, so they neither push the remembered ones out nor make the arena
        grow. Returns the start of the scratch lookups, by key, and the end of what was written."""
        keys = sorted(keys, key=lambda key: key[2] != 0.0)  # remembered ones first
        new = axis_lookups(
            np.array([key[0] for key in keys], np.int64), np.array([key[1] for key in keys], np.int64),
            np.array([key[2] for key in keys], _F32), np.array([key[3] for key in keys], _F32), running=self.running,
        )  # fmt: skip
        pad = self._pad
        need = self._used + sum(key[1] for key in keys) + pad * len(keys)
        if need > len(self._arena):
            grown = np.empty(max(need, 2 * len(self._arena)), np.int32)
            grown[: self._used] = self._arena[: self._used]
            self._arena = grown
        at, scratch = self._used, {}
        for row, key in enumerate(keys):
            size = key[1]
            self._arena[at : at + size] = new[row, :size]
            self._arena[at + size : at + size + pad] = -1
            if key[2] == 0.0:
                self._start[key] = at
                self._used = at + size + pad
            else:
                scratch[key] = at
            at += size + pad
        return scratch, at
