"""Category ids ↔ the contiguous labels torchvision's detectors use, plus class statistics.

decal's loader yields the dataset's own category ids (COCO's run 1..90 with gaps, LVIS's
1..1203, the sample's 1..20 and 101..140). torchvision's Mask R-CNN wants labels 1..K with
0 for the background. :class:`LabelMap` (which lives in ``dali_pipes/core/label_map.py`` and is
exported as ``decal.LabelMap``) sorts the category ids and numbers them 1..K.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ...dali_pipes.core.label_map import FREQUENCY_GROUPS, LabelMap, lvis_frequency

__all__ = [
    "LabelMap",
    "instance_counts",
    "image_counts",
    "records_from_json",
    "FREQUENCY_GROUPS",
    "lvis_frequency",
]

# The core lives with the loaders (decal.LabelMap); the trainers' statistics follow.


def instance_counts(label_map: LabelMap, records: Iterable[Any] | None) -> list[int]:
    """Non-crowd training instances per label (index 0 = background, always 0).

    The json's LVIS ``instance_count`` wins where a category carries it; otherwise the
    instances of ``records`` (:class:`~decal.dali_pipes.coco.reader.ImageRecord`) are counted.
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
