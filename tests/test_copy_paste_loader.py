"""The copy-paste loader end to end on DALI's CPU backend: real JPEGs through real DALI
operators, the torch batches that come out, determinism, resume, sharding and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from decal import CopyPasteLoader, DatasetError
from decal.dali_pipes.coco.sample_data import ensure_sample_dataset

from coco_factory import build_coco_dict, write_coco_dataset, write_json

OUT = 64  # small output side: keeps the CPU suite fast


def loader_on(json_path: Path, image_dir: Path, **options) -> CopyPasteLoader:
    defaults = dict(batch_size=3, output_size=OUT, device="cpu", num_threads=1, seed=0)
    return CopyPasteLoader(json_path, image_dir, **{**defaults, **options})


def flatten(batch) -> list[tuple]:
    """Hashable content of a batch, for equality checks."""
    rows = [tuple(batch.images.reshape(len(batch), -1).sum(dim=1).tolist())]
    for t in batch.targets:
        rows.append((int(t["image_id"]), t["labels"].tolist(), t["boxes"].tolist(), int(t["masks"].sum())))
    return rows


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(tmp_path_factory.mktemp("coco"), num_images=8, instances_per_image=(0, 5), seed=1)


def check_batch_invariants(batch, categories: set[int]) -> None:
    b = len(batch)
    assert batch.images.dtype == torch.uint8 and batch.images.shape == (b, 3, OUT, OUT)
    assert len(batch.targets) == b
    for t in batch.targets:
        n = len(t["labels"])
        assert t["masks"].shape == (n, OUT, OUT) and t["masks"].dtype == torch.uint8
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and set(t["labels"].tolist()) <= categories
        masks = t["masks"].numpy()
        assert set(np.unique(masks)) <= {0, 1}
        if n:
            rle = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
            x, y, w, h = mask_utils.toBbox(rle).T
            np.testing.assert_array_equal(t["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1))
            np.testing.assert_array_equal(t["area"].numpy(), mask_utils.area(rle))
            assert (t["area"] > 0).all()


def test_sample_dataset_end_to_end() -> None:
    json_path, image_dir = ensure_sample_dataset()
    loader = loader_on(json_path, image_dir, batch_size=2, jitter="ssj")
    categories = set(loader.categories)
    pasted = 0
    for _ in range(3):
        for batch in loader:
            check_batch_invariants(batch, categories)
            pasted += sum(batch.num_pasted)
    assert pasted > 0  # three epochs of two partners: something was pasted


def test_generated_coco_with_empty_images_and_crowd(coco) -> None:
    loader = loader_on(*coco, jitter="lsj", blend_sigma=1.5)
    categories = set(loader.categories)
    seen_ids, from_empty_image = set(), None
    assert len(loader) == 3  # 8 images, batches of 3
    batches = list(loader)
    assert len(batches) == 3 and [len(b) for b in batches] == [3, 3, 2]
    for batch in batches:
        check_batch_invariants(batch, categories)
        for t in batch.targets:
            seen_ids.add(int(t["image_id"]))
            if int(t["image_id"]) == 1:
                from_empty_image = t
    assert seen_ids == set(range(1, 9))
    # image 1 has no annotations: whatever it holds now was pasted into it
    assert from_empty_image is not None and bool(from_empty_image["pasted"].all())


def test_geometry_moves_masks_with_the_image(tmp_path: Path) -> None:
    """Each image is gray with a red rectangle whose polygon is the annotation: after
    scale jitter, crop/pad and flip, the mask must still cover the red pixels."""
    coco = build_coco_dict(4, size=(60, 80), instances_per_image=(1, 1), with_crowd=False, with_rle=False)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    for img, ann in zip(coco["images"], coco["annotations"]):
        x0, y0 = int(rng.integers(0, 40)), int(rng.integers(0, 30))
        x1, y1 = x0 + int(rng.integers(20, 40)), y0 + int(rng.integers(15, 30))
        pixels = np.full((60, 80, 3), 128, np.uint8)
        pixels[y0:y1, x0:x1] = (255, 0, 0)
        Image.fromarray(pixels).save(image_dir / img["file_name"], quality=98)
        ann["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        ann["bbox"], ann["area"] = [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (y1 - y0)
    json_path = write_json(tmp_path / "a.json", coco)
    loader = loader_on(json_path, image_dir, batch_size=4, jitter=(0.6, 1.6), copy_paste=False, flip_prob=0.5)
    for epoch in range(3):
        for batch in loader:
            for image, t in zip(batch.images, batch.targets):
                red = (image[0].int() - image[1].int()) > 64  # more red than gray, edges included
                mask = t["masks"].sum(dim=0) > 0
                if not mask.any():
                    assert red.sum() <= 2  # the object was cropped away
                    continue
                iou = (red & mask).sum().item() / (red | mask).sum().item()
                ys, xs = torch.nonzero(mask, as_tuple=True)
                ry, rx = torch.nonzero(red, as_tuple=True)
                shift = max(abs(xs.float().mean() - rx.float().mean()), abs(ys.float().mean() - ry.float().mean()))
                assert iou > 0.6 and shift < 1.0, (epoch, iou, float(shift))


def test_same_seed_same_batches_other_seed_differs(coco) -> None:
    first = [flatten(b) for b in loader_on(*coco, seed=5)]
    again = [flatten(b) for b in loader_on(*coco, seed=5)]
    other = [flatten(b) for b in loader_on(*coco, seed=6)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("stop_after", [1, 3, 4])
def test_resume_continues_exactly(coco, stop_after: int) -> None:
    reference = loader_on(*coco, seed=2)
    expected = [flatten(b) for _ in range(2) for b in reference]  # two epochs, 6 batches
    partial = loader_on(*coco, seed=2)
    got, state = [], None
    for _ in range(2):
        for batch in partial:
            got.append(flatten(batch))
            if len(got) == stop_after:
                state = partial.state_dict()
                break
        if state is not None:
            break
    resumed = loader_on(*coco, seed=2)
    resumed.load_state_dict(state)
    while len(got) < len(expected):
        for batch in resumed:
            got.append(flatten(batch))
    assert got == expected


def test_state_from_other_seed_is_rejected(coco) -> None:
    loader = loader_on(*coco, seed=1)
    with pytest.raises(ValueError, match="seed"):
        loader.load_state_dict({"epoch": 0, "cursor": 0, "batch_index": 0, "seed": 2})
    with pytest.raises(ValueError, match="cursor"):
        loader.load_state_dict({"epoch": 0, "cursor": "x", "batch_index": 0})


def test_shards_split_the_epoch(coco) -> None:
    ids = []
    for shard in range(2):
        loader = loader_on(*coco, shard_id=shard, num_shards=2, batch_size=2, seed=3)
        ids.append([int(t["image_id"]) for b in loader for t in b.targets])
    assert len(ids[0]) == len(ids[1]) == 4
    assert set(ids[0]) | set(ids[1]) == set(range(1, 9)) and not set(ids[0]) & set(ids[1])


def test_repeat_factor_sampling_runs(coco) -> None:
    loader = loader_on(*coco, repeat_factor_threshold=0.5, seed=0)
    ids = [int(t["image_id"]) for b in loader for t in b.targets]
    assert len(ids) >= 8  # every image at least once, rare-category images more


def corrupt_dataset(root: Path) -> tuple[Path, Path, Path]:
    json_path, image_dir = write_coco_dataset(root, num_images=6, seed=4)
    victim = image_dir / "img_000004.jpg"
    data = bytearray(victim.read_bytes())
    body = len(data) // 3  # keep the header, wreck the entropy-coded data and the end marker
    data[body:] = b"\x00\xff" * ((len(data) - body) // 2) + b"\x00" * ((len(data) - body) % 2)
    victim.write_bytes(bytes(data[: body + 40]))
    return json_path, image_dir, victim


def test_corrupt_jpeg_error_names_the_file(tmp_path: Path) -> None:
    json_path, image_dir, victim = corrupt_dataset(tmp_path)
    loader = loader_on(json_path, image_dir, batch_size=2)
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    assert victim.name in str(caught.value) and caught.value.image_id == 4


def test_corrupt_jpeg_skipped_and_counted(tmp_path: Path) -> None:
    json_path, image_dir, victim = corrupt_dataset(tmp_path)
    loader = loader_on(json_path, image_dir, batch_size=2, on_error="skip")
    ids = [int(t["image_id"]) for b in loader for t in b.targets]
    assert sorted(ids) == [1, 2, 3, 5, 6]
    assert sum(loader.stats["skipped_images"].values()) == 1


def test_unknown_option_is_a_type_error(coco) -> None:
    with pytest.raises(TypeError, match="batchsize"):
        CopyPasteLoader(*coco, batchsize=4)


def test_paste_by_box_uses_filled_boxes_as_masks(coco) -> None:
    """mmdetection's paste_by_box: without copy-paste occlusion (max_num_pasted=0) and with
    no jitter or flip, every mask is a filled rectangle, i.e. equal to its own box."""
    loader = loader_on(*coco, paste_by_box=True, max_num_pasted=0, jitter="none", flip_prob=0.0)
    instances = 0
    for batch in loader:
        for t in batch.targets:
            for mask, box in zip(t["masks"], t["boxes"].int()):
                x0, y0, x1, y1 = box.tolist()
                filled = torch.zeros_like(mask)
                filled[y0:y1, x0:x1] = 1
                assert torch.equal(mask, filled)
                instances += 1
    assert instances > 5
