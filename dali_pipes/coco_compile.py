"""Compile the images and annotations of a parsed COCO / LVIS json into a :class:`CocoIndex`.

The validation rules, error messages and ``on_error="skip"`` counts are those of
:class:`~decal.dali_pipes.coco_reader.CocoDataset` (its ``_parse_image`` and
``_parse_annotation`` state them, one entry at a time). Checking 1.2M LVIS annotations one
at a time with NumPy costs ~100 µs each, so the common case is checked in bulk first:

1. :func:`polygon_prescan` converts the polygon coordinates of *all* annotations in one
   ``np.array`` call and checks them in vectorised passes (numbers only, even counts of at
   least 6, finite, inside the image, non-zero area). An annotation that passes needs no
   clipping and no per-coordinate work.
2. :func:`compile_annotations` walks images and annotations in json order exactly as the
   reader always has (ids, duplicates, unknown images, skips, file existence). For a
   pre-checked annotation whose scalar fields (category, ``iscrowd``, ``bbox``) are plainly
   valid and inside the image it appends a row to preallocated lists
   (:class:`~decal.dali_pipes.coco_index.IndexBuilder`); every other annotation (RLE,
   box-only, clipped, suspicious or wrong) goes through the reader's own per-annotation
   parser, which raises its exact error or returns its exact result. So an error is the same
   error, raised at the same point of the json, whichever path met it.

``vectorised=False`` sends every annotation through the per-annotation parser: the
reference that ``tests/test_coco_compile.py`` holds the fast path to, array for array.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .coco_index import CocoIndex, IndexBuilder, polygon_part_areas
from .coco_reader import INT64_MAX, INT64_MIN, ReaderStats, _ImageError, _is_id, _is_int, _short
from .errors import DatasetError

if TYPE_CHECKING:
    from .coco_reader import CocoDataset

__all__ = ["PolygonPrescan", "polygon_prescan", "compile_annotations"]

#: Integers at most this large convert to float64 exactly (larger ones take the slow path).
_EXACT_INT = 2**53
#: A pre-checked polygon instance must have at least this area (px²); smaller (or zero) ones
#: go through the per-annotation parser, which decides "zero_area" with its own arithmetic.
_MIN_FAST_AREA = 1e-6


class PolygonPrescan(NamedTuple):
    """The bulk check of every annotation's polygons (A annotations, P polygons, V vertices).

    Attributes:
        ok: (A,) bool, the polygons of annotation ``j`` are valid, inside its image and of
            positive area, and its ``bbox`` is absent or valid and inside the image (False
            for annotations without polygons).
        part_start, part_count: (A,) int64, annotation ``j``'s polygons in the tables below.
        boxes: (A, 4) float64, annotation ``j``'s box as the reader makes it: ``(x, y,
            (x+w)-x, (y+h)-y)`` of its ``bbox``, or the extent of its vertices when it has
            none or an empty one.
        areas: (A,) float64, annotation ``j``'s area: the sum of its polygons' shoelace areas.
        coords: (2V,) float64 ``x, y`` of every checked polygon, in json order.
        part_lengths: (P,) int64 vertices per polygon.
    """

    ok: np.ndarray
    part_start: np.ndarray
    part_count: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    coords: np.ndarray
    part_lengths: np.ndarray


def _plain_number(v: Any) -> bool:
    return type(v) is float or (type(v) is int and -_EXACT_INT < v < _EXACT_INT)


def polygon_prescan(annotations: list, sizes: dict[int, tuple[int, int]]) -> PolygonPrescan:
    """Check the polygon segmentations of ``annotations`` in bulk.

    Args:
        annotations: the json's ``annotations`` list (entries of any type).
        sizes: image id -> ``(width, height)`` of the images that parsed.

    Returns:
        :class:`PolygonPrescan`; ``ok[j]`` is only a promise about the polygons, the
        annotation's other fields are checked by :func:`compile_annotations`.
    """
    n_ann = len(annotations)
    cand: list[int] = []
    segs: list[list] = []
    bboxes: list[Any] = []
    wh: list[tuple[int, int]] = []
    for j, ann in enumerate(annotations):
        if type(ann) is not dict:
            continue
        seg = ann.get("segmentation")
        image_id = ann.get("image_id")
        if type(seg) is not list or not seg or type(image_id) is not int:
            continue
        size = sizes.get(image_id)
        if size is not None:
            cand.append(j)
            segs.append(seg)
            bboxes.append(ann.get("bbox"))
            wh.append(size)
    n_parts = np.fromiter(map(len, segs), np.int64, len(segs))
    parts = list(itertools.chain.from_iterable(segs))
    # a polygon is structurally fine when it is a list of an even number >= 6 of entries
    plen = np.fromiter((len(p) if type(p) is list else -1 for p in parts), np.int64, len(parts))
    part_ok = (plen >= 6) & (plen % 2 == 0)
    good_parts = [parts[k] for k in np.flatnonzero(part_ok).tolist()] if not part_ok.all() else parts
    coords_list = list(itertools.chain.from_iterable(good_parts))
    lengths = np.where(part_ok, plen, 0)
    if not set(map(type, coords_list)) <= {float}:
        # ints, bools, strings, None, nested lists...: judge each entry, convert the good ones
        plain = np.fromiter(map(_plain_number, coords_list), bool, len(coords_list))
        if not plain.all():
            bad_count = np.add.reduceat(~plain, _offsets(lengths)[:-1][lengths > 0]) if len(plain) else np.zeros(0, np.int64)
            has = np.flatnonzero(lengths > 0)
            part_ok[has[bad_count > 0]] = False
            coords_list = [c if p else 0.0 for c, p in zip(coords_list, plain.tolist())]
    coords = np.fromiter(coords_list, np.float64, len(coords_list))  # floats (or plain ints) only, by now
    del coords_list

    # per polygon (only those with coordinates): extent (NaN and inf show in it), shoelace area
    vert_lengths = lengths // 2
    nonempty = np.flatnonzero(lengths > 0)
    vstarts = _offsets(vert_lengths)[:-1][nonempty]
    xs, ys = coords[0::2], coords[1::2]
    p_xmin = np.full(len(parts), np.inf)
    p_xmax = np.full(len(parts), -np.inf)
    p_ymin = np.full(len(parts), np.inf)
    p_ymax = np.full(len(parts), -np.inf)
    area = np.zeros(len(parts))
    if len(xs):
        with np.errstate(invalid="ignore", over="ignore"):
            p_xmin[nonempty] = np.minimum.reduceat(xs, vstarts)
            p_xmax[nonempty] = np.maximum.reduceat(xs, vstarts)
            p_ymin[nonempty] = np.minimum.reduceat(ys, vstarts)
            p_ymax[nonempty] = np.maximum.reduceat(ys, vstarts)
            area[nonempty] = polygon_part_areas(xs, ys, vstarts, vert_lengths[nonempty])
    part_ok &= np.isfinite(p_xmin) & np.isfinite(p_xmax) & np.isfinite(p_ymin) & np.isfinite(p_ymax)
    cand_w = np.array([w for w, _ in wh], np.float64).reshape(-1)
    cand_h = np.array([h for _, h in wh], np.float64).reshape(-1)
    part_ok &= (p_xmin >= 0) & (p_ymin >= 0) & (p_xmax <= np.repeat(cand_w, n_parts)) & (p_ymax <= np.repeat(cand_h, n_parts))

    # per annotation: polygons, then the box
    first = _offsets(n_parts)[:-1]
    cand_ok = np.ones(len(segs), bool)
    cand_area = np.zeros(len(segs))
    seg_box = np.zeros((len(segs), 4))
    if len(parts):
        cand_ok = np.logical_and.reduceat(part_ok, first)
        with np.errstate(invalid="ignore"):
            cand_area = np.add.reduceat(area, first)
            x0, y0 = np.minimum.reduceat(p_xmin, first), np.minimum.reduceat(p_ymin, first)
            x1, y1 = np.maximum.reduceat(p_xmax, first), np.maximum.reduceat(p_ymax, first)
        seg_box = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    cand_ok &= cand_area > _MIN_FAST_AREA
    boxes, box_ok = _bbox_scan(bboxes, cand_w, cand_h)
    cand_ok &= box_ok
    empty = ~(boxes[:, 2] > 0) | ~(boxes[:, 3] > 0)  # none, or no width or height: the polygons' extent
    boxes[empty] = seg_box[empty]

    index = np.array(cand, np.int64)
    ok = np.zeros(n_ann, bool)
    ok[index] = cand_ok
    part_start = np.zeros(n_ann, np.int64)
    part_start[index] = first
    part_count = np.zeros(n_ann, np.int64)
    part_count[index] = n_parts
    all_boxes = np.zeros((n_ann, 4))
    all_boxes[index] = boxes
    areas = np.zeros(n_ann)
    areas[index] = cand_area
    return PolygonPrescan(ok=ok, part_start=part_start, part_count=part_count, boxes=all_boxes, areas=areas,
                          coords=coords, part_lengths=vert_lengths)


def _bbox_scan(bboxes: list, widths: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((K, 4) float64 boxes, (K,) bool plainly valid) of K json ``bbox`` values: valid when
    ``None`` (box 0) or 4 plain numbers, finite, ``w, h >= 0`` and inside the image (no
    clipping); the box is the reader's ``(x, y, (x+w)-x, (y+h)-y)``."""
    n = len(bboxes)
    is_none = np.array([b is None for b in bboxes], bool).reshape(-1)
    listed = np.array([k for k, b in enumerate(bboxes) if type(b) is list and len(b) == 4], np.int64)
    shaped = np.zeros(n, bool)
    shaped[listed] = True
    chosen = [bboxes[k] for k in listed.tolist()]
    flat = list(itertools.chain.from_iterable(chosen))
    if not set(map(type, flat)) <= {float}:
        plain = np.fromiter(map(_plain_number, flat), bool, len(flat)).reshape(-1, 4).all(axis=1)
        shaped[listed[~plain]] = False
        flat = [v if _plain_number(v) else 0.0 for v in flat]
    values = np.zeros((n, 4))
    values[listed] = np.array(flat, np.float64).reshape(-1, 4)
    x, y, w, h = values.T
    with np.errstate(invalid="ignore", over="ignore"):
        right, bottom = x + w, y + h
        inside = (np.isfinite(values).all(axis=1) & (w >= 0) & (h >= 0) & (x >= 0) & (y >= 0)
                  & (right <= widths) & (bottom <= heights))
        boxes = np.stack([x, y, right - x, bottom - y], axis=1)
    return boxes, is_none | (shaped & inside)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def compile_annotations(reader: "CocoDataset", images: list, annotations: list, *, vectorised: bool = True) -> CocoIndex:
    """Validate ``images`` and ``annotations`` (the json's lists) with ``reader``'s options and
    categories and pack the kept ones; ``reader.stats`` is filled in.

    Raises:
        DatasetError: the reader's errors, in json order (``on_error="raise"``).
    """
    skip = reader.on_error == "skip"
    categories = reader.categories
    slots: dict[int, int] = {}  # image id -> index of its (first) entry in `images`
    bad: dict[int, str] = {}  # image id -> skip reason
    bad_slots: set[int] = set()  # indices of images without a usable id
    parsed: dict[int, tuple[str, str, int, int]] = {}

    def fail(img_id: int | None, idx: int | None, err: DatasetError, reason: str) -> None:
        if not skip:
            raise err
        if img_id is not None:
            bad.setdefault(img_id, reason)
        if idx is not None:
            bad_slots.add(idx)

    for idx, img in enumerate(images):
        if not isinstance(img, dict):
            fail(None, idx, reader._file_error(f"images[{idx}] is not an object", field="images"), "invalid_images")
            continue
        img_id = img.get("id")
        if not _is_id(img_id):
            fail(None, idx, reader._file_error(
                f"images[{idx}] has id {_short(img_id)}, expected an integer in int64 range", field="id"),
                "invalid_id")
            continue
        if img_id in slots:
            fail(img_id, idx, reader._file_error(
                f"duplicate image id (first at images[{slots[img_id]}], again at images[{idx}])",
                image_id=img_id, field="id"), "duplicate_id")
            continue
        slots[img_id] = idx
        try:
            parsed[img_id] = reader._parse_image(img, img_id)
        except _ImageError as e:
            fail(img_id, idx, e.err, e.reason)

    if vectorised:
        scan = polygon_prescan(annotations, {i: (p[2], p[3]) for i, p in parsed.items()})
        builder = IndexBuilder(scan.coords, scan.part_lengths, scan.part_start, scan.part_count, scan.boxes,
                               scan.areas)
        fast = scan.ok.tolist()
    else:
        builder, fast = IndexBuilder(), [False] * len(annotations)
    add_image, add_ann, add_label = builder.image_id.append, builder.ann_id.append, builder.label.append
    add_crowd, add_source = builder.crowd.append, builder.source.append
    pending_drops: dict[int, Counter] = {}
    pending_clipped: Counter = Counter()
    seen_ann: dict[int, int] = {}  # annotation id -> image id
    unknown_image_drops = 0

    for j, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise reader._file_error(f"annotations[{j}] is not an object", field="annotations")
        ann_id = ann.get("id")
        img_id = ann.get("image_id")
        # _is_id inlined (json ints are exactly int): this loop runs once per annotation
        if not (type(img_id) is int and INT64_MIN <= img_id <= INT64_MAX) or img_id not in slots:
            reason = (
                f"annotations[{j}] has no image_id" if "image_id" not in ann
                else f"annotations[{j}] refers to unknown image id {_short(img_id)}"
            )
            err = reader._file_error(reason, annotation_id=ann_id if _is_id(ann_id) else None, field="image_id")
            if not skip:
                raise err
            unknown_image_drops += 1
            continue
        if img_id in bad:
            continue
        if not (type(ann_id) is int and INT64_MIN <= ann_id <= INT64_MAX):
            fail(img_id, None, reader._file_error(
                f"annotations[{j}] has id {_short(ann_id)}, expected an integer in int64 range",
                image_id=img_id, field="id"), "invalid_id")
            continue
        if ann_id in seen_ann:
            fail(img_id, None, reader._file_error(
                f"duplicate annotation id (also in image {seen_ann[ann_id]})",
                image_id=img_id, annotation_id=ann_id, field="id"), "duplicate_id")
            continue
        seen_ann[ann_id] = img_id
        if img_id not in parsed:  # image entry itself was invalid (skip mode)
            continue
        _, _, width, height = parsed[img_id]
        if fast[j]:
            cat = ann.get("category_id")
            crowd = ann.get("iscrowd", 0)
            if type(cat) is int and cat in categories and type(crowd) is int and (crowd == 0 or crowd == 1):
                # builder.add_checked, inlined (once per annotation)
                add_image(img_id), add_ann(ann_id), add_label(cat), add_crowd(crowd == 1), add_source(j)
                continue
        try:
            inst, status = reader._parse_annotation(ann, ann_id, img_id, width, height)
        except _ImageError as e:
            fail(img_id, None, e.err, e.reason)
            continue
        if inst is None:
            pending_drops.setdefault(img_id, Counter())[status] += 1
        else:
            builder.add(img_id, inst)
            if status == "clipped":
                pending_clipped[img_id] += 1

    # file existence, only for images that survived so far
    for img_id, (file_name, path, _, _) in parsed.items():
        if img_id in bad:
            continue
        if not os.path.isfile(path):
            fail(img_id, None, DatasetError(Path(path), "image file not found", image_id=img_id, field="file_name"),
                 "missing_file")

    stats = ReaderStats()
    skipped: Counter = Counter()
    kept: list[tuple[int, str, int, int]] = []
    for idx, img in enumerate(images):
        img_id = img.get("id") if isinstance(img, dict) else None
        if idx in bad_slots or (_is_int(img_id) and img_id in bad and slots.get(img_id) == idx):
            reason = bad.get(img_id) if _is_int(img_id) and img_id in bad else None
            if reason is None:
                reason = "invalid_id" if isinstance(img, dict) else "invalid_images"
            skipped[reason] += 1
            continue
        file_name, _, width, height = parsed[img_id]
        kept.append((img_id, file_name, width, height))
        for reason, n in pending_drops.get(img_id, {}).items():
            stats.dropped_instances[reason] = stats.dropped_instances.get(reason, 0) + n
        stats.clipped_instances += pending_clipped.get(img_id, 0)
    stats.skipped_images = dict(skipped)
    if unknown_image_drops:
        stats.dropped_instances["unknown_image_id"] = unknown_image_drops
    reader.stats = stats
    return builder.build(kept, reader.image_dir, categories, stats)
