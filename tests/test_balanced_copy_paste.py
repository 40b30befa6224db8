"""Balanced Copy-Paste end to end on DALI's CPU backend: real JPEGs, the bank fed after the
geometric transforms, class-balanced pastes, determinism, preview, GPU parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
from decal.dali_pipes.preview.balanced import preview_balanced_copy_paste

from coco_factory import build_coco_dict, write_images, write_json

OUT = 64
#: category id -> share of the instances (long tail); ids as coco_factory's CATEGORIES
TAIL = {1: 0.75, 3: 0.2, 7: 0.05}


@pytest.fixture(scope="module")
def long_tailed(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("longtail")
    coco = build_coco_dict(24, size=(64, 80), instances_per_image=(1, 4), seed=3, with_crowd=True)
    rng = np.random.default_rng(0)
    ids, shares = list(TAIL), np.array(list(TAIL.values()))
    for ann in coco["annotations"]:
        ann["category_id"] = int(rng.choice(ids, p=shares))
    write_images(coco, root / "images", seed=3)
    return write_json(root / "annotations.json", coco), root / "images"


def loader_on(paths, **options) -> BalancedCopyPasteLoader:
    defaults = dict(batch_size=4, output_size=OUT, device="cpu", num_threads=1, seed=0, jitter="ssj",
                    max_num_pasted=3, bank_min_area=4)  # fmt: skip
    return BalancedCopyPasteLoader(*paths, **{**defaults, **options})


def flatten(batch) -> list[tuple]:
    rows = [tuple(batch.images.reshape(len(batch), -1).sum(dim=1).tolist())]
    for t in batch.targets:
        rows.append((int(t["image_id"]), t["labels"].tolist(), t["boxes"].tolist(), t["pasted"].tolist()))
    return rows


def test_end_to_end_invariants_and_bank_bounds(long_tailed) -> None:
    cap = 4 * 2500  # bytes: a few crops of a 64 px image
    loader = loader_on(long_tailed, bank_capacity=12, bank_max_bytes=cap)
    categories = set(loader.categories)
    batches = [b for _ in range(2) for b in loader]
    assert len(batches) == 12
    assert sum(batches[0].num_pasted) == 0  # the bank starts empty
    assert sum(sum(b.num_pasted) for b in batches[1:]) > 10
    for batch in batches:
        assert batch.images.shape == (len(batch), 3, OUT, OUT) and batch.images.dtype == torch.uint8
        for t in batch.targets:
            n = len(t["labels"])
            assert t["masks"].shape == (n, OUT, OUT) and set(t["labels"].tolist()) <= categories
            pasted = t["pasted"].bool()
            assert not pasted[:-1].gt(pasted[1:]).any()  # destination instances first
            assert not t["iscrowd"][pasted].any()
            if n:
                masks = t["masks"].numpy()
                rle = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
                x, y, w, h = mask_utils.toBbox(rle).T
                np.testing.assert_array_equal(t["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1))
                assert (t["area"] > 0).all()
    stats = loader.stats["bank"]
    assert 0 < stats["instances"] <= 12 and 0 < stats["bytes"] <= cap and stats["evicted"] > 0


def test_pasted_distribution_is_flatter_end_to_end(long_tailed) -> None:
    loader = loader_on(long_tailed, bank_capacity=64, bank_weighting="inverse_frequency", bank_power=1.0)
    data = {c: 0 for c in TAIL}
    for batch in loader:
        for t in batch.targets:
            for label in t["labels"][~t["pasted"].bool()].tolist():
                data[label] += 1
    for _ in range(2):
        for _batch in loader:
            pass
    pasted = loader.stats["pasted_per_category"]
    data_share = np.array([data[c] for c in TAIL]) / sum(data.values())
    pasted_share = np.array([pasted.get(c, 0) for c in TAIL]) / sum(pasted.values())
    assert sum(pasted.values()) > 40
    assert pasted_share[-1] > 2 * data_share[-1]  # the rarest class is pasted far above its share
    assert pasted_share[0] < data_share[0] - 0.2  # the head class far below


def test_same_seed_same_batches_other_seed_differs(long_tailed) -> None:
    first = [flatten(b) for b in loader_on(long_tailed, seed=4)]
    again = [flatten(b) for b in loader_on(long_tailed, seed=4)]
    other = [flatten(b) for b in loader_on(long_tailed, seed=5)]
    assert first == again and first != other


def test_resume_starts_with_an_empty_bank(long_tailed) -> None:
    loader = loader_on(long_tailed)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    assert len(loader.bank) > 0
    loader.load_state_dict(state)
    assert len(loader.bank) == 0
    batch = next(iter(loader))
    assert batch.position.batch_index == 4 and sum(batch.num_pasted) == 0


def test_repeat_factor_weights_and_no_paste(long_tailed) -> None:
    loader = loader_on(long_tailed, bank_weighting="repeat_factor", bank_repeat_threshold=0.9)
    weights = loader.bank.params.class_weights
    assert weights[7] > weights[3] > weights[1] >= 1.0  # the rarer, the heavier
    plain = loader_on(long_tailed, copy_paste=False)
    assert all(sum(b.num_pasted) == 0 for b in plain) and len(plain.bank) == 0
    with pytest.raises(TypeError, match="unknown options"):
        loader_on(long_tailed, bank_size=3)


def test_preview(long_tailed, tmp_path: Path) -> None:
    path = preview_balanced_copy_paste(
        tmp_path / "balanced.png", *long_tailed, images=4, tile_size=96, output_size=OUT, device="cpu",
        batch_size=4, warmup_batches=1,
    )  # fmt: skip
    with Image.open(path) as png:
        assert png.size == (4 * 96, 96 + 22)


@pytest.mark.gpu
def test_gpu_matches_cpu(long_tailed) -> None:
    """Same seed: the same draws (labels, pasted flags, bank entries); images equal up to the
    JPEG decoders' rounding; masks up to resize rounding at object edges."""
    cpu = list(loader_on(long_tailed))
    gpu_loader = loader_on(long_tailed, device="gpu")
    gpu = list(gpu_loader)
    import cupy

    assert isinstance(gpu_loader.bank.pool, cupy.ndarray)
    assert len(cpu) == len(gpu)
    for c, g in zip(cpu, gpu):
        assert g.images.is_cuda
        assert (g.images.cpu().float() - c.images.float()).abs().mean() < 2.0
        for tc, tg in zip(c.targets, g.targets):
            assert tg["labels"].cpu().tolist() == tc["labels"].tolist()
            assert tg["pasted"].cpu().tolist() == tc["pasted"].tolist()
            inter = (tg["masks"].cpu().bool() & tc["masks"].bool()).sum()
            union = (tg["masks"].cpu().bool() | tc["masks"].bool()).sum()
            assert union == 0 or inter / union > 0.95


def test_corrupt_image_skipped_and_the_old_pipeline_retired(tmp_path: Path) -> None:
    from coco_factory import write_coco_dataset

    json_path, image_dir = write_coco_dataset(tmp_path, num_images=8, instances_per_image=(1, 3), seed=4)
    victim = image_dir / "img_000004.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] + b"\x00\xff" * 20)  # header intact, data broken
    loader = loader_on((json_path, image_dir), on_error="skip", batch_size=2)
    ids, steps = [], []
    for batch in loader:
        ids += [int(t["image_id"]) for t in batch.targets]
        steps.append(loader.step)
    assert sorted(ids) == [1, 2, 3, 5, 6, 7, 8]
    assert sum(loader.stats["skipped_images"].values()) == 1
    # the recovery rebuilt the pipeline with a new step and retired the old one
    assert not steps[0].active and steps[-1].active and steps[-1] is loader.step


def test_defaults_paste_at_most_ten_from_the_bank(tmp_path: Path) -> None:
    """Issue 9: built with defaults, the balanced loader's step must use the balanced config's
    ``max_num_pasted`` (10), not copy-paste's 100, even on images crowded with instances."""
    coco = build_coco_dict(8, size=(96, 96), instances_per_image=(30, 40), seed=9, with_crowd=False)
    write_images(coco, tmp_path / "images", seed=9)
    json_path = write_json(tmp_path / "annotations.json", coco)
    # only what cannot change the paste count: a small output, the CPU, one thread
    loader = BalancedCopyPasteLoader(json_path, tmp_path / "images", output_size=96, device="cpu", num_threads=1)
    assert loader.config.max_num_pasted == 10
    assert loader.step.params is not None and loader.step.params.max_num_pasted == 10
    pasted = [n for _ in range(4) for batch in loader for n in batch.num_pasted]
    assert loader.stats["bank"]["instances"] > 10  # enough in the bank that the cap decides
    assert 0 < max(pasted) <= 10
