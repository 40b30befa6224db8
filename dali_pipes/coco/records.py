"""The COCO / LVIS reader's data types and the small helpers every stage of it shares.

:class:`ImageRecord` and :class:`InstanceAnnotation` are what
:class:`~decal.dali_pipes.coco.reader.CocoDataset` gives per image; :class:`ReaderStats` what it
left out or changed; :class:`ImageEntryError` the skippable error of one image entry, raised by
the validation (:mod:`~decal.dali_pipes.coco.compiler`). Conventions (pixels, clipping, crowds,
ids) are stated in :mod:`~decal.dali_pipes.coco.reader`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from pycocotools import mask as mask_utils

from ..core.errors import DatasetError

__all__ = [
    "Segmentation",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "INT64_MIN",
    "INT64_MAX",
    "InstanceAnnotation",
    "ImageRecord",
    "ReaderStats",
    "ImageEntryError",
    "is_json_int",
    "is_json_id",
    "short_json",
    "decode_rle_string",
    "segmentation_rle",
    "ranges",
    "offsets",
]

#: A segmentation as found in COCO json: a list of polygons (each a flat list
#: ``[x0, y0, x1, y1, ...]`` in pixels, >= 3 points), or an RLE dict
#: ``{"size": [height, width], "counts": str | list[int]}`` (compressed string counts or
#: uncompressed run lengths, column-major), or ``None`` for box-only annotations.
Segmentation = Union[list[list[float]], dict[str, Any], None]

#: Default of ``CocoDataset(max_image_pixels=...)``: Pillow's decompression-bomb error
#: threshold (2 x ``PIL.Image.MAX_IMAGE_PIXELS`` = 178,956,970 pixels, about 537 MB as RGB),
#: far above any COCO/LVIS photo (at most 640 x 640).
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

#: Ids are carried as int64 (numpy / torch); larger ones are refused at load.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class InstanceAnnotation:
    """One object instance of an image.

    Attributes:
        ann_id: the annotation's json ``id``.
        category_id: json category id (a key of :attr:`CocoDataset.categories`).
        iscrowd: COCO ``iscrowd`` flag.
        segmentation: polygons (``list[list[float]]``, pixels, clipped to the image,
            each with >= 3 points), or an RLE dict whose ``size`` is ``[height, width]``
            (``counts`` a compressed ``str`` or an uncompressed ``list[int]``), or ``None``.
        bbox: ``(x, y, w, h)`` float pixels, clipped to the image. Taken from the json
            ``bbox`` when present, otherwise the tight box of the segmentation.
    """

    ann_id: int
    category_id: int
    iscrowd: bool
    segmentation: Segmentation
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its instances.

    Attributes:
        image_id: the image's json ``id``.
        file_name: file name relative to the image directory (for LVIS, the last path
            segment of ``coco_url``).
        path: ``image_dir / file_name``, the encoded file (existence checked at load).
        width, height: image size in pixels, from the json (checked against the file
            header by :meth:`CocoDataset.read_image_bytes`).
        annotations: the kept instances, in json order.
    """

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    annotations: tuple[InstanceAnnotation, ...]

    @property
    def category_ids(self) -> frozenset[int]:
        """Category ids of the non-crowd instances of this image."""
        return frozenset(a.category_id for a in self.annotations if not a.iscrowd)


@dataclass
class ReaderStats:
    """What the reader left out or changed while loading.

    Attributes:
        skipped_images: reason -> number of images skipped (``on_error="skip"`` only).
            Reasons: ``"missing_file"``; ``"duplicate_id"`` (every entry of a duplicated
            image id is skipped, and so is the image of a duplicated annotation id);
            ``"invalid_<field>"`` for the json field at fault (``invalid_width``,
            ``invalid_segmentation``, ``invalid_category_id``, ...; ``invalid_images`` for
            an image entry that is not an object).
        dropped_instances: reason -> number of instances dropped from kept images
            (``"clipped_to_nothing"``, ``"zero_area"``, ``"unknown_image_id"``).
        clipped_instances: number of kept instances whose polygon or box was clipped.
    """

    skipped_images: dict[str, int] = field(default_factory=dict)
    dropped_instances: dict[str, int] = field(default_factory=dict)
    clipped_instances: int = 0

    def summary(self) -> str:
        """One line, e.g. ``skipped 2 images (missing_file: 2); dropped 1 instances
        (clipped_to_nothing: 1); clipped 3 instances``."""

        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(d.items()))

        n_img = sum(self.skipped_images.values())
        n_ins = sum(self.dropped_instances.values())
        parts = [f"skipped {n_img} images" + (f" ({fmt(self.skipped_images)})" if n_img else "")]
        parts.append(
            f"dropped {n_ins} instances" + (f" ({fmt(self.dropped_instances)})" if n_ins else "")
        )
        parts.append(f"clipped {self.clipped_instances} instances")
        return "; ".join(parts)


def is_json_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_json_id(v: Any) -> bool:
    """An integer id that fits in int64."""
    return is_json_int(v) and INT64_MIN <= v <= INT64_MAX


def short_json(v: Any, limit: int = 60) -> str:
    """repr() of a json value for an error message, truncated (never recursing deeply)."""
    if isinstance(v, (list, dict)):
        text = f"<{type(v).__name__} of {len(v)}>"
        try:
            text = repr(v)
        except RecursionError:
            pass
    else:
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_rle_string(s: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string, or None if it is malformed.

    The format (pycocotools ``maskApi.c``, ``rleToString``): each count is a signed
    LEB128-like varint, 5 bits per character offset by 48, bit 0x20 = continuation,
    bit 0x10 of the last character = sign; counts after the second are stored as the
    difference to the count two places earlier.
    """
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def segmentation_rle(seg: Segmentation, height: int, width: int) -> dict:
    """A pycocotools (compressed) RLE of one instance's segmentation."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    assert isinstance(seg, dict)
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]
    return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}


class ImageEntryError(Exception):
    """Internal: an error that belongs to one image (skippable)."""

    def __init__(self, err: DatasetError, reason: str) -> None:
        super().__init__(str(err))
        self.err = err
        self.reason = reason


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + n)`` for each (s, n), (sum n,) int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def offsets(lengths: Any) -> np.ndarray:
    """(n+1,) int64 running totals of ``lengths``, starting at 0."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out
