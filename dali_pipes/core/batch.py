"""The batch the instance-segmentation loaders yield (local or remote).

Kept apart from the pipelines so that a remote client (``decal.server.remote_loader``) can
build batches without importing DALI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .epoch_source import LoaderPosition
from .label_map import LabelMap

__all__ = ["Batch", "TARGET_FIELDS", "TARGET_OUTPUTS"]

#: The per-instance fields of a target dict, in order (each (N, ...) for N instances; see
#: :class:`Batch`), besides ``image_id``. The wire format (``server/wire.py``), the local
#: loaders (``instance_targets`` in ``dali_pipes/copy_paste/loader.py``) and ``RemoteLoader``
#: all read this tuple.
TARGET_FIELDS = ("boxes", "labels", "masks", "area", "iscrowd", "pasted")
#: The pipeline output a target field is read from, where the names differ.
TARGET_OUTPUTS = {"area": "areas"}

#: The target keys :meth:`Batch.for_torchvision` keeps (what torchvision's detection models
#: and pycocotools-style evaluation read).
TORCHVISION_KEYS = ("boxes", "labels", "masks", "area", "iscrowd", "image_id")


@dataclass
class Batch:
    """One batch.

    :meth:`for_torchvision` gives what torchvision's detection models take (float images in
    [0, 1], labels 1..K through a :class:`~decal.dali_pipes.core.label_map.LabelMap`), and
    :meth:`to_tv_tensors` the ``tv_tensors`` that ``torchvision.transforms.v2`` transforms.

    Attributes:
        images: (B, 3, S, S) uint8 on the pipeline's device.
        targets: B dicts; per image with N instances: ``boxes`` (N, 4) float32 xyxy px,
            ``labels`` (N,) int64 category ids, ``masks`` (N, S, S) uint8, ``area`` (N,)
            int64 mask pixels, ``iscrowd`` (N,) uint8, ``pasted`` (N,) uint8 (1 = pasted in
            this batch), ``image_id`` () int64.
        position: where the loader stands after this batch (what ``state_dict`` saves).
    """

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    position: LoaderPosition = field(default_factory=LoaderPosition)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_pasted(self) -> list[int]:
        """Instances pasted into each image."""
        return [int(t["pasted"].sum()) for t in self.targets]

    def float_images(self) -> torch.Tensor:
        """(B, 3, S, S) float32 in [0, 1] on the images' device (uint8 / 255, as
        torchvision's ``ToDtype(torch.float32, scale=True)``; its detection models normalise
        with ImageNet statistics themselves)."""
        return self.images.to(torch.float32).div_(255.0)

    def for_torchvision(self, label_map: LabelMap | None = None) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """``(images, targets)`` as torchvision's detection models take them in training
        (``model(images, targets)``): B float32 (3, S, S) images in [0, 1], and B dicts with
        ``boxes`` (N, 4) float32 xyxy px, ``labels`` (N,) int64, ``masks`` (N, S, S) uint8,
        ``area``, ``iscrowd`` and ``image_id``.

        Args:
            label_map: maps the dataset's category ids to the contiguous labels 1..K the model
                was built for (``num_classes=label_map.num_classes``); None keeps the raw
                category ids (only right when they already are 1..K).

        Raises:
            ValueError: a category id that ``label_map`` does not know.
        """
        images = list(self.float_images().unbind(0))
        targets = []
        for target in self.targets:
            out = {key: target[key] for key in TORCHVISION_KEYS if key in target}
            if label_map is not None:
                out["labels"] = label_map.to_labels(target["labels"])
            targets.append(out)
        return images, targets

    def to_tv_tensors(self, label_map: LabelMap | None = None) -> list[tuple[Any, dict[str, Any]]]:
        """Per image, ``(image, target)`` as torchvision ``tv_tensors``, so that
        ``torchvision.transforms.v2`` transforms move boxes and masks with the image::

            image, target = batch.to_tv_tensors(labels)[0]
            image, target = v2.Compose([v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])(image, target)

        ``image`` is an ``Image`` (3, S, S) uint8; ``target["boxes"]`` ``BoundingBoxes``
        (N, 4) float32 in ``XYXY`` with ``canvas_size=(S, S)``; ``target["masks"]`` a
        ``Mask`` (N, S, S) uint8; ``labels`` (mapped through ``label_map`` when given),
        ``area``, ``iscrowd`` and ``image_id`` plain tensors (v2 passes them through).
        """
        from torchvision import tv_tensors

        out = []
        for image, target in zip(self.images, self.targets):
            size = (int(image.shape[-2]), int(image.shape[-1]))
            labels = target["labels"] if label_map is None else label_map.to_labels(target["labels"])
            tv_target: dict[str, Any] = {
                "boxes": tv_tensors.BoundingBoxes(target["boxes"], format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=size),
                "masks": tv_tensors.Mask(target["masks"]),
                "labels": labels,
            }
            tv_target.update({key: target[key] for key in ("area", "iscrowd", "image_id") if key in target})
            out.append((tv_tensors.Image(image), tv_target))
        return out
