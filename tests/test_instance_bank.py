"""The instance bank and balanced Copy-Paste on whole batches (NumPy path; the CuPy path runs
the same code through the array module and is compared under the ``gpu`` marker)."""

from __future__ import annotations

import numpy as np
import pytest

from decal.kernels.copy_paste import CopyPasteParams
from decal.kernels.instance_bank import BankParams, InstanceBank, bank_copy_paste_batch
from decal.kernels.mask_boxes import mask_boxes_numpy

S = 48


def synthetic_batch(rng: np.random.Generator, batch_size: int, class_probs: np.ndarray, max_instances: int = 4):
    """Random images, rectangles-and-ellipses masks, labels 1..C drawn from ``class_probs``."""
    images = rng.integers(0, 256, (batch_size, S, S, 3), dtype=np.uint8)
    counts = rng.integers(0, max_instances + 1, batch_size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m = int(offsets[-1])
    masks = np.zeros((m, S, S), dtype=np.uint8)
    yy, xx = np.mgrid[0:S, 0:S]
    for i in range(m):
        h, w = rng.integers(4, 16, 2)
        y0, x0 = rng.integers(0, S - h), rng.integers(0, S - w)
        if i % 2:
            masks[i, y0 : y0 + h, x0 : x0 + w] = 1
        else:
            cy, cx = y0 + h / 2, x0 + w / 2
            masks[i] = ((yy + 0.5 - cy) / (h / 2)) ** 2 + ((xx + 0.5 - cx) / (w / 2)) ** 2 <= 1
    labels = rng.choice(len(class_probs), size=m, p=class_probs).astype(np.int64) + 1
    crowd = np.zeros(m, dtype=bool)
    return images, masks, offsets, labels, crowd


def bank_of(**kw) -> InstanceBank:
    return InstanceBank(BankParams(**{"min_area": 1, **kw}))


def test_ring_bounds_fifo_and_no_overlap() -> None:
    rng = np.random.default_rng(0)
    max_bytes = 4 * 900
    bank = bank_of(capacity=7, max_bytes=max_bytes)
    seen_uids = []
    for _ in range(60):
        images, masks, offsets, labels, crowd = synthetic_batch(rng, 3, np.ones(3) / 3)
        areas, boxes = mask_boxes_numpy(masks)
        samples = np.repeat(np.arange(3), np.diff(offsets))
        bank.add(images, masks, np.arange(len(masks)), samples, boxes, labels, areas)
        spans = bank.entry_spans()
        assert len(bank) <= 7 and bank.nbytes <= max_bytes
        ordered = sorted(spans)
        assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:])), "live crops overlap in the pool"
        assert all(0 <= a < b <= max_bytes // 4 for a, b in spans)
        uids = bank.uids
        assert np.all(np.diff(uids) > 0)  # FIFO: oldest first
        seen_uids.append(uids)
    assert bank.evicted > 0 and bank.added == bank.evicted + len(bank)
    # what is live is always the most recent insertions
    assert seen_uids[-1][-1] == bank.added - 1


def test_crops_are_stored_exactly_and_oversize_rejected() -> None:
    rng = np.random.default_rng(1)
    images, masks, offsets, labels, crowd = synthetic_batch(rng, 4, np.ones(2) / 2)
    areas, boxes = mask_boxes_numpy(masks)
    samples = np.repeat(np.arange(4), np.diff(offsets))
    bank = bank_of(capacity=100, max_bytes=4 * S * S * 8)
    bank.add(images, masks, np.arange(len(masks)), samples, boxes, labels, areas)
    assert len(bank) == len(masks)
    for uid, (row, box) in enumerate(zip(range(len(masks)), boxes.astype(int))):
        x0, y0, x1, y1 = box
        rgb, mask = bank.crop(uid)
        np.testing.assert_array_equal(rgb, images[samples[row], y0:y1, x0:x1])
        np.testing.assert_array_equal(mask, masks[row, y0:y1, x0:x1])
    tiny = bank_of(max_bytes=4 * 10)  # 10 pixels: every crop here is larger
    tiny.add(images, masks, np.arange(len(masks)), samples, boxes, labels, areas)
    assert len(tiny) == 0 and tiny.rejected == len(masks)


def run_batches(bank: InstanceBank, seed: int, batches: int, class_probs, params=None, batch_size=4):
    rng = np.random.default_rng(seed)
    params = params or CopyPasteParams(max_num_pasted=3, mask_occluded_thr=20, bbox_occluded_thr=3)
    data_labels, results = [], []
    for k in range(batches):
        images, masks, offsets, labels, crowd = synthetic_batch(rng, batch_size, class_probs)
        data_labels.append(labels)
        before_added = bank.added
        result = bank_copy_paste_batch(
            images, masks, offsets, labels, crowd, params, bank, np.random.default_rng([seed, k])
        )
        results.append((images, masks, offsets, labels, result, before_added))
    return np.concatenate(data_labels), results


def test_batch_outputs_are_consistent() -> None:
    bank = bank_of(capacity=64)
    _, results = run_batches(bank, seed=3, batches=6, class_probs=np.ones(3) / 3)
    first = results[0][4]
    np.testing.assert_array_equal(first.images, results[0][0])  # empty bank: nothing pasted
    assert not first.pasted.any()
    total_pasted = 0
    for images, masks, offsets, labels, r, before_added in results:
        total_pasted += int(r.pasted.sum())
        # pasted instances come from earlier batches only
        assert np.all(r.pasted_uid[r.pasted] < before_added)
        assert np.all(r.pasted_uid[~r.pasted] == -1)
        # masks binary, boxes and areas are those of the masks, nothing empty
        assert set(np.unique(r.masks)) <= {0, 1}
        areas, boxes = mask_boxes_numpy(r.masks)
        np.testing.assert_array_equal(r.areas, areas)
        np.testing.assert_array_equal(r.boxes, boxes)
        assert np.all(r.areas > 0)
        o = r.instance_offsets
        for b in range(len(images)):
            rows = slice(o[b], o[b + 1])
            pasted = r.pasted[rows]
            # kept destination instances first, then pasted ones
            assert not np.any(np.diff(pasted.astype(int)) < 0)
            union_pasted = r.masks[rows][pasted].any(axis=0)
            # no destination instance keeps a pixel under a pasted one; pasted ones are disjoint
            assert not np.any(r.masks[rows][~pasted].astype(bool) & union_pasted)
            assert np.all(r.masks[rows][pasted].sum(axis=0) <= 1)
            # pixels outside every pasted crop's mask are the original ones
            draws = r.draws
            drawn = slice(draws.offsets[b], draws.offsets[b + 1])
            alpha = np.zeros((S, S), bool)
            for x0, y0, h, w, uid in zip(draws.x0[drawn], draws.y0[drawn], draws.height[drawn],
                                         draws.width[drawn], draws.uid[drawn]):  # fmt: skip
                assert 0 <= x0 <= S - w and 0 <= y0 <= S - h  # the crop lies inside the image
                try:
                    _, crop_mask = bank.crop(int(uid))
                except KeyError:  # evicted since; the check below still covers it
                    continue
                alpha[y0 : y0 + h, x0 : x0 + w] |= crop_mask.astype(bool)
            np.testing.assert_array_equal(r.images[b][~alpha & ~union_pasted], images[b][~alpha & ~union_pasted])
    assert total_pasted > 0


def test_pasted_pixels_are_the_crops() -> None:
    """Paste one known crop into an empty batch: its pixels land exactly at the draw."""
    rng = np.random.default_rng(5)
    images, masks, offsets, labels, crowd = synthetic_batch(rng, 2, np.ones(1))
    bank = bank_of(capacity=1)
    areas, boxes = mask_boxes_numpy(masks)
    row = int(np.argmax(areas))
    bank.add(images, masks, np.array([row]), np.array([0]), boxes[row : row + 1], labels[row : row + 1], areas[row : row + 1])
    rgb, crop_mask = bank.crop(0)
    dest = np.zeros((1, S, S, 3), np.uint8)
    params = CopyPasteParams(max_num_pasted=1)
    for seed in range(20):
        r = bank_copy_paste_batch(dest, np.zeros((0, S, S), np.uint8), np.array([0, 0]), np.zeros(0, np.int64),
                                  np.zeros(0, bool), params, bank, np.random.default_rng(seed), feed=False)  # fmt: skip
        if r.pasted.sum() == 0:
            continue
        x0, y0 = int(r.draws.x0[0]), int(r.draws.y0[0])
        h, w = crop_mask.shape
        expected = np.zeros((S, S, 3), np.uint8)
        expected[y0 : y0 + h, x0 : x0 + w][crop_mask.astype(bool)] = rgb[crop_mask.astype(bool)]
        np.testing.assert_array_equal(r.images[0], expected)
        np.testing.assert_array_equal(r.masks[0][y0 : y0 + h, x0 : x0 + w], crop_mask)
        assert r.labels[0] == labels[row] and r.masks[0].sum() == crop_mask.sum()
        break
    else:
        pytest.fail("nothing was pasted in 20 draws")


def entropy(counts: np.ndarray) -> float:
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize(
    "params",
    [
        dict(weighting="inverse_frequency", power=1.0),
        dict(weighting="inverse_frequency", power=0.5),
        dict(weighting="repeat_factor", class_weights={1: 1.0, 2: 2.0, 3: 5.0, 4: 10.0}),
    ],
    ids=["inv_freq_p1", "inv_freq_p0.5", "repeat_factor"],
)
def test_pasted_classes_are_flatter_than_the_data(params) -> None:
    """Long-tailed synthetic data (class shares 70/20/7/3 %): the pasted class distribution
    has a higher entropy and a smaller max/min ratio than the data's."""
    probs = np.array([0.70, 0.20, 0.07, 0.03])
    bank = bank_of(capacity=200, **params)
    data, results = run_batches(bank, seed=11, batches=80, class_probs=probs, batch_size=6)
    pasted = np.concatenate([r.draws.labels for *_, r, _ in results])
    data_counts = np.bincount(data, minlength=5)[1:]
    pasted_counts = np.bincount(pasted, minlength=5)[1:]
    assert pasted_counts.sum() > 500 and np.all(pasted_counts > 0)
    assert entropy(pasted_counts) > entropy(data_counts) + 0.2
    ratio = lambda c: c.max() / c.min()  # noqa: E731
    assert ratio(pasted_counts) < ratio(data_counts) / 3
    if params.get("power") == 1.0:  # every class present in the bank equally likely
        share = pasted_counts / pasted_counts.sum()
        assert np.all(np.abs(share - 0.25) < 0.06), share


def test_uniform_weighting_follows_the_data() -> None:
    probs = np.array([0.70, 0.20, 0.07, 0.03])
    bank = bank_of(capacity=200, weighting="uniform")
    data, results = run_batches(bank, seed=11, batches=60, class_probs=probs, batch_size=6)
    pasted = np.concatenate([r.draws.labels for *_, r, _ in results])
    share = np.bincount(pasted, minlength=5)[1:] / len(pasted)
    assert abs(share[0] - 0.70) < 0.08  # no balancing: the head class dominates


def test_weights() -> None:
    bank = bank_of(capacity=50, weighting="inverse_frequency", power=0.0)
    rng = np.random.default_rng(2)
    images, masks, offsets, labels, crowd = synthetic_batch(rng, 8, np.array([0.5, 0.5]))
    areas, boxes = mask_boxes_numpy(masks)
    bank.add(images, masks, np.arange(len(masks)), np.zeros(len(masks), np.int64), boxes, labels, areas)
    np.testing.assert_array_equal(bank.weights(), np.ones(len(bank)))  # p = 0: uniform
    fixed = InstanceBank(BankParams(weighting="inverse_frequency", power=1.0, class_frequency={1: 0.5, 2: 0.01}))
    fixed._ring, fixed.pool = bank._ring, bank.pool  # same content, fixed frequency table
    w = fixed.weights()
    np.testing.assert_allclose(w[bank.labels == 1], 2.0)
    np.testing.assert_allclose(w[bank.labels == 2], 100.0)
    assert set(bank.labels.tolist()) == {1, 2}  # both categories are there to be weighed
    # a category missing from the fixed table takes its smallest frequency (0.01 here)
    only_one = InstanceBank(BankParams(weighting="inverse_frequency", power=1.0, class_frequency={1: 0.5, 7: 0.01}))
    only_one._ring = bank._ring
    w = only_one.weights()
    np.testing.assert_allclose(w[bank.labels == 1], 2.0)
    np.testing.assert_allclose(w[bank.labels == 2], 100.0)
    # repeat factors: the table's r(c), 1 for a category missing from it
    repeat = InstanceBank(BankParams(weighting="repeat_factor", class_weights={2: 3.5, 9: 2.0}))
    repeat._ring = bank._ring
    w = repeat.weights()
    np.testing.assert_allclose(w[bank.labels == 1], 1.0)
    np.testing.assert_allclose(w[bank.labels == 2], 3.5)
    with pytest.raises(ValueError):
        BankParams(weighting="nope")
    with pytest.raises(ValueError):
        BankParams(capacity=0)
    with pytest.raises(ValueError):
        BankParams(class_weights={1: 0.0})


def test_crowd_and_small_instances_are_not_banked() -> None:
    rng = np.random.default_rng(4)
    images, masks, offsets, labels, crowd = synthetic_batch(rng, 4, np.ones(2) / 2)
    crowd[::2] = True
    areas, _ = mask_boxes_numpy(masks)
    bank = InstanceBank(BankParams(min_area=40))
    bank_copy_paste_batch(images, masks, offsets, labels, crowd, CopyPasteParams(), bank, rng)
    assert len(bank) == int(np.count_nonzero(~crowd & (areas >= 40)))


def test_deterministic_and_blend() -> None:
    params = CopyPasteParams(max_num_pasted=3, blend_sigma=1.0)
    a = run_batches(bank_of(capacity=30), seed=7, batches=4, class_probs=np.ones(3) / 3, params=params)[1]
    b = run_batches(bank_of(capacity=30), seed=7, batches=4, class_probs=np.ones(3) / 3, params=params)[1]
    for (*_, ra, _), (*_, rb, _) in zip(a, b):
        np.testing.assert_array_equal(ra.images, rb.images)
        np.testing.assert_array_equal(ra.masks, rb.masks)
        np.testing.assert_array_equal(ra.labels, rb.labels)


@pytest.mark.gpu
def test_gpu_matches_numpy() -> None:
    """The CuPy path (pool on the device) equals the NumPy path batch after batch."""
    import cupy

    params = CopyPasteParams(max_num_pasted=4, blend_sigma=1.5, mask_occluded_thr=20, bbox_occluded_thr=3)
    cpu_bank, gpu_bank = bank_of(capacity=40, max_bytes=4 * 3000), bank_of(capacity=40, max_bytes=4 * 3000)
    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32))  # fresh inputs each run
    for k in range(8):
        images, masks, offsets, labels, crowd = synthetic_batch(rng, 5, np.array([0.6, 0.3, 0.1]))
        c = bank_copy_paste_batch(images, masks, offsets, labels, crowd, params, cpu_bank, np.random.default_rng(k))
        g = bank_copy_paste_batch(
            cupy.asarray(images), cupy.asarray(masks), offsets, labels, crowd, params, gpu_bank, np.random.default_rng(k)
        )
        assert isinstance(gpu_bank.pool, cupy.ndarray)
        np.testing.assert_array_equal(c.images, g.images.get())
        np.testing.assert_array_equal(c.masks, g.masks.get())
        np.testing.assert_array_equal(c.boxes, g.boxes.get())
        np.testing.assert_array_equal(c.areas, g.areas.get())
        np.testing.assert_array_equal(c.labels, g.labels)
        np.testing.assert_array_equal(c.pasted_uid, g.pasted_uid)
        np.testing.assert_array_equal(cpu_bank.pool, gpu_bank.pool.get())


@pytest.mark.parametrize("weighting", ["inverse_frequency", "repeat_factor", "uniform"])
def test_the_bank_bench_runs_on_a_full_bank(weighting: str, capsys, tmp_path) -> None:
    """bench/bank_host.py at a tiny size: one figure per round for both parts, and its CLI's
    JSON (the medians of those rounds; no timing is checked)."""
    import json
    import statistics

    from decal.bench.bank_host import main, time_bank

    figures = time_bank(4, 3, 20, weighting, 3, batches=2, rounds=3)
    assert [len(figures["draw_ms"]), len(figures["add_ms"])] == [3, 3]
    main(["--batch-size", "4", "--instances", "2", "--capacity", "16", "--batches", "1", "--rounds", "3",
          "--weighting", weighting, "--json", str(tmp_path / "bank.json")])  # fmt: skip
    assert "B=4, 2 instances/image, bank 16" in capsys.readouterr().out
    result = json.loads((tmp_path / "bank.json").read_text())
    assert result["args"]["weighting"] == weighting and len(result["draw_ms"]) == 3
    assert result["draw_median_ms"] == statistics.median(result["draw_ms"])
    assert result["add_median_ms"] == statistics.median(result["add_ms"])
