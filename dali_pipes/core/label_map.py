"""Category ids ↔ the contiguous labels torchvision's detectors use.

decal's loaders yield the dataset's own category ids (COCO's run 1..90 with gaps, LVIS's
1..1203, the embedded sample's 1..20 and 101..140). torchvision's Mask R-CNN wants labels 1..K
with 0 for the background (``num_classes = K + 1``); a raw id fed to it fails with
``IndexError: Target 119 is out of bounds``. :class:`LabelMap` sorts the category ids and
numbers them 1..K::

    labels = LabelMap.from_categories(loader.categories)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=labels.num_classes)
    images, targets = batch.for_torchvision(labels)

Only torch is imported here, so a remote client (no DALI) can use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

__all__ = ["LabelMap", "FREQUENCY_GROUPS", "lvis_frequency"]

#: LVIS frequency tags: rare (1–10 training images), common (11–100), frequent (> 100).
FREQUENCY_GROUPS = ("r", "c", "f")


def lvis_frequency(num_images: int) -> str:
    """The LVIS frequency tag of a category present in ``num_images`` training images
    (Gupta et al. 2019, LVIS §3: rare 1–10, common 11–100, frequent > 100)."""
    if num_images <= 10:
        return "r"
    if num_images <= 100:
        return "c"
    return "f"


@dataclass(frozen=True)
class LabelMap:
    """Sorted category ids; label ``i + 1`` is ``category_ids[i]``; label 0 is the background.

    Attributes:
        category_ids: the dataset's category ids, ascending.
        categories: category id → json entry (name, LVIS ``frequency``, ...).
    """

    category_ids: tuple[int, ...]
    categories: Mapping[int, dict]

    @classmethod
    def from_categories(cls, categories: Mapping[int, dict]) -> "LabelMap":
        ids = tuple(sorted(int(c) for c in categories))
        if not ids:
            raise ValueError("the dataset has no categories")
        return cls(ids, {int(k): dict(v, id=int(k)) for k, v in categories.items()})

    @property
    def num_classes(self) -> int:
        """K + 1: the foreground classes plus the background (torchvision's ``num_classes``)."""
        return len(self.category_ids) + 1

    def _table(self, device: torch.device) -> torch.Tensor:
        table = torch.full((max(self.category_ids) + 1,), -1, dtype=torch.int64)
        table[list(self.category_ids)] = torch.arange(1, len(self.category_ids) + 1)
        return table.to(device)

    def to_labels(self, category_ids: torch.Tensor) -> torch.Tensor:
        """Category ids → labels 1..K (raises on an id that is not a category)."""
        ids = category_ids.long()
        if ids.numel() == 0:
            return ids.clone()
        if int(ids.min()) < 0 or int(ids.max()) > max(self.category_ids):
            raise ValueError(f"category id out of range: {ids.tolist()}")
        labels = self._table(ids.device)[ids]
        if bool((labels < 0).any()):
            raise ValueError(f"unknown category id in {ids.unique().tolist()}")
        return labels

    def to_category_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels 1..K → category ids."""
        lookup = torch.tensor((0,) + self.category_ids, dtype=torch.int64, device=labels.device)
        return lookup[labels.long()]

    def label_of(self, category_id: int) -> int:
        return self.category_ids.index(int(category_id)) + 1

    def names(self) -> list[str]:
        """Names of labels 0..K (``"__background__"`` first)."""
        return ["__background__"] + [str(self.categories[c].get("name", c)) for c in self.category_ids]

    def frequencies(self, image_count_per_label: Sequence[int] | None = None) -> list[str | None]:
        """The LVIS frequency tag of labels 1..K: the json's ``frequency`` when present, else
        derived from ``image_count_per_label`` (indexed by label, 0 unused), else None."""
        out: list[str | None] = []
        for label, cid in enumerate(self.category_ids, start=1):
            tag = self.categories[cid].get("frequency")
            if tag is None and image_count_per_label is not None:
                tag = lvis_frequency(int(image_count_per_label[label]))
            out.append(tag)
        return out

    def state(self) -> list[dict]:
        """The categories as a json list (stored in checkpoints)."""
        return [dict(self.categories[c]) for c in self.category_ids]

    @classmethod
    def from_state(cls, entries: Iterable[dict]) -> "LabelMap":
        return cls.from_categories({int(e["id"]): dict(e) for e in entries})
