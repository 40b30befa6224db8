"""The bank's crop ring (kernels/crop_ring.py), placed a batch at a time with array passes,
against its rule applied one crop at a time (the bank's original per-crop bookkeeping,
kept here as the specification)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from decal.kernels.crop_ring import CropRing, ring_starts


class OneCropAtATime:
    """The rule of kernels/crop_ring.py, one crop at a time: place at the head, wrap to pixel 0
    when the crop would pass the pool's end (abandoning the tail gap), evict the oldest entries
    in the way, then the oldest beyond the capacity."""

    def __init__(self, pool: int, capacity: int) -> None:
        self.pool, self.capacity = pool, capacity
        self.entries: deque[list[int]] = deque()  # [uid, offset, h, w, label, area]
        self.head = self.next_uid = self.added = self.evicted = self.rejected = 0

    def _allocate(self, pixels: int) -> int | None:
        if pixels > self.pool or pixels == 0:
            return None
        start = self.head
        if start + pixels > self.pool:
            start = 0
        end = start + pixels
        while self.entries:
            offset, size = self.entries[0][1], self.entries[0][2] * self.entries[0][3]
            in_gap = start == 0 and self.head > 0 and offset >= self.head
            overlaps = offset < end and offset + size > start
            if not (in_gap or overlaps):
                break
            self.entries.popleft()
            self.evicted += 1
        self.head = end
        return start

    def push(self, heights, widths, labels, areas) -> np.ndarray:
        fresh = []
        for h, w, label, area in zip(heights, widths, labels, areas):
            offset = self._allocate(int(h) * int(w))
            if offset is None:
                self.rejected += 1
                fresh.append(None)
                continue
            entry = [self.next_uid, offset, int(h), int(w), int(label), int(area)]
            self.next_uid += 1
            self.added += 1
            self.entries.append(entry)
            fresh.append(entry)
        while len(self.entries) > self.capacity:
            self.entries.popleft()
            self.evicted += 1
        live = {e[0] for e in self.entries}
        return np.array([e[1] if e is not None and e[0] in live else -1 for e in fresh], dtype=np.int64)


def _same(ring: CropRing, ref: OneCropAtATime) -> None:
    table = np.array(list(ref.entries), dtype=np.int64).reshape(-1, 6)
    for column, got in enumerate((ring.uid, ring.offset, ring.height, ring.width, ring.label, ring.area)):
        np.testing.assert_array_equal(got, table[:, column])
    assert (ring.added, ring.evicted, ring.rejected) == (ref.added, ref.evicted, ref.rejected)


@pytest.mark.parametrize("seed", range(40))
def test_batches_match_the_rule_applied_one_crop_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = int(rng.integers(1, 300))
    capacity = int(rng.integers(1, 40))
    ring, ref = CropRing(pool, capacity), OneCropAtATime(pool, capacity)
    side = max(1, int(np.sqrt(pool)) + 2)  # some crops larger than the whole pool
    for _ in range(30):
        n = int(rng.integers(0, 25))
        heights, widths = rng.integers(0, side + 1, n), rng.integers(0, side + 1, n)
        labels, areas = rng.integers(0, 9, n), rng.integers(1, 50, n)
        np.testing.assert_array_equal(ring.push(heights, widths, labels, areas), ref.push(heights, widths, labels, areas))
        _same(ring, ref)
        if rng.random() < 0.05:
            ring.clear()
            ref.entries.clear()
            ref.head = 0


def test_edge_cases_exact_fits_whole_pool_crops_and_a_batch_that_laps_the_pool() -> None:
    pool = 12
    cases = [
        [3, 3, 3, 3],  # fills the pool exactly: the next crop wraps from the pool's end
        [12],  # the whole pool: everything before it goes
        [5, 7, 1],  # 5 + 7 ends exactly at the end; 1 wraps to 0
        [11, 2, 11, 2, 11],  # one batch laps the pool several times: its own early crops are evicted
        [13, 0, 4],  # rejected (larger than the pool, no pixels), then placed
        [],
    ]
    ring, ref = CropRing(pool, 100), OneCropAtATime(pool, 100)
    for pixels in cases:
        h = np.ones(len(pixels), np.int64)
        w = np.asarray(pixels, np.int64)
        z = np.zeros(len(pixels), np.int64)
        got, want = ring.push(h, w, z, z), ref.push(h, w, z, z)
        np.testing.assert_array_equal(got, want)
        _same(ring, ref)
    assert ring.rejected == 2 and ring.evicted > 0 and ring.added == ring.evicted + len(ring)
    # the lapping batch wrote only its survivors
    ring2, ref2 = CropRing(pool, 100), OneCropAtATime(pool, 100)
    w = np.array([11, 2, 11, 2, 11])
    got = ring2.push(np.ones(5, np.int64), w, np.zeros(5, np.int64), np.zeros(5, np.int64))
    np.testing.assert_array_equal(got, ref2.push(np.ones(5), w, np.zeros(5), np.zeros(5)))
    assert (got == -1).sum() == 4 and len(ring2) == 1


def test_ring_starts_never_cross_a_lap() -> None:
    rng = np.random.default_rng(0)
    for pool in (1, 7, 64):
        pixels = rng.integers(1, pool + 1, 200)
        starts, head = ring_starts(int(rng.integers(0, 3 * pool)), pixels, pool)
        assert np.all(starts // pool == (starts + pixels - 1) // pool)  # inside one lap
        assert np.all(np.diff(starts) >= pixels[:-1])  # in order, no overlap
        assert head == starts[-1] + pixels[-1]
