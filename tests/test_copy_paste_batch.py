"""Copy-Paste over a batch (NumPy path), checked against an independent per-image reference
of mmdetection's ``CopyPaste._copy_paste`` and against pycocotools' boxes and areas."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decal.kernels.copy_paste import CopyPasteParams, copy_paste_batch
from decal.kernels.paste_plan import draw_paste_plan, draw_partners


def random_batch(rng: np.random.Generator, batch_size: int, size: int, max_instances: int):
    counts = rng.integers(0, max_instances + 1, size=batch_size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    masks = np.zeros((int(offsets[-1]), size, size), dtype=np.uint8)
    for m in masks:  # rectangles and blobs, some touching the border, some empty
        kind = rng.integers(0, 4)
        if kind == 0:
            continue
        y0, x0 = rng.integers(0, size, size=2)
        y1, x1 = y0 + rng.integers(1, size + 1), x0 + rng.integers(1, size + 1)
        m[y0:y1, x0:x1] = 1
        if kind == 2:
            m &= (rng.random((size, size)) < 0.7).astype(np.uint8)
    images = rng.integers(0, 256, size=(batch_size, size, size, 3), dtype=np.uint8)
    labels = rng.integers(1, 10, size=len(masks)).astype(np.int64)
    iscrowd = rng.random(len(masks)) < 0.15
    return images, masks, offsets, labels, iscrowd


def reference_copy_paste(images, masks, offsets, labels, plan, params):
    """Per-image restatement of mmdetection CopyPaste._copy_paste with decal's additions
    (empty instances dropped before pasting, fully occluded ones always dropped)."""
    out = []
    for b in range(len(images)):
        p = int(plan.partner[b])
        dst = masks[offsets[b] : offsets[b + 1]].astype(bool)
        chosen = plan.paste_indices[plan.paste_offsets[b] : plan.paste_offsets[b + 1]]
        src = masks[chosen].astype(bool)
        composed = src.any(axis=0) if len(src) else np.zeros(images.shape[1:3], bool)
        updated = dst & ~composed
        before = np.array([_box(m) for m in dst]).reshape(-1, 4)
        after = np.array([_box(m) for m in updated]).reshape(-1, 4)
        bbox_ok = np.all(np.abs(after - before) <= params.bbox_occluded_thr, axis=-1)
        mask_ok = updated.sum(axis=(1, 2)) > params.mask_occluded_thr
        valid = (bbox_ok | mask_ok) & (updated.sum(axis=(1, 2)) > 0)
        a = composed[..., None].astype(np.float32)
        image = np.floor(images[b] * (1 - a) + images[p] * a + 0.5).astype(np.uint8)
        out.append(
            dict(
                image=image,
                masks=np.concatenate([updated[valid], src]).astype(np.uint8),
                labels=np.concatenate([labels[offsets[b] : offsets[b + 1]][valid], labels[chosen]]),
            )
        )
    return out


def _box(mask: np.ndarray) -> np.ndarray:
    """Box via pycocotools (x, y, w, h) → xyxy: the anchor nobody here wrote."""
    x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
    return np.array([x, y, x + w, y + h], dtype=np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_batch_matches_per_image_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, masks, offsets, labels, iscrowd = random_batch(rng, batch_size=4, size=40, max_instances=6)
    params = CopyPasteParams(mask_occluded_thr=30, bbox_occluded_thr=3)
    result = copy_paste_batch(images, masks, offsets, labels, iscrowd, params, np.random.default_rng(seed))
    expected = reference_copy_paste(images, masks, offsets, labels, result.plan, params)
    for b, exp in enumerate(expected):
        rows = slice(result.instance_offsets[b], result.instance_offsets[b + 1])
        np.testing.assert_array_equal(result.images[b], exp["image"])
        np.testing.assert_array_equal(result.masks[rows], exp["masks"])
        np.testing.assert_array_equal(result.labels[rows], exp["labels"])
    # every box and area is pycocotools' box and area of its mask
    if len(result.masks):
        rle = mask_utils.encode(np.asfortranarray(result.masks.transpose(1, 2, 0)))
        np.testing.assert_array_equal(result.areas, mask_utils.area(rle))
        np.testing.assert_array_equal(result.boxes, np.stack([_box(m) for m in result.masks]))


def test_crowd_and_empty_instances_are_never_pasted() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        images, masks, offsets, labels, iscrowd = random_batch(rng, 3, 24, 5)
        result = copy_paste_batch(images, masks, offsets, labels, iscrowd, CopyPasteParams(), rng)
        pasted = result.plan.paste_indices
        assert not iscrowd[pasted].any()
        assert masks[pasted].any(axis=(1, 2)).all()
        assert (result.areas > 0).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cap=st.integers(0, 4), batch_size=st.integers(1, 4))
def test_pasted_count_respects_limits(seed: int, cap: int, batch_size: int) -> None:
    rng = np.random.default_rng(seed)
    images, masks, offsets, labels, iscrowd = random_batch(rng, batch_size, 16, 6)
    result = copy_paste_batch(images, masks, offsets, labels, iscrowd, CopyPasteParams(max_num_pasted=cap), rng)
    pasteable = masks.any(axis=(1, 2)) & ~iscrowd
    for b in range(batch_size):
        p = result.plan.partner[b]
        available = int(pasteable[offsets[p] : offsets[p + 1]].sum()) if p != b else 0
        n = int(result.plan.num_pasted[b])
        assert 0 <= n <= min(cap, available)
        rows = slice(result.instance_offsets[b], result.instance_offsets[b + 1])
        assert int(result.pasted[rows].sum()) == n
        assert result.pasted[rows][len(result.pasted[rows]) - n :].all()  # appended last


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_no_destination_mask_keeps_a_pasted_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images, masks, offsets, labels, iscrowd = random_batch(rng, 3, 20, 5)
    result = copy_paste_batch(images, masks, offsets, labels, iscrowd, CopyPasteParams(), rng)
    for b in range(3):
        chosen = result.plan.paste_indices[result.plan.paste_offsets[b] : result.plan.paste_offsets[b + 1]]
        alpha = masks[chosen].any(axis=0) if len(chosen) else np.zeros((20, 20), bool)
        rows = np.arange(result.instance_offsets[b], result.instance_offsets[b + 1])
        kept = rows[~result.pasted[rows]]
        assert not (result.masks[kept].astype(bool) & alpha).any()


def test_zero_instance_images_pass_through_unchanged() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((0, 16, 16), dtype=np.uint8)
    offsets = np.zeros(4, dtype=np.int64)
    result = copy_paste_batch(
        images, masks, offsets, np.empty(0, np.int64), np.empty(0, bool), CopyPasteParams(blend_sigma=2.0), rng
    )
    np.testing.assert_array_equal(result.images, images)
    assert result.masks.shape == (0, 16, 16) and result.boxes.shape == (0, 4)
    np.testing.assert_array_equal(result.instance_offsets, offsets)


def test_full_occlusion_drops_destination_instance() -> None:
    images = np.zeros((2, 12, 12, 3), dtype=np.uint8)
    images[1] = 200
    masks = np.zeros((2, 12, 12), dtype=np.uint8)
    masks[0, 2:5, 2:5] = 1  # image 0's object
    masks[1, 1:8, 1:8] = 1  # image 1's object covers it entirely
    offsets = np.array([0, 1, 2])
    labels = np.array([3, 7])
    params = CopyPasteParams(max_num_pasted=1, mask_occluded_thr=0, bbox_occluded_thr=100)
    for seed in range(50):  # find a draw where image 0 receives image 1's object
        result = copy_paste_batch(images, masks, offsets, labels, np.zeros(2, bool), params, np.random.default_rng(seed))
        if result.plan.num_pasted[0] == 1:
            break
    else:
        pytest.fail("no draw pasted into image 0")
    rows = slice(result.instance_offsets[0], result.instance_offsets[1])
    np.testing.assert_array_equal(result.labels[rows], [7])  # the occluded 3 is gone
    np.testing.assert_array_equal(result.boxes[rows], [[1, 1, 8, 8]])
    assert (result.images[0][1:8, 1:8] == 200).all() and (result.images[0][0] == 0).all()


def test_blend_sigma_softens_edges_only_in_the_image() -> None:
    images = np.stack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)])
    masks = np.zeros((1, 32, 32), dtype=np.uint8)
    masks[0, 8:24, 8:24] = 1
    offsets = np.array([0, 0, 1])
    params = CopyPasteParams(blend_sigma=2.0)
    for seed in range(50):
        result = copy_paste_batch(images, masks, offsets, np.array([5]), np.zeros(1, bool), params, np.random.default_rng(seed))
        if result.plan.num_pasted[0] == 1:
            break
    edge_row = result.images[0][16, :, 0]
    assert 0 < edge_row[8] < 255 and 0 < edge_row[7] < 255  # soft transition
    assert edge_row[16] >= 250 and edge_row[0] == 0
    rows = slice(result.instance_offsets[0], result.instance_offsets[1])
    np.testing.assert_array_equal(result.masks[rows][0], masks[0])  # the mask stays hard


def test_partners_are_a_derangement() -> None:
    rng = np.random.default_rng(0)
    for batch_size in range(2, 9):
        partner = draw_partners(rng, batch_size)
        assert sorted(partner) == list(range(batch_size))
        assert (partner != np.arange(batch_size)).all()
    assert draw_partners(rng, 1).tolist() == [0]


def test_plan_is_a_function_of_the_generator() -> None:
    offsets = np.array([0, 3, 3, 8])
    pasteable = np.array([1, 1, 0, 1, 1, 1, 1, 0], bool)
    a = draw_paste_plan(np.random.default_rng(9), offsets, pasteable, 100)
    b = draw_paste_plan(np.random.default_rng(9), offsets, pasteable, 100)
    np.testing.assert_array_equal(a.paste_indices, b.paste_indices)
    np.testing.assert_array_equal(a.partner, b.partner)
    assert not pasteable[a.paste_indices].size or pasteable[a.paste_indices].all()
