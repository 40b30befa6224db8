"""The instance bank's host bookkeeping: a FIFO ring of crops in one pixel pool, kept as arrays.

Rule (the bank's, :mod:`~decal.kernels.instance_bank`): crops are placed one after another at
the ring's head. A crop that would run past the pool's last pixel starts again at pixel 0 and
the tail gap is abandoned, with whatever lies in it. Whatever a new crop overlaps is evicted,
oldest first. Beyond ``capacity`` live entries the oldest are evicted too. A crop larger than
the pool (or of no pixels) is rejected.

Positions are kept *virtual*: ``lap · P + pixel``, ``P`` the pool's pixels, increasing along the
ring. A crop never crosses a lap, so its pool pixel is ``start mod P``. An entry is overwritten,
or lies in a gap abandoned at a wrap, exactly when the head has gone more than one lap past its
start: ``head > start + P``. So a batch of crops is placed with one NumPy pass per lap it wraps
into (usually one), and its evictions are one comparison, not a Python step per crop.
``tests/test_crop_ring.py`` pins this against the rule applied one crop at a time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CropRing", "ring_starts"]


def ring_starts(head: int, pixels: np.ndarray, pool_pixels: int) -> tuple[np.ndarray, int]:
    """Virtual starts of crops placed in order from the virtual ``head``.

    Args:
        head: the ring's virtual head (≥ 0).
        pixels: (n,) int64 crop sizes in pixels, each in ``[1, pool_pixels]``.
        pool_pixels: ``P``, the pool's pixels.

    Returns:
        ``(starts (n,) int64, new head)``: crop i occupies pool pixels
        ``[starts[i] mod P, starts[i] mod P + pixels[i])``.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    n = len(pixels)
    starts = np.empty(n, dtype=np.int64)
    ends = np.cumsum(pixels)
    i, pos = 0, int(head)
    while i < n:  # one pass per lap the crops reach
        lap_end = (pos // pool_pixels + 1) * pool_pixels
        cand = pos + (ends[i:] - pixels[i:]) - (int(ends[i]) - int(pixels[i]))
        fits = cand + pixels[i:] <= lap_end
        j = n - i if fits.all() else int(np.argmin(fits))
        starts[i : i + j] = cand[:j]
        if i + j == n:
            pos = int(cand[-1] + pixels[-1])
            break
        pos, i = lap_end, i + j  # crop i + j starts the next lap at its pixel 0
    return starts, pos


class CropRing:
    """Live crop entries, oldest first, as parallel (L,) int64 arrays: ``uid`` (insertion
    number), ``start`` (virtual position; pool pixel ``start mod P``), ``height``, ``width``
    (pixels), ``label`` (category id) and ``area`` (mask pixels); with the counters ``added``,
    ``evicted`` and ``rejected``."""

    def __init__(self, pool_pixels: int, capacity: int) -> None:
        self.pool_pixels = int(pool_pixels)
        self.capacity = int(capacity)
        empty = np.zeros(0, dtype=np.int64)
        self.uid = self.start = self.height = self.width = self.label = self.area = empty
        self.head = 0  # virtual
        self.next_uid = 0
        self.added = 0
        self.evicted = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self.uid)

    @property
    def pixels(self) -> np.ndarray:
        """(L,) int64 pixels of each live entry."""
        return self.height * self.width

    @property
    def offset(self) -> np.ndarray:
        """(L,) int64 first pool pixel of each live entry."""
        return self.start % self.pool_pixels

    def clear(self) -> None:
        """Forget every entry (insertion numbers go on)."""
        self.uid = self.start = self.height = self.width = self.label = self.area = self.uid[:0]
        self.head = 0

    def push(self, heights: np.ndarray, widths: np.ndarray, labels: np.ndarray, areas: np.ndarray) -> np.ndarray:
        """Place n crops in order (the module's rule).

        Args:
            heights, widths: (n,) int64 crop size in pixels.
            labels: (n,) int64 category ids.
            areas: (n,) int64 mask pixels.

        Returns:
            (n,) int64 the pool pixel where each crop is to be written, -1 for a crop that was
            rejected or that a later crop of the same call already evicted (never write those:
            they would race with the crop now holding their pixels).
        """
        heights = np.asarray(heights, dtype=np.int64)
        widths = np.asarray(widths, dtype=np.int64)
        pixels = heights * widths
        accepted = np.flatnonzero((pixels > 0) & (pixels <= self.pool_pixels))
        self.rejected += len(pixels) - len(accepted)
        self.added += len(accepted)
        starts, self.head = ring_starts(self.head, pixels[accepted], self.pool_pixels)
        uids = self.next_uid + np.arange(len(accepted), dtype=np.int64)
        self.next_uid += len(accepted)

        def joined(old: np.ndarray, new: np.ndarray) -> np.ndarray:
            return np.concatenate([old, np.asarray(new, dtype=np.int64)[accepted]])

        all_start = np.concatenate([self.start, starts])
        total = len(all_start)
        # survivors: a suffix (starts increase), also bounded by the capacity
        first = max(int(np.searchsorted(all_start + self.pool_pixels, self.head, side="left")), total - self.capacity)
        self.evicted += first
        self.uid = np.concatenate([self.uid, uids])[first:]
        self.start = all_start[first:]
        self.height = joined(self.height, heights)[first:]
        self.width = joined(self.width, widths)[first:]
        self.label = joined(self.label, labels)[first:]
        self.area = joined(self.area, areas)[first:]

        where = np.full(len(pixels), -1, dtype=np.int64)
        live_new = np.arange(len(accepted)) >= first - (total - len(accepted))
        where[accepted[live_new]] = starts[live_new] % self.pool_pixels
        return where
