"""GPU parity: every CuPy launcher against its NumPy twin, on fresh random batches (a new seed
each run, printed so a failure can be replayed), with poisoned outputs (``DECAL_POISON=1``:
outputs start as 0xAB bytes, so an element the kernel never writes cannot pass) and the edge
cases: zero instances, empty masks, objects on the border, full occlusion, B = 1, sizes that
are not multiples of the block, unaligned buffers, many row bands per instance."""

from __future__ import annotations

import numpy as np
import pytest

from decal.kernels.composite import composite, composite_cupy, composite_numpy
from decal.kernels.gaussian_blur import gaussian_blur_cupy, gaussian_blur_numpy
from decal.kernels.mask_boxes import mask_boxes, mask_boxes_cupy, mask_boxes_numpy
from decal.kernels.occlusion_update import (
    occlusion_keep,
    occlusion_update_cupy,
    occlusion_update_numpy,
)
from decal.kernels.paste_alpha import paste_alpha_cupy, paste_alpha_numpy

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("poison")]  # poison and rng: tests/conftest.py

cp = pytest.importorskip("cupy")

# (B, H, W): block multiples and not, W % 4 == 0 (word path) and not, many bands (H = 517)
SHAPES = [(1, 1, 1), (1, 37, 53), (3, 37, 53), (2, 64, 96), (4, 31, 33), (2, 517, 300),
          (2, 300, 301), (5, 8, 4)]


def random_masks(rng: np.random.Generator, m: int, h: int, w: int) -> np.ndarray:
    """Empty, noisy, dense, rectangular and border-touching masks."""
    masks = np.zeros((m, h, w), dtype=np.uint8)
    for i in range(m):
        kind = i % 6 if i < 6 else rng.integers(0, 6)
        if kind == 0:
            continue
        if kind == 1:
            masks[i] = rng.random((h, w)) < 0.02
        elif kind == 2:
            masks[i] = rng.random((h, w)) < 0.7
        elif kind == 3:
            masks[i, 0, :] = masks[i, :, -1] = 1  # top and right borders
        elif kind == 4:
            masks[i, -1, 0] = 1  # bottom-left corner pixel
        else:
            y0, y1 = np.sort(rng.integers(0, h + 1, size=2))
            x0, x1 = np.sort(rng.integers(0, w + 1, size=2))
            masks[i, y0:y1, x0:x1] = rng.integers(1, 256)
    return masks


def batch(rng: np.random.Generator, b: int, h: int, w: int, m: int) -> dict:
    masks = random_masks(rng, m, h, w)
    sample = np.sort(rng.integers(0, b, size=m)).astype(np.int64)
    alpha = (rng.random((b, h, w)) < rng.uniform(0, 0.5)).astype(np.uint8)
    if m:
        alpha[sample[0]] = 1  # full occlusion of sample 0's instances
    counts = rng.integers(0, m + 1, size=b) if m else np.zeros(b, np.int64)
    lists = [np.sort(rng.choice(m, size=c, replace=False)) for c in counts]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return dict(masks=masks, sample=sample, alpha=alpha, offsets=offsets, indices=indices)


@pytest.fixture(
    params=[(shape, m) for m in (0, 1, 9) for shape in SHAPES],
    ids=lambda case: "{}x{}x{}-m{}".format(*case[0], case[1]),
)
def parity_batch(request, rng) -> tuple[int, int, dict]:
    """``(B, M, batch(...))`` for each (B, H, W) of SHAPES and M in {0, 1, 9} instances."""
    (b, h, w), m = request.param
    return b, m, batch(rng, b, h, w, m)


def unaligned(x: np.ndarray):
    """A device copy of ``x`` whose data pointer is 1 byte past an allocation (uint8 only)."""
    buf = cp.zeros(x.size + 1, dtype=x.dtype)
    view = buf[1:].reshape(x.shape)
    view[...] = cp.asarray(x)
    assert view.data.ptr % 4 != 0
    return view


# --------------------------------------------------------------------------- mask_boxes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("m", [0, 1, 9])
def test_mask_boxes_parity(rng, shape, m) -> None:
    _, h, w = shape
    masks = random_masks(rng, m, h, w)
    areas, boxes = mask_boxes_cupy(cp.asarray(masks))
    ref_areas, ref_boxes = mask_boxes_numpy(masks)
    assert areas.dtype == cp.int64 and boxes.dtype == cp.float32
    np.testing.assert_array_equal(areas.get(), ref_areas)
    np.testing.assert_array_equal(boxes.get(), ref_boxes)


def test_mask_boxes_unaligned_and_dispatch(rng) -> None:
    masks = random_masks(rng, 7, 40, 64)
    areas, boxes = mask_boxes(unaligned(masks))
    assert isinstance(areas, cp.ndarray)
    ref_areas, ref_boxes = mask_boxes_numpy(masks)
    np.testing.assert_array_equal(areas.get(), ref_areas)
    np.testing.assert_array_equal(boxes.get(), ref_boxes)


def test_mask_boxes_many_instances_one_band(rng) -> None:
    masks = random_masks(rng, 3000, 12, 20)  # more blocks than the band heuristic targets
    areas, boxes = mask_boxes_cupy(cp.asarray(masks))
    ref_areas, ref_boxes = mask_boxes_numpy(masks)
    np.testing.assert_array_equal(areas.get(), ref_areas)
    np.testing.assert_array_equal(boxes.get(), ref_boxes)


# --------------------------------------------------------------------------- paste_alpha


def test_paste_alpha_parity(parity_batch) -> None:
    b, _, d = parity_batch
    out = paste_alpha_cupy(cp.asarray(d["masks"]), d["offsets"], cp.asarray(d["indices"]), b)
    ref = paste_alpha_numpy(d["masks"], d["offsets"], d["indices"], b)
    np.testing.assert_array_equal(out.get(), ref)


def test_paste_alpha_unaligned(rng) -> None:
    d = batch(rng, 3, 20, 20, 6)
    out = paste_alpha_cupy(unaligned(d["masks"]), d["offsets"], d["indices"], 3)
    ref = paste_alpha_numpy(d["masks"], d["offsets"], d["indices"], 3)
    np.testing.assert_array_equal(out.get(), ref)


# --------------------------------------------------------------------------- occlusion


def test_occlusion_update_parity(parity_batch) -> None:
    _, m, d = parity_batch
    masks_dev = cp.asarray(d["masks"])
    new_masks, areas, boxes = occlusion_update_cupy(masks_dev, d["sample"], cp.asarray(d["alpha"]))
    ref_masks, ref_areas, ref_boxes = occlusion_update_numpy(d["masks"], d["sample"], d["alpha"])
    np.testing.assert_array_equal(masks_dev.get(), d["masks"])  # input untouched
    np.testing.assert_array_equal(new_masks.get(), ref_masks)
    np.testing.assert_array_equal(areas.get(), ref_areas)
    np.testing.assert_array_equal(boxes.get(), ref_boxes)
    if m:  # sample 0 is fully covered
        first = d["sample"] == 0
        assert not areas.get()[first].any()
    a0, b0 = mask_boxes_numpy(d["masks"])
    keep = occlusion_keep(cp.asarray(a0), cp.asarray(b0), areas, boxes)
    assert isinstance(keep, cp.ndarray)
    np.testing.assert_array_equal(keep.get(), occlusion_keep(a0, b0, ref_areas, ref_boxes))


def test_occlusion_update_unaligned(rng) -> None:
    d = batch(rng, 2, 24, 32, 5)
    out = occlusion_update_cupy(unaligned(d["masks"]), d["sample"], unaligned(d["alpha"]))
    ref = occlusion_update_numpy(d["masks"], d["sample"], d["alpha"])
    for got, want in zip(out, ref):
        np.testing.assert_array_equal(got.get(), want)


# --------------------------------------------------------------------------- blur


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_gaussian_blur_parity(rng, shape, sigma, dtype) -> None:
    alpha = rng.random(shape) < 0.3
    alpha = alpha.astype(np.uint8) if dtype == np.uint8 else (alpha * rng.random(shape))
    alpha = alpha.astype(dtype)
    out = gaussian_blur_cupy(cp.asarray(alpha), sigma).get()
    ref = gaussian_blur_numpy(alpha, sigma)
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and (out >= 0).all()  # 0xAB.. poison is negative
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigma", [60.0, 1100.0])  # untiled fallback: columns, then both
def test_gaussian_blur_huge_sigma(rng, sigma) -> None:
    alpha = (rng.random((2, 37, 53)) < 0.3).astype(np.uint8)
    out = gaussian_blur_cupy(cp.asarray(alpha), sigma).get()
    ref = gaussian_blur_numpy(alpha, sigma)
    assert (out >= 0).all()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- composite


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("alpha_kind", ["soft", "hard_u8", "zeros", "ones"])
def test_composite_parity(rng, shape, c, alpha_kind) -> None:
    b, h, w = shape
    b2 = b + 1
    dst = rng.integers(0, 256, size=(b, h, w, c), dtype=np.uint8)
    src = rng.integers(0, 256, size=(b2, h, w, c), dtype=np.uint8)
    partner = rng.integers(0, b2, size=b).astype(np.int64)
    alpha = {
        "soft": rng.random((b, h, w)).astype(np.float32),
        "hard_u8": (rng.random((b, h, w)) < 0.5).astype(np.uint8),
        "zeros": np.zeros((b, h, w), np.float32),
        "ones": np.ones((b, h, w), np.float32),
    }[alpha_kind]
    out = composite_cupy(cp.asarray(dst), cp.asarray(src), partner, cp.asarray(alpha))
    ref = composite_numpy(dst, src, partner, alpha)
    np.testing.assert_array_equal(out.get(), ref)
    if alpha_kind == "zeros":
        np.testing.assert_array_equal(out.get(), dst)


def test_composite_same_array_and_dispatch(rng) -> None:
    images = rng.integers(0, 256, size=(4, 37, 53, 3), dtype=np.uint8)
    partner = np.array([1, 2, 3, 0], np.int64)
    alpha = rng.random((4, 37, 53)).astype(np.float32)
    dev = cp.asarray(images)
    out = composite(dev, dev, cp.asarray(partner), cp.asarray(alpha))
    assert isinstance(out, cp.ndarray)
    np.testing.assert_array_equal(out.get(), composite_numpy(images, images, partner, alpha))
    np.testing.assert_array_equal(dev.get(), images)


def test_full_chain_on_a_stream(rng) -> None:
    """paste_alpha -> blur -> composite -> occlusion on a non-default stream, vs the twins."""
    b, h, w, m = 4, 45, 67, 12
    d = batch(rng, b, h, w, m)
    images = rng.integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)
    partner = np.roll(np.arange(b), 1).astype(np.int64)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        masks = cp.asarray(d["masks"])
        hard = paste_alpha_cupy(masks, d["offsets"], d["indices"], b)
        soft = gaussian_blur_cupy(hard, 1.5)
        out = composite_cupy(cp.asarray(images), cp.asarray(images), partner, soft)
        new_masks, areas, boxes = occlusion_update_cupy(masks, d["sample"], hard)
    stream.synchronize()
    ref_hard = paste_alpha_numpy(d["masks"], d["offsets"], d["indices"], b)
    ref_soft = gaussian_blur_numpy(ref_hard, 1.5)
    np.testing.assert_array_equal(hard.get(), ref_hard)
    np.testing.assert_allclose(soft.get(), ref_soft, rtol=0, atol=1e-5)
    if np.array_equal(soft.get(), ref_soft):  # bit-identical alpha -> identical pixels
        np.testing.assert_array_equal(out.get(), composite_numpy(images, images, partner, ref_soft))
    for got, want in zip((new_masks, areas, boxes),
                         occlusion_update_numpy(d["masks"], d["sample"], ref_hard)):
        np.testing.assert_array_equal(got.get(), want)
