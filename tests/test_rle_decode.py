"""RLE instances on the GPU mask path, on the CPU: toggle positions, filled boxes, and the
CUDA kernel's per-column procedure (a NumPy port) against pycocotools ``decode`` followed by
the sample's geometry. The CUDA port itself is compared in ``test_rasterize_gpu.py``."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from decal.dali_pipes.coco.reader import _box_mask, decode_rle_string
from decal.kernels.instance_masks import build_descriptors, rasterize_instances
from decal.kernels.mask_geometry import apply_geometry, sample_geometry, source_columns, source_rows
from decal.kernels.rle_decode import (
    box_toggles,
    counts_from_toggles,
    rle_decode_emulated,
    toggles_from_counts,
)

from raster_factory import emulate, random_rle

# pycocotools' decode passes copy=False to NumPy 2's __array__ (a DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_toggles_round_trip_and_validation() -> None:
    counts = [0, 3, 0, 2, 5]
    q = toggles_from_counts(counts, 2, 5)
    assert q.dtype == np.int32 and q.tolist() == [0, 3, 3, 5]
    assert counts_from_toggles(q, 2, 5) == counts
    with pytest.raises(ValueError):
        toggles_from_counts([3, 3], 2, 5)  # covers 6 of 10 pixels
    with pytest.raises(ValueError):
        toggles_from_counts([12, -2], 2, 5)


@pytest.mark.parametrize("box", [(0.0, 0.0, 5.0, 4.0), (1.3, 0.6, 2.2, 2.9), (2.5, 1.5, 0.4, 0.4), (0.0, 3.1, 7.0, 0.9)])
def test_box_toggles_equal_reader_box_mask(box) -> None:
    from decal.dali_pipes.copy_paste.gpu_masks import _box_pixels

    h, w = 4, 7
    x0, y0, x1, y1 = _box_pixels(box, h, w)
    counts = counts_from_toggles(box_toggles(x0, y0, x1, y1, h), h, w)
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    np.testing.assert_array_equal(mask_utils.decode(rle), _box_mask(box, h, w))


def test_compressed_string_decodes_to_the_same_mask() -> None:
    rng = np.random.default_rng(0)
    m = (rng.random((23, 17)) < 0.4).astype(np.uint8)
    enc = mask_utils.encode(np.asfortranarray(m))
    counts = decode_rle_string(enc["counts"].decode())
    back = counts_from_toggles(toggles_from_counts(counts, 23, 17), 23, 17)
    np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects({"size": [23, 17], "counts": back}, 23, 17)), m)


@pytest.mark.parametrize("side", [1, 29, 64])
def test_emulated_kernel_equals_decode_then_geometry(side: int) -> None:
    """Random masks (noise, blocks whose runs span columns, full, empty) through random
    geometries: the per-column toggle procedure reproduces decode + NN + crop + flip."""
    rng = np.random.default_rng(side)
    for _ in range(5):
        samples, geometries = [], []
        for _ in range(4):
            h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
            g = sample_geometry(h, w, rng.uniform(0.1, 3.0), rng.uniform(), rng.uniform(), int(rng.integers(0, 2)), side)
            geometries.append(g)
            samples.append([("rle", random_rle(rng, h, w)) for _ in range(int(rng.integers(0, 4)))])
        desc, _ = build_descriptors(samples, geometries)
        assert desc.poly_instances.shape[0] == 0
        for got, ref in zip(emulate(desc), rasterize_instances(desc)):
            np.testing.assert_array_equal(got, ref)
        # and directly against pycocotools + geometry, row by row
        masks = rasterize_instances(desc)[0]
        row = 0
        for insts, g in zip(samples, geometries):
            for _, q in insts:
                counts = counts_from_toggles(q, g.src_h, g.src_w)
                src = mask_utils.decode(mask_utils.frPyObjects({"size": [g.src_h, g.src_w], "counts": counts}, g.src_h, g.src_w))
                np.testing.assert_array_equal(masks[row], apply_geometry(src[None], source_rows(g), source_columns(g))[0])
                row += 1


def test_rle_emulation_writes_only_listed_rows() -> None:
    g = sample_geometry(6, 6, 1.0, 0.0, 0.0, 0, 6)
    desc, _ = build_descriptors([[("rle", box_toggles(1, 1, 3, 3, 6))]], [g])
    masks = np.full((2, 6, 6), 9, np.uint8)
    areas, boxes = np.full(2, -1, np.int64), np.full((2, 4), -1, np.float32)
    rle_decode_emulated(desc.toggles, desc.rle_instances, desc.tables, masks, areas, boxes)
    assert masks[0].sum() == 4 and (masks[1] == 9).all()
    assert areas.tolist() == [4, -1] and boxes[0].tolist() == [1, 1, 3, 3]
