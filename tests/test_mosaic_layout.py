"""A mosaic batch's regions in one pass (``batch_regions``, ``dali_pipes/mosaic/twin.py``)
against the per-sample functions it replaces in the source's layout (``quadrant_regions``
for a 2×2 mosaic, ``crop_regions`` for a single image with zeros for its placeholder tiles),
on fresh random inputs and the edges: centres on the canvas border (tiles clipped to
nothing), 1-pixel tiles, tiles larger than the canvas, single images smaller than the
window (padding) and crop positions on exact halves."""

from __future__ import annotations

import numpy as np
import pytest

from decal.dali_pipes.mosaic.pipeline import PLACEHOLDER_SIZE
from decal.dali_pipes.mosaic.twin import NUM_TILES, batch_regions, crop_regions, quadrant_regions


def _per_sample(sizes: np.ndarray, mosaic: np.ndarray, centre: np.ndarray, crop_pos: np.ndarray, s: int) -> np.ndarray:
    """What the source's layout did sample by sample before ``batch_regions``."""
    regions = np.zeros((len(mosaic), NUM_TILES, 6), dtype=np.int64)
    for i in range(len(mosaic)):
        if mosaic[i]:
            regions[i] = quadrant_regions(sizes[i], (int(centre[i, 0]), int(centre[i, 1])), s)
        else:
            _, regions[i, 0] = crop_regions((int(sizes[i, 0, 0]), int(sizes[i, 0, 1])), tuple(crop_pos[i]), s)
    return regions


@pytest.mark.parametrize("s", [2, 9, 64, 1024])
def test_batch_regions_equal_the_per_sample_regions(s: int) -> None:
    rng = np.random.default_rng()
    for _ in range(20):
        b = int(rng.integers(1, 24))
        sizes = rng.integers(1, 3 * s, size=(b, NUM_TILES, 2))
        sizes[rng.random((b, NUM_TILES)) < 0.1] = 1  # 1-pixel tiles
        mosaic = rng.random(b) < 0.5
        sizes[~mosaic, 1:] = PLACEHOLDER_SIZE
        centre = rng.integers(0, s + 1, size=(b, 2))
        centre[rng.random(b) < 0.2] = rng.choice([0, s], size=2)  # on the border: tiles vanish
        crop_pos = rng.uniform(0, 1, size=(b, 2))
        crop_pos[rng.random(b) < 0.3] = rng.choice([0.0, 0.5, 1.0], size=2)  # exact halves
        want = _per_sample(sizes, mosaic, centre, crop_pos, s)
        got = batch_regions(sizes, mosaic, centre, crop_pos, s)
        assert got.dtype == np.int64 and got.shape == (b, NUM_TILES, 6)
        np.testing.assert_array_equal(got, want)


def test_batch_regions_rounding_ties_of_the_crop_window() -> None:
    """A single image whose window anchor lands on a half (0.5 · odd), both signs: halves up."""
    s = 10
    sizes = np.full((4, NUM_TILES, 2), PLACEHOLDER_SIZE, np.int64)
    sizes[:, 0] = [(13, 13), (7, 7), (13, 7), (7, 13)]
    crop_pos = np.full((4, 2), 0.5)
    got = batch_regions(sizes, np.zeros(4, bool), np.zeros((4, 2), np.int64), crop_pos, s)
    np.testing.assert_array_equal(got, _per_sample(sizes, np.zeros(4, bool), np.zeros((4, 2)), crop_pos, s))
    assert got[0, 0, 0] == 2 and got[1, 0, 2] == 1  # 1.5 → 2; -1.5 → -1: padding of 1
