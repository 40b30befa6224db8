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
once, in one NumPy pass over all of them, and :class:`AxisLookups` keeps them across batches,
up to a byte bound. Mosaic's tiles with the default ``jitter="none"`` have two sizes per image
(a tile or the whole canvas), so after the first epoch its lookups come from the memo; under
scale jitter most axes are new, and the memo only costs the dictionary look-ups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AxisLookups", "axis_lookups"]

_F32 = np.float32

#: Default bound of one memo: the bytes of the lookups it holds (each ``4 · m`` bytes).
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
    """A memo of axis lookups of one kind (rows or columns), bounded by ``max_bytes``: when
    a new lookup would pass the bound the memo is emptied (no per-hit bookkeeping). The
    values never depend on what the memo holds.

    Args:
        running: rows (True) or columns (False), as :func:`axis_lookups`.
        max_bytes: bound on the bytes of the lookups held.
    """

    def __init__(self, *, running: bool, max_bytes: int = MEMO_BYTES) -> None:
        self.running = bool(running)
        self.max_bytes = int(max_bytes)
        self._memo: dict[tuple, np.ndarray] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._memo)

    def clear(self) -> None:
        """Forget every lookup."""
        self._memo = {}
        self._bytes = 0

    def lookups(self, n: np.ndarray, m: np.ndarray, lo: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
        """The lookups of K axes (arguments as :func:`axis_lookups`): K read-only (m[k],) int32
        arrays, equal axes sharing one. The ones the memo lacks are computed in one
        :func:`axis_lookups` pass and remembered."""
        keys = list(zip(n.tolist(), m.tolist(), lo.tolist(), scale.tolist()))
        memo = self._memo
        found = [memo.get(key) for key in keys]  # a dictionary look-up per axis
        if any(f is None for f in found):
            missing = list(dict.fromkeys(key for key, f in zip(keys, found) if f is None))
            new = axis_lookups(
                np.array([key[0] for key in missing], np.int64), np.array([key[1] for key in missing], np.int64),
                np.array([key[2] for key in missing], _F32), np.array([key[3] for key in missing], _F32),
                running=self.running,
            )  # fmt: skip
            made = {}
            for row, key in enumerate(missing):
                lookup = new[row, : key[1]].copy()
                lookup.flags.writeable = False
                made[key] = lookup
                self._remember(key, lookup)
            found = [made[key] if f is None else f for key, f in zip(keys, found)]
        return found

    def _remember(self, key: tuple, lookup: np.ndarray) -> None:
        if lookup.nbytes > self.max_bytes:
            return
        if self._bytes + lookup.nbytes > self.max_bytes:
            self.clear()
        self._memo[key] = lookup
        self._bytes += lookup.nbytes
