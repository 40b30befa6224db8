"""Parse, validate and compile a COCO / LVIS instance json into the arrays of a
:class:`~decal.dali_pipes.coco.index.CocoIndex` (:class:`JsonCompiler`).

The validation rules, error messages and ``on_error="skip"`` counts are
:class:`~decal.dali_pipes.coco.reader.CocoDataset`'s (stated in
:mod:`~decal.dali_pipes.coco.reader`); :class:`JsonCompiler`'s ``_parse_image`` and
``_parse_annotation`` apply them one entry at a time. Checking 1.2M LVIS annotations one
at a time with NumPy costs ~100 µs each, so the common case is checked in bulk first:

1. :func:`polygon_prescan` converts the polygon coordinates of *all* annotations in one
   ``np.array`` call and checks them in vectorised passes (numbers only, even counts of at
   least 6, finite, inside the image, non-zero area). An annotation that passes needs no
   clipping and no per-coordinate work.
2. :func:`compile_annotations` walks images and annotations in json order exactly as the
   reader always has (ids, duplicates, unknown images, skips, file existence). For a
   pre-checked annotation whose scalar fields (category, ``iscrowd``, ``bbox``) are plainly
   valid and inside the image it appends a row to preallocated lists
   (:class:`~decal.dali_pipes.coco.index.IndexBuilder`); every other annotation (RLE,
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
import json
import math
import posixpath
from typing import Any, Literal, NamedTuple, Sequence
from urllib.parse import urlparse

import numpy as np
from pycocotools import mask as mask_utils

from .records import (
    INT64_MAX,
    INT64_MIN,
    ImageEntryError,
    InstanceAnnotation,
    ReaderStats,
    Segmentation,
    decode_rle_string,
    is_json_id,
    is_json_int,
    offsets,
    ranges,
    segmentation_rle,
    short_json,
)
from ..core.errors import DatasetError

__all__ = [
    "POLYGON",
    "RLE",
    "BOX",
    "JsonCompiler",
    "PolygonPrescan",
    "polygon_prescan",
    "compile_annotations",
    "IndexBuilder",
    "polygon_part_areas",
    "parse_json",
    "lvis_file_name",
]

#: Instance kinds (:attr:`CocoIndex.kinds`).
POLYGON, RLE, BOX = 0, 1, 2

#: Deepest json nesting accepted (COCO's deepest is 4: segmentation polygons).
_MAX_JSON_DEPTH = 64


#: Characters that make urlparse do more than split scheme, host and path.
_URL_SPECIAL = frozenset("?#;[]@ \\")


def parse_json(raw: bytes) -> Any:
    """``json.loads(raw)``, through orjson when it is installed (about twice as fast on an
    LVIS json). What orjson refuses or would read otherwise (NaN, integers beyond 64 bits, a
    byte order mark, UTF-16, lone surrogates, invalid json) is handed to :func:`json.loads`,
    so the values and the errors are always the standard library's."""
    try:
        import orjson
    except ImportError:
        return json.loads(raw)
    # orjson turns integers outside [-2**63, 2**64) into floats; any such literal has 19 digits
    # or more in a row (so does a long fraction, which then just takes the slow way)
    if _DIGIT_RUN in raw.translate(_DIGITS_AS_ONES):
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= c <= 0x39 else 0x30 for c in range(256))
_DIGIT_RUN = b"1" * 19


def lvis_file_name(url: str) -> str:
    """``split/basename`` of an LVIS ``coco_url`` (``.../train2017/x.jpg`` → ``train2017/x.jpg``),
    the basename alone when the url has no folder; ``""`` when it has no file name."""
    if url.startswith(("http://", "https://")) and not any(c in url for c in _URL_SPECIAL) and url.isprintable():
        path = url.split("//", 1)[1].partition("/")[2]  # what urlparse gives, without its cost
    else:
        path = urlparse(url).path
    parts = [p for p in path.split("/") if p]
    if not parts or not posixpath.splitext(parts[-1])[1]:
        return ""
    return "/".join(parts[-2:])


def _as_size(v: Any) -> int | None:
    """A positive integer image size (ints or integral floats), else None."""
    if is_json_int(v):
        return v if v > 0 else None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and v > 0:
        return int(v)
    return None


def _num_array(v: list) -> np.ndarray | None:
    """A numeric (int or float) numpy array of a json list, or None (strings, bools,
    None, ragged nesting...)."""
    try:
        arr = np.asarray(v)
    except (ValueError, TypeError):
        return None
    return arr if arr.dtype.kind in "iuf" else None


def _poly_area(xs: np.ndarray, ys: np.ndarray) -> float:
    """Absolute shoelace area of a closed polygon."""
    cross = np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1]) + xs[-1] * ys[0] - xs[0] * ys[-1]
    return 0.5 * abs(float(cross))


def _clip_polygon(pts: list[tuple[float, float]], width: float, height: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman intersection of a polygon with ``[0, width] x [0, height]``."""

    def clip(points, inside, intersect):
        out: list[tuple[float, float]] = []
        n = len(points)
        for i in range(n):
            cur, prev = points[i], points[i - 1]
            cin, pin = inside(cur), inside(prev)
            if cin:
                if not pin:
                    out.append(intersect(prev, cur))
                out.append(cur)
            elif pin:
                out.append(intersect(prev, cur))
        return out

    def at_x(x0):
        def f(p, q):
            t = (x0 - p[0]) / (q[0] - p[0])
            return (x0, p[1] + t * (q[1] - p[1]))

        return f

    def at_y(y0):
        def f(p, q):
            t = (y0 - p[1]) / (q[1] - p[1])
            return (p[0] + t * (q[0] - p[0]), y0)

        return f

    for inside, inter in (
        (lambda p: p[0] >= 0.0, at_x(0.0)),
        (lambda p: p[0] <= width, at_x(float(width))),
        (lambda p: p[1] >= 0.0, at_y(0.0)),
        (lambda p: p[1] <= height, at_y(float(height))),
    ):
        if not pts:
            break
        pts = clip(pts, inside, inter)
    # clamp float noise of the intersections
    return [(min(max(x, 0.0), width), min(max(y, 0.0), height)) for x, y in pts]

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
            bad_count = np.add.reduceat(~plain, offsets(lengths)[:-1][lengths > 0]) if len(plain) else np.zeros(0, np.int64)
            has = np.flatnonzero(lengths > 0)
            part_ok[has[bad_count > 0]] = False
            coords_list = [c if p else 0.0 for c, p in zip(coords_list, plain.tolist())]
    coords = np.fromiter(coords_list, np.float64, len(coords_list))  # floats (or plain ints) only, by now
    del coords_list

    # per polygon (only those with coordinates): extent (NaN and inf show in it), shoelace area
    vert_lengths = lengths // 2
    nonempty = np.flatnonzero(lengths > 0)
    vstarts = offsets(vert_lengths)[:-1][nonempty]
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
    first = offsets(n_parts)[:-1]
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


class JsonCompiler:
    """Parses, validates and compiles one instance json with the reader's options (as
    :class:`~decal.dali_pipes.coco.reader.CocoDataset`'s constructor's). The per-entry rules
    live in its ``_parse_image`` / ``_parse_annotation``."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, on_error: Literal["raise", "skip"],
                 max_image_pixels: int | None, require_segmentation: bool) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.on_error = on_error
        self.max_image_pixels = max_image_pixels
        self.require_segmentation = bool(require_segmentation)
        self.stats = ReaderStats()
        self.categories: dict[int, dict] = {}

    def compile(self, *, vectorised: bool = True) -> dict[str, Any]:
        """The :class:`~decal.dali_pipes.coco.index.CocoIndex` fields of the json (its
        constructor's keyword arguments); :attr:`stats` and :attr:`categories` filled in.

        Raises:
            DatasetError: the reader's errors, in json order (``on_error="raise"``).
        """
        return self._load(vectorised)

    def _file_error(self, reason: str, **kw: Any) -> DatasetError:
        return DatasetError(self.annotation_file, reason, **kw)

    def _load(self, vectorised: bool) -> dict[str, Any]:
        path = self.annotation_file
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise self._file_error(f"cannot read annotation file: {e.strerror or e}") from e
        try:
            data = parse_json(raw)
        except json.JSONDecodeError as e:
            raise self._file_error(
                f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
            ) from e
        except UnicodeDecodeError as e:
            raise self._file_error(f"not UTF-8 text: {e}") from e
        except RecursionError:
            raise self._file_error(
                f"JSON nested too deeply (more than the parser's limit; COCO needs {_MAX_JSON_DEPTH} at most)"
            ) from None
        if not isinstance(data, dict):
            raise self._file_error(
                f"top level is a {type(data).__name__}, expected an object with "
                "'images', 'annotations' and 'categories'"
            )
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise self._file_error(f"missing top-level key {key!r}", field=key)
            if not isinstance(data[key], list):
                raise self._file_error(
                    f"top-level {key!r} is a {type(data[key]).__name__}, expected a list",
                    field=key,
                )
        if not self.image_dir.is_dir():
            raise DatasetError(
                self.image_dir,
                "image directory not found" if not self.image_dir.exists() else "image directory is not a directory",
                field="images",
            )
        try:
            self._load_categories(data["categories"])
            fields = compile_annotations(self, data["images"], data["annotations"], vectorised=vectorised)
        except RecursionError:  # a deeply nested value inside an entry (repr, numpy)
            raise self._file_error(f"JSON value nested too deeply (COCO needs {_MAX_JSON_DEPTH} levels at most)") from None
        return fields

    def _load_categories(self, cats: list) -> None:
        for i, cat in enumerate(cats):
            if not isinstance(cat, dict):
                raise self._file_error(f"categories[{i}] is not an object", field="categories")
            cid = cat.get("id")
            if not is_json_id(cid):
                raise self._file_error(
                    f"categories[{i}] has id {short_json(cid)}, expected an integer in int64 range", field="id"
                )
            if cid in self.categories:
                raise self._file_error(f"duplicate category id {cid}", field="id")
            self.categories[cid] = cat

    def _parse_image(self, img: dict, img_id: int) -> tuple[str, str, int, int]:
        """``(file_name, path, width, height)`` of a valid image entry (``path`` a string:
        a Path per image costs seconds on LVIS); raises ``ImageEntryError``."""
        def err(field_: str, reason: str) -> ImageEntryError:
            return ImageEntryError(
                self._file_error(reason, image_id=img_id, field=field_), f"invalid_{field_}"
            )

        sizes = {}
        for key in ("width", "height"):
            if key not in img:
                raise err(key, f"missing {key}")
            v = _as_size(img[key])
            if v is None or v > INT64_MAX:
                raise err(key, f"{key} {short_json(img[key])} is not a positive integer")
            sizes[key] = v
        pixels = sizes["width"] * sizes["height"]
        if self.max_image_pixels is not None and pixels > self.max_image_pixels:
            raise ImageEntryError(self._file_error(
                f"{sizes['width']}x{sizes['height']} = {pixels} pixels, over max_image_pixels={self.max_image_pixels}",
                image_id=img_id, field="width"), "too_many_pixels")
        file_name = img.get("file_name")
        if file_name is None and isinstance(img.get("coco_url"), str):
            # LVIS v1: "http://images.cocodataset.org/train2017/000000391895.jpg" -> train2017/000000391895.jpg
            file_name = lvis_file_name(img["coco_url"])
            if not file_name:
                raise err("coco_url", f"cannot derive a file name from coco_url {short_json(img['coco_url'])}")
        if file_name is None:
            raise err("file_name", "missing file_name (and no coco_url)")
        if not isinstance(file_name, str) or not file_name or "\0" in file_name:
            raise err("file_name", f"file_name {short_json(file_name)} is not a non-empty string")
        if os.path.isabs(file_name):
            raise err("file_name", f"file_name {short_json(file_name)} is absolute, expected relative to the image dir")
        return file_name, os.path.join(self.image_dir, file_name), sizes["width"], sizes["height"]

    def _parse_annotation(
        self, ann: dict, ann_id: int, img_id: int, width: int, height: int
    ) -> tuple[InstanceAnnotation | None, str]:
        """Validate and clip one annotation.

        Returns ``(instance, "ok" | "clipped")`` or ``(None, drop_reason)``.
        """

        def err(field_: str, reason: str) -> ImageEntryError:
            return ImageEntryError(
                self._file_error(reason, image_id=img_id, annotation_id=ann_id, field=field_),
                f"invalid_{field_}",
            )

        if "category_id" not in ann:
            raise err("category_id", "missing category_id")
        cat = ann.get("category_id")
        if not is_json_id(cat) or cat not in self.categories:
            raise err("category_id", f"unknown category id {short_json(cat)}")
        crowd = ann.get("iscrowd", 0)
        if not ((isinstance(crowd, bool) or is_json_int(crowd)) and crowd in (0, 1)):
            raise err("iscrowd", f"iscrowd {short_json(crowd)} is not 0 or 1")

        clipped = False
        # ---- bbox
        bbox = ann.get("bbox")
        box: tuple[float, float, float, float] | None = None
        if bbox is not None:
            arr = _num_array(bbox) if isinstance(bbox, list) else None
            if arr is None or arr.shape != (4,) or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
                raise err("bbox", f"bbox {short_json(bbox)} is not 4 finite numbers [x, y, w, h]")
            x, y, w, h = (float(v) for v in arr)
            if w < 0 or h < 0:
                raise err("bbox", f"bbox {short_json(bbox)} has a negative width or height")
            x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                clipped = True
            box = (x0, y0, x1 - x0, y1 - y0)

        # ---- segmentation
        seg = ann.get("segmentation")
        if isinstance(seg, list) and len(seg) == 0:
            seg = None  # some COCO-style files write [] for "no mask"
        out_seg: Segmentation = None
        seg_area: float | None = None
        seg_clipped = False
        if isinstance(seg, list):
            polys: list[list[float]] = []
            area = 0.0
            for k, poly in enumerate(seg):
                if not isinstance(poly, list):
                    raise err("segmentation", f"polygon {k} is a {type(poly).__name__}, expected a list of numbers")
                arr = _num_array(poly)
                if arr is None or arr.ndim != 1:
                    raise err("segmentation", f"polygon {k} is not a flat list of numbers")
                if len(arr) % 2:
                    raise err("segmentation", f"polygon {k} has an odd number of coordinates ({len(arr)})")
                if len(arr) < 6:
                    raise err("segmentation", f"polygon with {len(arr) // 2} points (needs >= 3)")
                arr = arr.astype(np.float64, copy=False)
                xs, ys = arr[0::2], arr[1::2]
                # min/max propagate NaN and expose +-inf: they double as the finiteness check
                x_lo, x_hi, y_lo, y_hi = xs.min(), xs.max(), ys.min(), ys.max()
                if not (math.isfinite(x_lo) and math.isfinite(x_hi) and math.isfinite(y_lo)
                        and math.isfinite(y_hi)):
                    raise err("segmentation", f"polygon {k} has non-finite coordinates")
                if x_lo < 0 or y_lo < 0 or x_hi > width or y_hi > height:
                    seg_clipped = True
                    pts = _clip_polygon(list(zip(xs.tolist(), ys.tolist())), float(width), float(height))
                    if len(pts) < 3:
                        continue
                    cx = np.array([p[0] for p in pts])
                    cy = np.array([p[1] for p in pts])
                    a = _poly_area(cx, cy)
                    if a <= 0.0:
                        continue
                    area += a
                    polys.append([float(v) for p in pts for v in p])
                else:
                    area += _poly_area(xs, ys)
                    polys.append(arr.tolist())
            if not polys:
                return None, "clipped_to_nothing"
            out_seg, seg_area = polys, area
        elif isinstance(seg, dict):
            size = seg.get("size")
            counts = seg.get("counts")
            if not (isinstance(size, list) and len(size) == 2 and all(is_json_int(v) for v in size)):
                raise err("segmentation", f"RLE size {short_json(size)} is not [height, width]")
            if size != [height, width]:
                raise err("segmentation", f"RLE size {size} != image [height, width] [{height}, {width}]")
            if isinstance(counts, str):
                runs = decode_rle_string(counts)
                if runs is None:
                    raise err("segmentation", "malformed compressed RLE counts string")
            elif isinstance(counts, list) and all(is_json_int(v) for v in counts):
                runs = counts
            else:
                raise err("segmentation", "RLE counts is neither a string nor a list of integers")
            if any(r < 0 for r in runs) or sum(runs) != height * width:
                raise err("segmentation",
                          f"RLE counts cover {sum(runs)} pixels (with negatives: {any(r < 0 for r in runs)}), "
                          f"expected height*width = {height * width}")
            out_seg = {"size": [height, width], "counts": counts}
            seg_area = float(sum(runs[1::2]))
        elif seg is not None:
            raise err("segmentation", f"segmentation is a {type(seg).__name__}, expected polygons or RLE")

        if out_seg is None and box is None:
            raise err("segmentation", "annotation has neither a segmentation nor a bbox")
        if "segmentation" not in ann and self.require_segmentation:
            raise err(
                "segmentation",
                "missing segmentation (for box-only data use paste_by_box=True, or write \"segmentation\": [])",
            )

        if out_seg is not None:
            if not seg_area:
                return None, "clipped_to_nothing" if seg_clipped else "zero_area"
            if box is None or box[2] <= 0 or box[3] <= 0:
                box = self._seg_box(out_seg, height, width)
        else:
            assert box is not None
            if box[2] <= 0 or box[3] <= 0:
                return None, "clipped_to_nothing" if clipped else "zero_area"
        inst = InstanceAnnotation(
            ann_id=ann_id, category_id=cat, iscrowd=bool(crowd), segmentation=out_seg, bbox=box
        )
        return inst, "clipped" if (clipped or seg_clipped) else "ok"

    @staticmethod
    def _seg_box(seg: Segmentation, height: int, width: int) -> tuple[float, float, float, float]:
        if isinstance(seg, list):
            xs = [v for p in seg for v in p[0::2]]
            ys = [v for p in seg for v in p[1::2]]
            return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        x, y, w, h = mask_utils.toBbox(segmentation_rle(seg, height, width)).tolist()
        return (float(x), float(y), float(w), float(h))


def compile_annotations(reader: JsonCompiler, images: list, annotations: list, *,
                        vectorised: bool = True) -> dict[str, Any]:
    """Validate ``images`` and ``annotations`` (the json's lists) with ``reader``'s options and
    categories and pack the kept ones (the :class:`~decal.dali_pipes.coco.index.CocoIndex`
    fields, :meth:`IndexBuilder.build`); ``reader.stats`` is filled in.

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
        if not is_json_id(img_id):
            fail(None, idx, reader._file_error(
                f"images[{idx}] has id {short_json(img_id)}, expected an integer in int64 range", field="id"),
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
        except ImageEntryError as e:
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
        # is_json_id inlined (json ints are exactly int): this loop runs once per annotation
        if not (type(img_id) is int and INT64_MIN <= img_id <= INT64_MAX) or img_id not in slots:
            reason = (
                f"annotations[{j}] has no image_id" if "image_id" not in ann
                else f"annotations[{j}] refers to unknown image id {short_json(img_id)}"
            )
            err = reader._file_error(reason, annotation_id=ann_id if is_json_id(ann_id) else None, field="image_id")
            if not skip:
                raise err
            unknown_image_drops += 1
            continue
        if img_id in bad:
            continue
        if not (type(ann_id) is int and INT64_MIN <= ann_id <= INT64_MAX):
            fail(img_id, None, reader._file_error(
                f"annotations[{j}] has id {short_json(ann_id)}, expected an integer in int64 range",
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
        except ImageEntryError as e:
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
        if idx in bad_slots or (is_json_int(img_id) and img_id in bad and slots.get(img_id) == idx):
            reason = bad.get(img_id) if is_json_int(img_id) and img_id in bad else None
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


def polygon_part_areas(xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                       chunk: int = 1 << 18) -> np.ndarray:
    """(P,) float64 absolute shoelace area of each polygon: vertices ``[starts[p], starts[p] +
    lengths[p])`` of ``xs``/``ys`` (V,) float64 pixels, polygons back to back, every length >= 1.

    Worked through in runs of whole polygons of about ``chunk`` vertices, so the temporaries
    stay small (a polygon's area does not depend on the runs)."""
    starts = np.asarray(starts, np.int64)
    ends = starts + np.asarray(lengths, np.int64)
    out = np.empty(len(starts))
    k0 = 0
    with np.errstate(invalid="ignore", over="ignore"):
        while k0 < len(starts):
            k1 = max(k0 + 1, int(np.searchsorted(starts, starts[k0] + chunk)))
            v0, v1 = int(starts[k0]), int(ends[k1 - 1])
            x, y = xs[v0:v1], ys[v0:v1]
            cross = np.empty(v1 - v0)
            np.multiply(x[:-1], y[1:], out=cross[:-1])
            cross[:-1] -= x[1:] * y[:-1]
            first, last = starts[k0:k1] - v0, ends[k0:k1] - 1 - v0  # each polygon closes onto its first vertex
            cross[last] = x[last] * y[first] - x[first] * y[last]
            out[k0:k1] = 0.5 * np.abs(np.add.reduceat(cross, first))
            k0 = k1
    return out


def _box_pixels(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """(N, 4) int32 ``[x0, y0, x1, y1)``: the pixels whose centres lie in each half-open box
    (the reader's ``_box_mask`` rule)."""
    x, y, w, h = boxes.T
    x0 = np.maximum(0, np.ceil(x - 0.5))
    x1 = np.minimum(widths, np.ceil(x + w - 0.5))
    y0 = np.maximum(0, np.ceil(y - 0.5))
    y1 = np.minimum(heights, np.ceil(y + h - 0.5))
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int32).reshape(-1, 4)


class IndexBuilder:
    """Collects validated instances in json annotation order and packs them into a
    :class:`CocoIndex` (instances grouped by image, in json order within an image).

    An instance is either one of the annotations a compiler has already checked and
    converted in bulk (:meth:`add_checked`: its polygons and box come from the arrays given
    here) or an :class:`~decal.dali_pipes.coco.reader.InstanceAnnotation` (:meth:`add`).

    Args (the bulk-converted annotations; A annotations, P polygons, V vertices):
        coords: (2V,) float64 ``x0, y0, x1, y1, ...`` of their polygons.
        part_lengths: (P,) int64 vertices per polygon.
        part_start, part_count: (A,) int64 each annotation's polygons.
        boxes: (A, 4) float64 each annotation's ``(x, y, w, h)`` box.
        areas: (A,) float64 each annotation's area, the sum of its polygons' shoelace areas
            (:func:`polygon_part_areas`, summed in order: what :meth:`build` computes for the
            others).
    """

    def __init__(self, coords: np.ndarray | None = None, part_lengths: np.ndarray | None = None,
                 part_start: np.ndarray | None = None, part_count: np.ndarray | None = None,
                 boxes: np.ndarray | None = None, areas: np.ndarray | None = None) -> None:
        def arr(v: Any, dtype: Any, shape: tuple[int, ...] = (0,)) -> np.ndarray:
            return np.zeros(shape, dtype) if v is None else np.asarray(v, dtype)

        self._coords = arr(coords, np.float64)
        self._part_lengths = arr(part_lengths, np.int64)
        self._part_start = arr(part_start, np.int64)
        self._part_count = arr(part_count, np.int64)
        self._boxes = arr(boxes, np.float64, (0, 4)).reshape(-1, 4)
        self._areas = arr(areas, np.float64)
        self.image_id: list[int] = []
        self.ann_id: list[int] = []
        self.label: list[int] = []
        self.crowd: list[bool] = []
        self.source: list[int] = []  # j >= 0: checked annotation j; -1 - k: k-th added one
        self._added: list[Any] = []
        self._extra_parts: list[list[float]] = []

    def add_checked(self, image_id: int, ann_id: int, label: int, crowd: bool, j: int) -> None:
        """Bulk-checked annotation ``j`` (a polygon instance), with its validated scalars."""
        self.image_id.append(image_id)
        self.ann_id.append(ann_id)
        self.label.append(label)
        self.crowd.append(crowd)
        self.source.append(j)

    def add(self, image_id: int, ann: Any) -> None:
        """One :class:`~decal.dali_pipes.coco.reader.InstanceAnnotation` of image ``image_id``."""
        self.image_id.append(image_id)
        self.ann_id.append(ann.ann_id)
        self.label.append(ann.category_id)
        self.crowd.append(bool(ann.iscrowd))
        self.source.append(-1 - len(self._added))
        self._added.append(ann)

    def build(self, images: Sequence[tuple[int, str, int, int]], image_dir: str | Path,
              categories: dict[int, dict], stats: ReaderStats) -> dict[str, Any]:
        """The :class:`~decal.dali_pipes.coco.index.CocoIndex` fields (its constructor's
        keyword arguments) of the kept ``images`` (``(image_id, file_name, width, height)``
        in json order); instances of other image ids are left out."""
        position = {image_id: k for k, (image_id, _, _, _) in enumerate(images)}
        row_image = np.fromiter(map(position.get, self.image_id, itertools.repeat(-1)), np.int64, len(self.image_id))
        kept = np.flatnonzero(row_image >= 0)
        rows = kept[np.argsort(row_image[kept], kind="stable")]
        n_inst = np.bincount(row_image[rows], minlength=len(images))
        widths = np.array([w for _, _, w, _ in images], np.int64).reshape(-1)
        heights = np.array([h for _, _, _, h in images], np.int64).reshape(-1)
        source = np.array(self.source, np.int64).reshape(-1)[rows]
        checked = source >= 0
        added_rows = np.flatnonzero(~checked)
        added = [self._added[k] for k in (-1 - source[added_rows]).tolist()]

        # per instance: kind, box, polygons (checked ones first in the parts table)
        kinds = np.full(len(rows), POLYGON, np.uint8)
        boxes = np.zeros((len(rows), 4), np.float64)
        part_start = np.zeros(len(rows), np.int64)
        part_count = np.zeros(len(rows), np.int64)
        boxes[checked] = self._boxes[source[checked]]
        part_start[checked] = self._part_start[source[checked]]
        part_count[checked] = self._part_count[source[checked]]
        extra_parts: list[list[float]] = []
        n_pre = len(self._part_lengths)
        for k, ann in zip(added_rows.tolist(), added):
            boxes[k] = ann.bbox
            seg = ann.segmentation
            if isinstance(seg, list):
                part_start[k], part_count[k] = n_pre + len(extra_parts), len(seg)
                extra_parts.extend(seg)
            else:
                kinds[k] = BOX if seg is None else RLE
        extra_lengths = np.fromiter((len(p) >> 1 for p in extra_parts), np.int64, len(extra_parts))
        extra = np.fromiter(itertools.chain.from_iterable(extra_parts), np.float64, 2 * int(extra_lengths.sum()))
        all_coords = np.concatenate([self._coords, extra]).reshape(-1, 2)
        lengths = np.concatenate([self._part_lengths, extra_lengths])
        starts = offsets(lengths)[:-1]
        parts = ranges(part_start, part_count)
        verts = all_coords[ranges(starts[parts], lengths[parts])]
        vert_offsets = offsets(lengths[parts])
        part_offsets = offsets(part_count)

        # RLE: toggles (every RLE) and the json's compressed strings
        n_toggles = np.zeros(len(rows), np.int64)
        text_lengths = np.zeros(len(rows), np.int64)
        toggles, texts = [], []
        rle_area: dict[int, float] = {}
        for k, ann in zip(added_rows.tolist(), added):
            if kinds[k] != RLE:
                continue
            counts = ann.segmentation["counts"]
            if isinstance(counts, (str, bytes)):
                text = counts.encode() if isinstance(counts, str) else counts
                texts.append(text)
                text_lengths[k] = len(text)
                counts = decode_rle_string(text.decode())
            runs = np.asarray(counts, dtype=np.int64)
            toggles.append(np.cumsum(runs)[:-1].astype(np.int32))
            n_toggles[k] = len(runs) - 1
            rle_area[k] = float(runs[1::2].sum())

        areas = boxes[:, 2] * boxes[:, 3]
        areas[checked] = self._areas[source[checked]]
        added_poly = added_rows[kinds[added_rows] == POLYGON]
        if len(added_poly):  # their polygons are the extra ones, back to back in row order
            part_area = polygon_part_areas(extra[0::2], extra[1::2], offsets(extra_lengths)[:-1], extra_lengths)
            areas[added_poly] = np.add.reduceat(part_area, part_start[added_poly] - n_pre)
        for k, a in rle_area.items():
            areas[k] = a
        names = [name.encode() for _, name, _, _ in images]
        return dict(
            image_ids=np.array([i for i, _, _, _ in images], np.int64).reshape(-1),
            heights=heights.astype(np.int32),
            widths=widths.astype(np.int32),
            name_offsets=offsets([len(n) for n in names]),
            names=np.frombuffer(b"".join(names), np.uint8).copy(),
            inst_offsets=offsets(n_inst),
            ann_ids=np.array(self.ann_id, np.int64)[rows],
            labels=np.array(self.label, np.int64)[rows],
            iscrowd=np.array(self.crowd, np.uint8)[rows],
            areas=areas,
            boxes=boxes,
            box_pixels=_box_pixels(boxes, np.repeat(heights, n_inst), np.repeat(widths, n_inst)),
            kinds=kinds,
            part_offsets=part_offsets,
            vert_offsets=vert_offsets,
            verts=verts,
            toggle_offsets=offsets(n_toggles),
            toggles=np.concatenate(toggles) if toggles else np.zeros(0, np.int32),
            rle_text_offsets=offsets(text_lengths),
            rle_text=np.frombuffer(b"".join(texts), np.uint8).copy(),
            image_dir=Path(image_dir),
            categories=dict(categories),
            stats=ReaderStats(dict(stats.skipped_images), dict(stats.dropped_instances), stats.clipped_instances),
        )
