"""The copy-paste step in per-sample chunks on a thread pool (kernels/parallel_batch.py) and the
exact host formulations it uses (kernels/exact_host.py): equal, bit for bit, to the batched
NumPy twins, which stay the specification."""

from __future__ import annotations

import numpy as np
import pytest

from decal.dali_pipes.copy_paste.pipeline import CopyPasteStep
from decal.kernels import exact_host, parallel_batch as pb
from decal.kernels.composite import composite_numpy
from decal.kernels.copy_paste import CopyPasteParams, copy_paste_batch
from decal.kernels.gaussian_blur import gaussian_blur_numpy
from decal.kernels.mask_boxes import mask_boxes_numpy
from decal.kernels.occlusion_update import occlusion_update_numpy
from decal.kernels.paste_alpha import paste_alpha_numpy
from decal.kernels.paste_plan import draw_paste_plan


def _batch(seed: int, counts: list[int], h: int = 37, w: int = 48):
    """Images (B, h, w, 3), masks (M, h, w) in {0, 1} with an empty mask, a full one and
    border objects, their offsets, labels and crowd flags."""
    rng = np.random.default_rng(seed)
    b, m = len(counts), sum(counts)
    images = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    masks = np.zeros((m, h, w), dtype=np.uint8)
    for i in range(m):
        kind = i % 5
        if kind == 0:
            continue  # empty
        if kind == 1:
            masks[i] = 1  # the whole image: fully occluded by any paste of the same size
            continue
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
        if kind == 2:
            y0, x1 = 0, w  # touches the top and right borders
        masks[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = rng.integers(1, 9, m).astype(np.int64)
    iscrowd = rng.random(m) < 0.1
    return images, masks, offsets, labels, iscrowd


@pytest.fixture(params=[1, 2, 3], ids=["1-thread", "2-threads", "3-threads"])
def pool(request):
    return pb.shared_pool(request.param)


@pytest.mark.parametrize("counts", [[3, 0, 5, 1], [0, 0], [7]], ids=["mixed", "no-instances", "one-image"])
def test_chunked_kernels_equal_the_twins(pool, counts) -> None:
    images, masks, offsets, _, _ = _batch(1, counts)
    b = len(counts)
    for got, want in zip(pb.mask_boxes_chunked(masks, pool), mask_boxes_numpy(masks)):
        assert got.dtype == want.dtype and np.array_equal(got, want)

    rng = np.random.default_rng(2)
    picks = [np.sort(rng.choice(max(1, len(masks)), rng.integers(0, len(masks) + 1), replace=False)) for _ in range(b)]
    paste_offsets = np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(np.int64)
    paste_indices = np.concatenate(picks).astype(np.int64) if len(masks) else np.zeros(0, np.int64)
    if not len(masks):
        paste_offsets[:] = 0
    alpha = pb.paste_alpha_chunked(masks, paste_offsets, paste_indices, b, pool)
    assert np.array_equal(alpha, paste_alpha_numpy(masks, paste_offsets, paste_indices, b))
    assert alpha.any() or not len(paste_indices) or not masks[paste_indices].any()

    partner = rng.integers(0, b, b)
    assert np.array_equal(pb.composite_chunked(images, images, partner, alpha, pool), composite_numpy(images, images, partner, alpha))
    soft = pb.gaussian_blur_chunked(alpha, 1.5, pool)
    assert soft.dtype == np.float32 and np.array_equal(soft, gaussian_blur_numpy(alpha, 1.5))
    assert np.array_equal(pb.composite_chunked(images, images, partner, soft, pool), composite_numpy(images, images, partner, soft))

    sample = np.repeat(np.arange(b), counts)
    for got, want in zip(pb.occlusion_update_chunked(masks, sample, alpha, pool), occlusion_update_numpy(masks, sample, alpha)):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_exact_host_forms_equal_the_twins_on_odd_widths_and_values() -> None:
    rng = np.random.default_rng(5)
    for h, w in [(13, 29), (16, 64), (1, 1), (5, 8)]:  # widths not a multiple of 8 take the byte path
        masks = (rng.random((6, h, w)) < 0.2).astype(np.uint8) * rng.integers(1, 256, (6, h, w), dtype=np.uint8)
        masks[0] = 0
        areas, boxes = np.empty(6, np.int64), np.empty((6, 4), np.float32)
        exact_host.mask_boxes_rows(masks, areas, boxes)
        want_areas, want_boxes = mask_boxes_numpy(masks)
        assert np.array_equal(areas, want_areas) and np.array_equal(boxes, want_boxes)

        alpha = (rng.random((2, h, w)) < 0.5).astype(np.uint8) * 7  # any nonzero value is "pasted"
        sample = rng.integers(0, 2, 6)
        out = np.empty_like(masks)
        exact_host.occlusion_update_rows(masks, sample, exact_host.uncovered(alpha), out)
        assert np.array_equal(out, occlusion_update_numpy(masks, sample, alpha)[0])

        dst, src = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        got = np.empty_like(dst)
        exact_host.composite_hard(dst, src, alpha[0], got)
        assert np.array_equal(got, composite_numpy(dst[None], src[None], np.zeros(1, np.int64), alpha[:1])[0])


@pytest.mark.parametrize("blend_sigma", [0.0, 2.0], ids=["hard", "blurred"])
def test_threaded_copy_paste_batch_is_the_batched_one(pool, blend_sigma) -> None:
    images, masks, offsets, labels, iscrowd = _batch(7, [4, 0, 6, 2, 5])
    params = CopyPasteParams(blend_sigma=blend_sigma, mask_occluded_thr=40)
    want = copy_paste_batch(images, masks, offsets, labels, iscrowd, params, np.random.default_rng(3))
    got = copy_paste_batch(images, masks, offsets, labels, iscrowd, params, np.random.default_rng(3), ops=pb.BatchOps.threaded(pool))
    assert want.pasted.any() and not want.iscrowd[want.pasted].any()
    for name in ("images", "masks", "boxes", "areas", "instance_offsets", "labels", "iscrowd", "pasted"):
        a, b = getattr(want, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name


def test_step_threads_give_the_serial_step_outputs() -> None:
    images, masks, offsets, labels, iscrowd = _batch(11, [2, 5, 0, 3])
    per_image = [np.ascontiguousarray(np.moveaxis(np.concatenate([masks[a:b], np.zeros((1,) + masks.shape[1:], np.uint8)]), 0, 2))
                 for a, b in zip(offsets[:-1], offsets[1:])]
    inputs = (list(images), per_image, [labels[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
              [iscrowd[a:b].astype(np.uint8) for a, b in zip(offsets[:-1], offsets[1:])],
              [np.array([3, 1, 0, 4, 9], np.int64)] * 4)
    serial = CopyPasteStep(CopyPasteParams())(*inputs)
    for threads in (1, 2):
        for want, got in zip(serial, CopyPasteStep(CopyPasteParams(), threads)(*inputs)):
            assert len(want) == len(got) == 4
            assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(want, got))


def test_bad_thread_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        CopyPasteStep(None, 0)
    with pytest.raises(ValueError, match="threads"):
        pb.shared_pool(0)


def test_row_chunks_cover_every_row_once() -> None:
    for count in (0, 1, 5, 100):
        chunks = pb.row_chunks(count, 3)
        assert sum(s.stop - s.start for s in chunks) == count and all(s.stop > s.start for s in chunks)
        assert [s.start for s in chunks] == ([0] + [s.stop for s in chunks[:-1]] if count else [])


def test_threaded_ops_draw_the_plan_once_from_the_same_inputs() -> None:
    images, masks, offsets, labels, iscrowd = _batch(3, [2, 2])
    calls = []

    def spy(*args):
        calls.append(args[1:])
        return draw_paste_plan(*args)

    copy_paste_batch(images, masks, offsets, labels, iscrowd, CopyPasteParams(), np.random.default_rng(0), draw_plan=spy,
                     ops=pb.BatchOps.threaded(pb.shared_pool(2)))
    assert len(calls) == 1 and np.array_equal(calls[0][0], offsets)


def test_the_step_pool_is_started_outside_dalis_threads(tmp_path) -> None:
    """A fresh process runs the default CPU loader with a 2-thread step: the step's pool threads
    are started where the graph is built, so no DALI native thread becomes a ``Dummy-N``
    thread of ``threading`` (an entry that outlives its thread; the server's leak test compares
    thread names)."""
    import subprocess
    import sys

    from coco_factory import write_coco_dataset

    json_path, image_dir = write_coco_dataset(tmp_path, num_images=4, instances_per_image=(1, 3), seed=1)
    script = (
        "import threading\n"
        "from decal.dali_pipes.copy_paste.loader import CopyPasteLoader\n"
        f"with CopyPasteLoader({str(json_path)!r}, {str(image_dir)!r}, batch_size=2, output_size=32, device='cpu', num_threads=2) as loader:\n"
        "    list(loader)\n"
        "print(sorted(t.name for t in threading.enumerate() if t.name.startswith(('Dummy', 'paste-step'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['paste-step2_0', 'paste-step2_1']"
