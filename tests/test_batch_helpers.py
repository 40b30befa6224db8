"""``Batch.for_torchvision`` / ``Batch.to_tv_tensors`` and the exported ``LabelMap``: float
images in [0, 1], contiguous labels, and tv_tensors that torchvision.transforms.v2 moves
together with the image."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

import decal
from decal.dali_pipes.core.batch import Batch
from decal.dali_pipes.core.label_map import LabelMap

S = 32
CATEGORIES = {3: {"name": "cat"}, 17: {"name": "dog"}, 90: {"name": "toothbrush"}}


def _tight_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _batch() -> Batch:
    """Two images; image 0 holds two rectangles (categories 17 and 90), image 1 none."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, S, S), dtype=torch.uint8, generator=generator)
    masks = torch.zeros((2, S, S), dtype=torch.uint8)
    masks[0, 4:10, 2:7] = 1
    masks[1, 20:30, 15:31] = 1
    boxes = torch.tensor([_tight_box(m) for m in masks], dtype=torch.float32)

    def target(n: int, boxes: torch.Tensor, masks: torch.Tensor, labels: list[int], image_id: int) -> dict:
        return {
            "boxes": boxes,
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": masks,
            "area": masks.flatten(1).sum(1).long(),
            "iscrowd": torch.zeros(n, dtype=torch.uint8),
            "pasted": torch.tensor([0, 1][:n], dtype=torch.uint8),
            "image_id": torch.tensor(image_id),
        }

    empty = target(0, torch.zeros((0, 4)), torch.zeros((0, S, S), dtype=torch.uint8), [], 8)
    return Batch(images=images, targets=[target(2, boxes, masks, [17, 90], 7), empty])


def test_label_map_is_exported_and_shared_with_the_trainers() -> None:
    from decal.trainers.detection.labels import LabelMap as TrainerLabelMap

    assert decal.LabelMap is LabelMap is TrainerLabelMap


def test_for_torchvision_scales_images_and_maps_labels() -> None:
    batch = _batch()
    labels = LabelMap.from_categories(CATEGORIES)
    images, targets = batch.for_torchvision(labels)
    assert len(images) == 2 and images[0].shape == (3, S, S) and images[0].dtype == torch.float32
    assert torch.equal(images[1], batch.images[1].float() / 255)
    assert float(images[0].max()) <= 1.0 and float(images[0].min()) >= 0.0
    assert targets[0]["labels"].tolist() == [2, 3] and labels.num_classes == 4
    assert torch.equal(labels.to_category_ids(targets[0]["labels"]), batch.targets[0]["labels"])
    assert targets[1]["labels"].shape == (0,)
    assert set(targets[0]) == {"boxes", "labels", "masks", "area", "iscrowd", "image_id"}
    assert batch.images.dtype == torch.uint8  # the batch itself is left as it was


def test_for_torchvision_refuses_unknown_category() -> None:
    labels = LabelMap.from_categories({17: {"name": "dog"}})
    with pytest.raises(ValueError, match="category id"):
        _batch().for_torchvision(labels)


def test_tv_tensors_chain_through_v2_transforms() -> None:
    labels = LabelMap.from_categories(CATEGORIES)
    image, target = _batch().to_tv_tensors(labels)[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY and tuple(target["boxes"].canvas_size) == (S, S)
    assert isinstance(target["masks"], tv_tensors.Mask)
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)])
    out_image, out = pipeline(image, target)
    assert out_image.dtype == torch.float32 and float(out_image.max()) <= 1.0
    assert torch.allclose(out_image, image.flip(-1).float() / 255)
    for box, mask in zip(out["boxes"], out["masks"]):
        assert box.tolist() == _tight_box(mask)  # boxes moved with the masks
    assert out["labels"].tolist() == [2, 3]


def test_torch_samples_are_the_dlpack_views_of_each_sample() -> None:
    """One stream lookup per output, then each ragged sample as a zero-copy torch view: the
    same tensors ``torch.from_dlpack`` gives per sample."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def

    from decal.dali_pipes.core.loader_base import dlpack_stream, torch_samples

    arrays = [np.arange(4 * (i % 3), dtype=np.float32).reshape(-1, 4) + i for i in range(5)]

    @pipeline_def(batch_size=5, num_threads=1, device_id=None)
    def ragged():
        return fn.external_source(source=lambda: arrays, batch=True)

    pipe = ragged()
    pipe.build()
    (output,) = pipe.run()
    assert dlpack_stream(output) is None  # host memory: no stream
    got = torch_samples(output, 5, dlpack_stream(output))
    for i, tensor in enumerate(got):
        reference = torch.from_dlpack(output[i])
        assert tensor.shape == (i % 3, 4) and torch.equal(tensor, torch.from_numpy(arrays[i]))
        assert tensor.data_ptr() == reference.data_ptr()
