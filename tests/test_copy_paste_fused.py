"""The fused Copy-Paste step on the CPU: ``copy_paste_batch_fused`` returns exactly what
``copy_paste_batch`` returns, and its new twins (composite + occlusion, gather) follow their
specification. The CUDA ports are compared in ``test_rasterize_gpu.py``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decal.kernels.composite import composite_numpy
from decal.kernels.composite_occlusion import composite_occlusion
from decal.kernels.copy_paste import CopyPasteParams, copy_paste_batch
from decal.kernels.copy_paste_fused import copy_paste_batch_fused, output_candidates, traffic_model
from decal.kernels.gather_masks import gather_masks
from decal.kernels.mask_boxes import mask_boxes
from decal.kernels.occlusion_update import occlusion_update_numpy

from raster_factory import FIELDS, random_case

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 5),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    max_pasted=st.integers(0, 6),
    sigma=st.sampled_from([0.0, 1.5]),
    mask_thr=st.integers(0, 40),
    box_thr=st.integers(0, 6),
)
def test_fused_equals_reference_copy_paste(seed, batch, h, w, max_pasted, sigma, mask_thr, box_thr) -> None:
    rng = np.random.default_rng(seed)
    images, masks, offsets, labels, crowd = random_case(rng, batch, h, w)
    params = CopyPasteParams(max_num_pasted=max_pasted, blend_sigma=sigma, mask_occluded_thr=mask_thr,
                             bbox_occluded_thr=float(box_thr))
    ref = copy_paste_batch(images, masks, offsets, labels, crowd, params, np.random.default_rng(seed))
    areas, boxes = mask_boxes(masks)
    got = copy_paste_batch_fused(images, masks, areas, boxes, offsets, labels, crowd, params, np.random.default_rng(seed))
    for f in FIELDS:
        a, b = getattr(ref, f), getattr(got, f)
        assert a.dtype == b.dtype and a.shape == b.shape, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    np.testing.assert_array_equal(ref.plan.partner, got.plan.partner)


def test_full_occlusion_drops_every_destination_instance() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0] = 1  # image 0: one full-frame instance, pasted onto image 1 ...
    masks[1, 2:4, 2:4] = masks[2, 5:7, 1:3] = 1  # ... whose two small instances vanish under it
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    offsets = np.array([0, 1, 3])
    areas, boxes = mask_boxes(masks)
    params = CopyPasteParams(max_num_pasted=5)
    for seed in range(20):
        res = copy_paste_batch_fused(images, masks, areas, boxes, offsets, np.array([1, 2, 3]), np.zeros(3, bool),
                                     params, np.random.default_rng(seed))
        ref = copy_paste_batch(images, masks, offsets, np.array([1, 2, 3]), np.zeros(3, bool), params, np.random.default_rng(seed))
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(res, f), getattr(ref, f))
        if res.plan.num_pasted[1] == 1:  # image 1 got the full-frame mask: only it remains
            assert res.labels[res.instance_offsets[1]:].tolist() == [1]
            np.testing.assert_array_equal(res.images[1], images[0])


def test_composite_occlusion_twin_is_the_composition() -> None:
    rng = np.random.default_rng(2)
    images, masks, offsets, _, _ = random_case(rng, 3, 9, 11)
    partner = np.array([1, 2, 0])
    hard = (rng.random((3, 9, 11)) < 0.4).astype(np.uint8)
    soft = rng.random((3, 9, 11)).astype(np.float32)
    out, areas, boxes = composite_occlusion(images, images, partner, soft, hard, masks, offsets)
    np.testing.assert_array_equal(out, composite_numpy(images, images, partner, soft))
    sample = np.repeat(np.arange(3), np.diff(offsets))
    _, ref_areas, ref_boxes = occlusion_update_numpy(masks, sample, hard)
    np.testing.assert_array_equal(areas, ref_areas)
    np.testing.assert_array_equal(boxes, ref_boxes)
    with pytest.raises(ValueError):
        composite_occlusion(images, images, partner, soft, hard, masks, offsets[:-1])


def test_gather_masks_twin() -> None:
    masks = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) % 3
    hard = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], np.uint8)
    out = gather_masks(masks, hard, np.array([2, 0, 2]), np.array([-1, 1, 0]))
    np.testing.assert_array_equal(out[0], masks[2])
    np.testing.assert_array_equal(out[1], np.where(hard[1] != 0, 0, masks[0]))
    np.testing.assert_array_equal(out[2], np.where(hard[0] != 0, 0, masks[2]))
    assert gather_masks(masks, hard, np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0, 2, 2)


def test_output_candidates_order() -> None:
    src, dest, sample = output_candidates(np.array([0, 2, 2, 5]), np.array([0, 1, 3, 3]), np.array([3, 0, 1]))
    assert src.tolist() == [0, 1, 3, 0, 1, 2, 3, 4]
    assert dest.tolist() == [True, True, False, False, False, True, True, True]
    assert sample.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_traffic_model_orders_the_representations() -> None:
    t = traffic_model(num_images=64, num_instances=1300, num_pasted=400, num_kept=1100, side=1024)
    assert t["gpu_raster_bitpacked"]["total"] < t["gpu_raster_fused"]["total"] < t["dali_masks_unfused"]["total"]
    assert all(v["total"] == sum(x for k, x in v.items() if k not in ("total", "pcie_masks")) for v in t.values())
