"""Category ids ↔ the contiguous labels torchvision's detectors use, plus class statistics.

decal's loader yields the dataset's own category ids (COCO's run 1..90 with gaps, LVIS's
1..1203, the sample's 1..20 and 101..140). torchvision's Mask R-CNN wants labels 1..K with
0 for the background. :class:`LabelMap` sorts the category ids and numbers them 1..K.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

__all__ = [
    "LabelMap",
    "instance_counts",
    "image_counts",
    "records_from_json",
    "FREQUENCY_GROUPS",
    "lvis_frequency",
]

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


def instance_counts(label_map: LabelMap, records: Iterable[Any] | None) -> list[int]:
    """Non-crowd training instances per label (index 0 = background, always 0).

    The json's LVIS ``instance_count`` wins where a category carries it; otherwise the
    instances of ``records`` (:class:`~decal.dali_pipes.coco_reader.ImageRecord`) are counted.
    """
    counts = Counter()
    if records is not None:
        for record in records:
            for ann in record.annotations:
                if not ann.iscrowd:
                    counts[int(ann.category_id)] += 1
    out = [0]
    for cid in label_map.category_ids:
        given = label_map.categories[cid].get("instance_count")
        out.append(int(given) if given is not None else counts.get(cid, 0))
    return out


def image_counts(label_map: LabelMap, records: Iterable[Any] | None) -> list[int]:
    """Training images containing each label (index 0 unused); LVIS ``image_count`` wins."""
    counts = Counter()
    if records is not None:
        for record in records:
            for cid in record.category_ids:
                counts[int(cid)] += 1
    out = [0]
    for cid in label_map.category_ids:
        given = label_map.categories[cid].get("image_count")
        out.append(int(given) if given is not None else counts.get(cid, 0))
    return out


@dataclass(frozen=True)
class _Ann:
    category_id: int
    iscrowd: bool


@dataclass(frozen=True)
class _Record:
    annotations: tuple[_Ann, ...]

    @property
    def category_ids(self) -> frozenset[int]:
        return frozenset(a.category_id for a in self.annotations if not a.iscrowd)


def records_from_json(annotation_file: str | Path) -> list[_Record]:
    """Light per-image records (category ids and crowd flags only) of an instance json, for
    :func:`instance_counts`/:func:`image_counts` when the loader has no local dataset (remote)."""
    with open(annotation_file, encoding="utf-8") as handle:
        data = json.load(handle)
    per_image: dict[Any, list[_Ann]] = {image["id"]: [] for image in data.get("images", [])}
    for ann in data.get("annotations", []):
        if ann.get("image_id") in per_image:
            per_image[ann["image_id"]].append(_Ann(int(ann["category_id"]), bool(ann.get("iscrowd", 0))))
    return [_Record(tuple(anns)) for anns in per_image.values()]
