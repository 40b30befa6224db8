"""CPU tests of the kernels' NumPy twins (the specification): against pycocotools and
independent references, and hypothesis properties. Fast; no GPU."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decal.kernels.composite import composite, composite_numpy
from decal.kernels.gaussian_blur import gaussian_blur, gaussian_blur_numpy, gaussian_kernel_1d
from decal.kernels.mask_boxes import mask_boxes, mask_boxes_numpy
from decal.kernels.occlusion_update import (
    occlusion_keep,
    occlusion_update,
    occlusion_update_numpy,
)
from decal.kernels.paste_alpha import paste_alpha, paste_alpha_numpy

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------- helpers


def random_masks(rng: np.random.Generator, m: int, h: int, w: int) -> np.ndarray:
    """Masks mixing sparse noise, dense noise, rectangles (often on a border) and empties."""
    masks = np.zeros((m, h, w), dtype=np.uint8)
    for i in range(m):
        kind = rng.integers(0, 5)
        if kind == 0:
            continue  # empty
        if kind == 1:
            masks[i] = rng.random((h, w)) < rng.uniform(0.0, 0.1)
        elif kind == 2:
            masks[i] = rng.random((h, w)) < rng.uniform(0.3, 1.0)
        else:
            y0, y1 = np.sort(rng.integers(0, h + 1, size=2))
            x0, x1 = np.sort(rng.integers(0, w + 1, size=2))
            if kind == 4:  # snap to borders
                y0, x1 = 0, w
            masks[i, y0:y1, x0:x1] = 1
    return masks


def tight_box(mask: np.ndarray) -> tuple[int, list[float]]:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0, [0.0, 0.0, 0.0, 0.0]
    return len(ys), [xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0]


def coco_reference(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas and xyxy boxes through pycocotools RLE (toBbox xywh -> xyxy)."""
    m, h, w = masks.shape
    if m == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks != 0, 0, -1).astype(np.uint8)))
    areas = mask_utils.area(rles).astype(np.int64)
    xywh = mask_utils.toBbox(rles)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    return areas, xyxy


@st.composite
def batches(draw: st.DrawFn, max_m: int = 6) -> dict:
    """A random batch: masks (M, H, W), their samples, a hard alpha and a paste plan."""
    b = draw(st.integers(1, 4))
    h = draw(st.integers(1, 48))
    w = draw(st.integers(1, 48))
    m = draw(st.integers(0, max_m))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = random_masks(rng, m, h, w)
    sample = np.sort(rng.integers(0, b, size=m)).astype(np.int64)
    alpha = (rng.random((b, h, w)) < rng.uniform(0, 1)).astype(np.uint8)
    counts = rng.integers(0, m + 1, size=b) if m else np.zeros(b, np.int64)
    lists = [np.sort(rng.choice(m, size=c, replace=False)) for c in counts]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return dict(b=b, h=h, w=w, m=m, rng=rng, masks=masks, sample=sample, alpha=alpha,
                offsets=offsets, indices=indices)


# --------------------------------------------------------------------------- mask_boxes


@pytest.mark.parametrize("seed", range(5))
def test_mask_boxes_matches_pycocotools_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 80, size=2)
    masks = random_masks(rng, 12, int(h), int(w))
    areas, boxes = mask_boxes_numpy(masks)
    ref_areas, ref_boxes = coco_reference(masks)
    assert areas.dtype == np.int64 and boxes.dtype == np.float32
    np.testing.assert_array_equal(areas, ref_areas)
    np.testing.assert_array_equal(boxes, ref_boxes)


def edge_case_masks() -> np.ndarray:
    h, w = 17, 23
    masks = np.zeros((9, h, w), dtype=np.uint8)
    # 0: empty
    masks[1, 0, :] = 1  # top row
    masks[2, -1, :] = 1  # bottom row
    masks[3, :, 0] = 1  # left column
    masks[4, :, -1] = 1  # right column
    masks[5, 8, 11] = 1  # single pixel
    masks[6] = 1  # full image
    masks[7, 0, 0] = masks[7, -1, -1] = 1  # opposite corners
    masks[8, 3:5, 4:9] = 255  # nonzero other than 1
    return masks


def test_mask_boxes_edge_cases_match_pycocotools() -> None:
    masks = edge_case_masks()
    areas, boxes = mask_boxes(masks)
    ref_areas, ref_boxes = coco_reference(masks)
    np.testing.assert_array_equal(areas, ref_areas)
    np.testing.assert_array_equal(boxes, ref_boxes)
    np.testing.assert_array_equal(boxes[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(boxes[5], [11, 8, 12, 9])
    np.testing.assert_array_equal(boxes[6], [0, 0, 23, 17])
    assert areas[6] == 17 * 23


def test_mask_boxes_zero_instances() -> None:
    areas, boxes = mask_boxes(np.zeros((0, 5, 7), np.uint8))
    assert areas.shape == (0,) and areas.dtype == np.int64
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(batches())
def test_occlusion_update_properties(batch: dict) -> None:
    masks, sample, alpha = batch["masks"], batch["sample"], batch["alpha"]
    before = masks.copy()
    new_masks, areas, boxes = occlusion_update(masks, sample, alpha)
    np.testing.assert_array_equal(masks, before)  # out of place
    assert new_masks.shape == masks.shape and new_masks.dtype == np.uint8
    under = alpha[sample] != 0
    assert not np.any(new_masks[under]), "a pixel under alpha survived"
    np.testing.assert_array_equal(new_masks[~under], masks[~under])
    for i in range(batch["m"]):
        area, box = tight_box(new_masks[i])
        assert areas[i] == area
        np.testing.assert_array_equal(boxes[i], box)


@SETTINGS
@given(batches())
def test_paste_alpha_is_union(batch: dict) -> None:
    masks, offsets, indices = batch["masks"], batch["offsets"], batch["indices"]
    alpha = paste_alpha(masks, offsets, indices, batch["b"])
    assert alpha.shape == (batch["b"], batch["h"], batch["w"]) and alpha.dtype == np.uint8
    for b in range(batch["b"]):
        expect = np.zeros((batch["h"], batch["w"]), dtype=np.uint8)
        for j in indices[offsets[b] : offsets[b + 1]]:
            expect |= (masks[j] != 0).astype(np.uint8)
        np.testing.assert_array_equal(alpha[b], expect)


@st.composite
def image_batches(draw: st.DrawFn) -> dict:
    b = draw(st.integers(1, 4))
    h = draw(st.integers(1, 48))
    w = draw(st.integers(1, 48))
    c = draw(st.sampled_from([1, 3, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b2 = draw(st.integers(1, 4))
    return dict(
        dst=rng.integers(0, 256, size=(b, h, w, c), dtype=np.uint8),
        src=rng.integers(0, 256, size=(b2, h, w, c), dtype=np.uint8),
        partner=rng.integers(0, b2, size=b).astype(np.int64),
        hard=(rng.random((b, h, w)) < 0.5).astype(np.uint8),
        soft=rng.random((b, h, w)).astype(np.float32),
    )


@SETTINGS
@given(image_batches())
def test_composite_hard_alpha_picks_src_or_dst(batch: dict) -> None:
    dst, src, partner, hard = batch["dst"], batch["src"], batch["partner"], batch["hard"]
    expect = np.where(hard[..., None] != 0, src[partner], dst)
    np.testing.assert_array_equal(composite(dst, src, partner, hard), expect)
    np.testing.assert_array_equal(composite(dst, src, partner, hard.astype(np.float32)), expect)


@SETTINGS
@given(image_batches())
def test_composite_alpha_zero_is_dst(batch: dict) -> None:
    dst, src, partner = batch["dst"], batch["src"], batch["partner"]
    zeros = np.zeros(dst.shape[:3], dtype=np.float32)
    out = composite(dst, src, partner, zeros)
    np.testing.assert_array_equal(out, dst)
    np.testing.assert_array_equal(composite(dst, src, partner, zeros.astype(np.uint8)), dst)
    assert out is not dst


@SETTINGS
@given(image_batches())
def test_composite_soft_alpha_rounds_the_blend(batch: dict) -> None:
    dst, src, partner, soft = batch["dst"], batch["src"], batch["partner"], batch["soft"]
    out = composite_numpy(dst, src, partner, soft)
    a = soft[..., None].astype(np.float64)
    exact = dst * (1 - a) + src[partner] * a
    # float32 rounding may flip a result that lies within ~1e-4 of a .5 boundary
    assert np.all(np.abs(out.astype(np.float64) - exact) <= 0.5 + 1e-3)


@SETTINGS
@given(batches(max_m=0), st.floats(0.3, 4.0))
def test_gaussian_blur_properties(batch: dict, sigma: float) -> None:
    alpha = batch["alpha"]
    np.testing.assert_array_equal(gaussian_blur(alpha, 0.0), alpha.astype(np.float32))
    out = gaussian_blur(alpha, sigma)
    assert out.dtype == np.float32 and out.shape == alpha.shape
    # float32 weights sum to 1 within a few ulps only
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    value = batch["rng"].random(dtype=np.float32)
    const = np.full(alpha.shape, value, dtype=np.float32)
    np.testing.assert_allclose(gaussian_blur(const, sigma), const, rtol=0, atol=1e-6)
    ones = np.ones(alpha.shape, dtype=np.uint8)
    np.testing.assert_allclose(gaussian_blur(ones, sigma), 1.0, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("sigma", [0.3, 1.0, 1.7, 3.0])
def test_gaussian_kernel_1d(sigma: float) -> None:
    w = gaussian_kernel_1d(sigma)
    r = int(np.ceil(3 * sigma))
    assert w.dtype == np.float32 and w.shape == (2 * r + 1,)
    x = np.arange(-r, r + 1)
    ref = np.exp(-(x**2) / (2 * sigma**2))
    np.testing.assert_array_equal(w, (ref / ref.sum()).astype(np.float32))
    np.testing.assert_array_equal(w, w[::-1])
    assert abs(float(w.astype(np.float64).sum()) - 1) < 1e-6


def test_gaussian_kernel_1d_no_blur() -> None:
    np.testing.assert_array_equal(gaussian_kernel_1d(0.0), [1.0])


@pytest.mark.parametrize("sigma", [0.6, 1.5, 5.0])  # 5.0: radius 15 > half the width
def test_gaussian_blur_matches_2d_reference(sigma: float) -> None:
    rng = np.random.default_rng(7)
    alpha = (rng.random((2, 13, 21)) < 0.3).astype(np.uint8)
    out = gaussian_blur_numpy(alpha, sigma)
    w = gaussian_kernel_1d(sigma).astype(np.float64)
    r = (len(w) - 1) // 2
    b, h, wd = alpha.shape
    ref = np.zeros(alpha.shape, np.float64)
    for dy in range(-r, r + 1):
        ys = np.clip(np.arange(h) + dy, 0, h - 1)
        for dx in range(-r, r + 1):
            xs = np.clip(np.arange(wd) + dx, 0, wd - 1)
            ref += w[dy + r] * w[dx + r] * alpha[:, ys][:, :, xs]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- occlusion


def test_full_occlusion_drops_instance() -> None:
    masks = np.zeros((3, 20, 30), dtype=np.uint8)
    masks[0, 2:6, 3:9] = 1  # fully covered
    masks[1, 10:20, 0:30] = 1  # untouched, touches borders
    masks[2, 0:3, 0:5] = 1  # under sample 0's alpha region, but it belongs to sample 1
    sample = np.array([0, 0, 1], np.int64)
    alpha = np.zeros((2, 20, 30), np.uint8)
    alpha[0, 0:8, 0:10] = 1
    areas0, boxes0 = mask_boxes(masks)
    new_masks, areas, boxes = occlusion_update(masks, sample, alpha)
    assert areas[0] == 0
    np.testing.assert_array_equal(boxes[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(new_masks[1:], masks[1:])
    np.testing.assert_array_equal(areas[1:], areas0[1:])
    keep = occlusion_keep(areas0, boxes0, areas, boxes)
    assert keep.dtype == bool
    np.testing.assert_array_equal(keep, [False, True, True])
    # zero pixels left is always dropped, even with a box "unmoved" within the threshold
    np.testing.assert_array_equal(
        occlusion_keep(np.array([4]), np.zeros((1, 4), np.float32), np.array([0]),
                       np.zeros((1, 4), np.float32)),
        [False],
    )


def test_occlusion_keep_rule() -> None:
    before = np.array([[10, 10, 60, 60]] * 4, np.float32)
    after = np.array(
        [
            [10, 10, 40, 60],  # moved 20, but 500 pixels left -> keep (mask rule)
            [12, 10, 60, 55],  # moved <= 10 everywhere, 50 pixels -> keep (box rule)
            [10, 10, 30, 60],  # moved 30, 300 pixels (not > 300) -> drop
            [10, 10, 50, 60],  # moved exactly 10, 1 pixel -> keep (<= threshold)
        ],
        np.float32,
    )
    areas_after = np.array([500, 50, 300, 1], np.int64)
    keep = occlusion_keep(np.full(4, 2500), before, areas_after, after)
    np.testing.assert_array_equal(keep, [True, True, False, True])
    keep = occlusion_keep(np.full(4, 2500), before, areas_after, after, 600, 1.0)
    np.testing.assert_array_equal(keep, [False, False, False, False])


# --------------------------------------------------------------------------- M = 0


def test_zero_instances_everywhere() -> None:
    b, h, w = 3, 11, 13
    masks = np.zeros((0, h, w), np.uint8)
    offsets = np.zeros(b + 1, np.int64)
    alpha = paste_alpha_numpy(masks, offsets, np.zeros(0, np.int64), b)
    assert alpha.shape == (b, h, w) and not alpha.any()
    new_masks, areas, boxes = occlusion_update_numpy(masks, np.zeros(0, np.int64), alpha)
    assert new_masks.shape == (0, h, w) and areas.shape == (0,) and boxes.shape == (0, 4)
    keep = occlusion_keep(areas, boxes, areas, boxes)
    assert keep.shape == (0,) and keep.dtype == bool
    areas, boxes = mask_boxes_numpy(masks)
    assert areas.shape == (0,) and boxes.shape == (0, 4)
    blurred = gaussian_blur(alpha, 1.0)
    assert blurred.shape == (b, h, w) and not blurred.any()
    images = np.zeros((b, h, w, 3), np.uint8)
    out = composite(images, images, np.arange(b), alpha)
    np.testing.assert_array_equal(out, images)


def test_dispatch_numpy_returns_numpy() -> None:
    masks = edge_case_masks()
    for result in (*mask_boxes(masks), paste_alpha(masks, np.array([0, 2]), np.array([1, 5]), 1)):
        assert type(result) is np.ndarray


def test_output_order_matches_a_per_image_listing():
    """Per image: its kept destination instances in input order, then its pasted ones."""
    from decal.kernels.output_order import output_order

    rng = np.random.default_rng(7)
    for _ in range(50):
        batch = int(rng.integers(1, 6))
        kept = np.sort(rng.integers(0, batch, size=int(rng.integers(0, 12))))
        pasted = np.sort(rng.integers(0, batch, size=int(rng.integers(0, 12))))
        offsets, kept_rows, pasted_rows = output_order(kept, pasted, batch)
        listing: list[tuple[str, int]] = []
        for b in range(batch):
            listing += [("kept", i) for i in np.flatnonzero(kept == b)]
            listing += [("pasted", i) for i in np.flatnonzero(pasted == b)]
        expected_offsets = np.cumsum([0] + [int((kept == b).sum() + (pasted == b).sum()) for b in range(batch)])
        np.testing.assert_array_equal(offsets, expected_offsets)
        for row, (kind, i) in enumerate(listing):
            assert (kept_rows if kind == "kept" else pasted_rows)[i] == row


def test_place_rows_puts_kept_and_pasted_values_at_their_output_rows():
    from decal.kernels.output_order import output_order, place_rows

    _, kept_rows, pasted_rows = output_order(np.array([0, 1, 1]), np.array([0, 1]), 2)  # rows 0 2 3 | 1 4
    labels = place_rows(5, np.int64, kept_rows, np.array([10, 11, 12]), pasted_rows, np.array([20, 21]))
    np.testing.assert_array_equal(labels, [10, 20, 11, 12, 21])
    assert labels.dtype == np.int64
    flags = place_rows(5, bool, kept_rows, np.zeros(3, bool), pasted_rows, True)
    np.testing.assert_array_equal(flags, [False, True, False, False, True])
    boxes = place_rows(5, np.float32, kept_rows, np.ones((3, 4)), pasted_rows, np.zeros((2, 4)))
    assert boxes.shape == (5, 4) and boxes.dtype == np.float32 and boxes[[0, 2, 3]].all() and not boxes[[1, 4]].any()
