"""COCO / LVIS instance-annotation reader.

Loads an instance json (COCO ``instances_*.json`` or LVIS ``lvis_v1_*.json``) with the
standard library's :mod:`json`, validates it entry by entry, and exposes one
:class:`ImageRecord` per image, in json order (images without annotations included).

pycocotools' ``COCO`` class is deliberately not used for loading: it prints, builds indices
we do not need and validates nothing. ``pycocotools.mask`` is used for RLE work
(rasterising polygons, decoding RLE, areas and boxes).

Conventions
-----------
* Coordinates are pixels, COCO convention: the image spans ``[0, width] x [0, height]``,
  pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``; boxes are ``(x, y, w, h)``.
* Geometry sticking out of the image is clipped, not rejected (mmdetection clips boxes
  and polygons to the image in its transforms). Polygons are intersected with the image
  rectangle (Sutherland-Hodgman, exact for a rectangle), so every clipped coordinate lies
  in ``[0, width] x [0, height]`` and the clipped polygon covers exactly the in-image part
  of the original one. An instance left with zero area is dropped and counted in
  ``stats.dropped_instances["clipped_to_nothing"]``; one with zero area without any
  clipping (a degenerate polygon, an empty RLE, a box of width or height 0) is dropped as
  ``"zero_area"`` (mmdetection's ``CocoDataset`` likewise drops ``area <= 0`` and
  sub-pixel boxes).
* Crowd annotations (``iscrowd=1``) are kept in ``ImageRecord.annotations`` with
  ``iscrowd=True`` (detectron2 keeps them and lets the model ignore them); they do not
  count towards ``ImageRecord.category_ids`` nor towards repeat-factor frequencies.
* An annotation whose ``segmentation`` is ``[]`` or ``null`` but which has a box
  (detection-only data) is kept; its mask is the filled box (see :func:`rasterize_masks`).
  An annotation with no ``segmentation`` key at all is an error (a misspelt key must not
  turn every mask into a box silently) unless the dataset is loaded with
  ``require_segmentation=False`` (what the loaders pass for ``paste_by_box=True``).
* Ids (image, annotation, category) must be integers that fit in int64 (the loaders carry
  them as ``torch.int64``); others are errors at load, not overflows later.
* LVIS v1 image entries have no ``file_name``; their file is the split folder and base name
  of ``coco_url`` (``http://images.cocodataset.org/train2017/000000391895.jpg`` →
  ``train2017/000000391895.jpg``), relative to the image directory, as detectron2's LVIS
  loader resolves them: LVIS v1 mixes COCO train2017 and val2017 images, so the image
  directory is the COCO root that holds both folders.
* Pixel limit: an image larger than ``max_image_pixels`` (width x height, from the json at
  load and from the file header before any decode) is an error, or a counted skip
  (``"too_many_pixels"`` at load, ``"too many pixels"`` when a file header reveals it).
  Pillow's own decompression-bomb check never escapes as anything but a DatasetError.

Errors are :class:`~decal.dali_pipes.errors.DatasetError`. With ``on_error="skip"`` the
image an error belongs to is skipped (counted in ``stats.skipped_images[reason]``); an
annotation that points to an unknown image id has no image to skip and is dropped instead
(counted in ``stats.dropped_instances["unknown_image_id"]``). Problems of the file as a
whole (unreadable, not JSON, not a COCO instance file, malformed or duplicate categories)
always raise, and so does a missing image directory (one error when the dataset is
built, not one per file).
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence, Union
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from .errors import DatasetError
from .image_header import read_image_header

if TYPE_CHECKING:
    from .coco_index import CocoIndex

__all__ = [
    "decode_rle_string",
    "Segmentation",
    "InstanceAnnotation",
    "ImageRecord",
    "ReaderStats",
    "CocoDataset",
    "rasterize_masks",
]

#: A segmentation as found in COCO json: a list of polygons (each a flat list
#: ``[x0, y0, x1, y1, ...]`` in pixels, >= 3 points), or an RLE dict
#: ``{"size": [height, width], "counts": str | list[int]}`` (compressed string counts or
#: uncompressed run lengths, column-major), or ``None`` for box-only annotations.
Segmentation = Union[list[list[float]], dict[str, Any], None]

_ACCEPTED_FORMATS = ("JPEG", "PNG")

#: Default of ``CocoDataset(max_image_pixels=...)``: Pillow's decompression-bomb error
#: threshold (2 x ``PIL.Image.MAX_IMAGE_PIXELS`` = 178,956,970 pixels, about 537 MB as RGB),
#: far above any COCO/LVIS photo (at most 640 x 640).
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970

#: Ids are carried as int64 (numpy / torch); larger ones are refused at load.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: Deepest json nesting accepted (COCO's deepest is 4: segmentation polygons).
_MAX_JSON_DEPTH = 64


# --------------------------------------------------------------------------- records


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


# --------------------------------------------------------------------------- helpers


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    """An integer id that fits in int64."""
    return _is_int(v) and INT64_MIN <= v <= INT64_MAX


def _short(v: Any, limit: int = 60) -> str:
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
    if _is_int(v):
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


def _box_mask(bbox: Sequence[float], height: int, width: int) -> np.ndarray:
    """(height, width) uint8 mask of the pixels whose centres lie in the half-open box."""
    x, y, w, h = bbox
    x0 = max(0, math.ceil(x - 0.5))
    x1 = min(width, math.ceil(x + w - 0.5))
    y0 = max(0, math.ceil(y - 0.5))
    y1 = min(height, math.ceil(y + h - 0.5))
    m = np.zeros((height, width), np.uint8)
    if x1 > x0 and y1 > y0:
        m[y0:y1, x0:x1] = 1
    return m


def _segmentation_rle(seg: Segmentation, height: int, width: int) -> dict:
    """A pycocotools (compressed) RLE of one instance's segmentation."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    assert isinstance(seg, dict)
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    counts = seg["counts"]
    return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}


def rasterize_masks(record: ImageRecord, *, paste_by_box: bool = False) -> np.ndarray:
    """Per-instance binary masks of one image.

    Args:
        record: the image and its annotations.
        paste_by_box: use the filled boxes instead of the segmentations (datasets without
            masks). A box covers the pixels whose centres lie inside it.

    Returns:
        ``(record.height, record.width, N)`` uint8 array in ``{0, 1}``, C-contiguous, one
        channel per annotation in ``record.annotations`` order (crowd ones included);
        ``N = 0`` gives shape ``(H, W, 0)``. Polygons are rasterised with
        ``pycocotools.mask.frPyObjects`` (parts of a multi-polygon object merged with
        ``merge``), RLE decoded with ``decode``; an annotation without segmentation gets
        its filled box.
    """
    h, w = record.height, record.width
    n = len(record.annotations)
    out = np.zeros((h, w, n), np.uint8)
    rles: list[dict] = []
    rle_slots: list[int] = []
    for i, ann in enumerate(record.annotations):
        if paste_by_box or ann.segmentation is None:
            out[:, :, i] = _box_mask(ann.bbox, h, w)
        else:
            rles.append(_segmentation_rle(ann.segmentation, h, w))
            rle_slots.append(i)
    if rles:
        with warnings.catch_warnings():  # pycocotools vs numpy 2 `copy=` DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rles)  # (h, w, k) Fortran order
        out[:, :, rle_slots] = decoded
    return out


# --------------------------------------------------------------------------- dataset


class _ImageError(Exception):
    """Internal: an error that belongs to one image (skippable)."""

    def __init__(self, err: DatasetError, reason: str) -> None:
        super().__init__(str(err))
        self.err = err
        self.reason = reason


class CocoDataset:
    """A COCO or LVIS instance-segmentation dataset.

    Args:
        annotation_file: the instance json.
        image_dir: directory the images' ``file_name`` (for LVIS, ``split/name`` from
            ``coco_url``) are relative to; must exist.
        on_error: ``"raise"`` (default) raises the first :class:`DatasetError`;
            ``"skip"`` leaves offending images out and counts them in
            ``stats.skipped_images``.
        max_image_pixels: largest ``width * height`` accepted (json sizes at load, file
            headers when read), default :data:`DEFAULT_MAX_IMAGE_PIXELS`; ``None`` = no limit
            (Pillow's bomb check is then bypassed too: decal never decodes with Pillow on
            the data path).
        require_segmentation: an annotation without a ``segmentation`` key is an error
            (default); ``False`` for box-only data (``paste_by_box=True``), whose masks are
            the filled boxes.
        vectorised: check polygon annotations in bulk (default); ``False`` checks each
            annotation on its own (the slow reference the bulk check is tested against;
            errors, skips and results are the same).

    The json is compiled into a :class:`~decal.dali_pipes.coco_index.CocoIndex`
    (:mod:`~decal.dali_pipes.coco_compile`); :attr:`records` are built from it on access.
    :meth:`open` uses the cached, memory-mapped index instead of parsing the json.

    Attributes:
        records: one :class:`ImageRecord` per kept image, in json order (a read-only
            sequence built from :attr:`index` on access: hold on to a record, not to the
            sequence, when reading one many times).
        index: the compiled :class:`~decal.dali_pipes.coco_index.CocoIndex`.
        categories: category id -> the json category dict (LVIS ones carry
            ``"frequency"`` in ``{"r", "c", "f"}``).
        stats: :class:`ReaderStats`.
        annotation_file: path of the json.
        image_dir: the image directory.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        require_segmentation: bool = True,
        vectorised: bool = True,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if max_image_pixels is not None and (not _is_int(max_image_pixels) or max_image_pixels < 1):
            raise ValueError(f"max_image_pixels must be a positive integer or None, got {max_image_pixels!r}")
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.on_error = on_error
        self.max_image_pixels = max_image_pixels
        self.require_segmentation = bool(require_segmentation)
        self._vectorised = bool(vectorised)
        self.stats = ReaderStats()
        self.categories: dict[int, dict] = {}
        self.index: CocoIndex | None = None  # a subclass whose _load fills records itself has none
        self.records: Sequence[ImageRecord] = []
        self._load()

    @classmethod
    def open(
        cls, annotation_file: str | Path, image_dir: str | Path, *, cache_dir: str | Path | None = None,
        **reader_options: Any,
    ) -> "CocoDataset":
        """The dataset on its cached, memory-mapped index
        (:func:`~decal.dali_pipes.coco_index.open_index`, in ``cache_dir``): the json is parsed
        and validated only when it changed; what the loaders use, so that their worker
        processes share one copy of the index in the page cache instead of each holding Python
        objects. ``reader_options``: the constructor's ``on_error``, ``max_image_pixels`` and
        ``require_segmentation``."""
        from .coco_index import open_index

        index = open_index(annotation_file, image_dir, cache_dir=cache_dir, **reader_options)
        return cls.from_index(index, annotation_file, image_dir, **reader_options)

    @classmethod
    def from_index(
        cls,
        index: "CocoIndex",
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        require_segmentation: bool = True,
    ) -> "CocoDataset":
        """A dataset over an index compiled from ``annotation_file`` with these options (the
        caller vouches for that; :meth:`open` is the checked way)."""
        self = cls.__new__(cls)
        self.annotation_file, self.image_dir = Path(annotation_file), Path(image_dir)
        self.on_error, self.max_image_pixels = on_error, max_image_pixels
        self.require_segmentation = bool(require_segmentation)
        self._vectorised = True
        self._attach(index)
        return self

    def _attach(self, index: "CocoIndex") -> None:
        from .coco_index import IndexRecords  # (it builds on this module)

        self.index = index
        self.categories = dict(index.categories)
        self.stats = ReaderStats(dict(index.stats.skipped_images), dict(index.stats.dropped_instances),
                                 index.stats.clipped_instances)
        self.records = IndexRecords(index, self.image_dir)

    # ------------------------------------------------------------------ sequence API

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def __repr__(self) -> str:
        n_ann = self.index.num_instances if self.index is not None else sum(len(r.annotations) for r in self.records)
        return (
            f"CocoDataset({str(self.annotation_file)!r}, images={len(self.records)}, "
            f"instances={n_ann}, categories={len(self.categories)}; {self.stats.summary()})"
        )

    # ------------------------------------------------------------------ loading

    def _file_error(self, reason: str, **kw: Any) -> DatasetError:
        return DatasetError(self.annotation_file, reason, **kw)

    def _load(self) -> None:
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
            from .coco_compile import compile_annotations  # (it builds on this module)

            index = compile_annotations(self, data["images"], data["annotations"], vectorised=self._vectorised)
        except RecursionError:  # a deeply nested value inside an entry (repr, numpy)
            raise self._file_error(f"JSON value nested too deeply (COCO needs {_MAX_JSON_DEPTH} levels at most)") from None
        self._attach(index)

    def _load_categories(self, cats: list) -> None:
        for i, cat in enumerate(cats):
            if not isinstance(cat, dict):
                raise self._file_error(f"categories[{i}] is not an object", field="categories")
            cid = cat.get("id")
            if not _is_id(cid):
                raise self._file_error(
                    f"categories[{i}] has id {_short(cid)}, expected an integer in int64 range", field="id"
                )
            if cid in self.categories:
                raise self._file_error(f"duplicate category id {cid}", field="id")
            self.categories[cid] = cat

    def _parse_image(self, img: dict, img_id: int) -> tuple[str, str, int, int]:
        """``(file_name, path, width, height)`` of a valid image entry (``path`` a string:
        a Path per image costs seconds on LVIS); raises ``_ImageError``."""
        def err(field_: str, reason: str) -> _ImageError:
            return _ImageError(
                self._file_error(reason, image_id=img_id, field=field_), f"invalid_{field_}"
            )

        sizes = {}
        for key in ("width", "height"):
            if key not in img:
                raise err(key, f"missing {key}")
            v = _as_size(img[key])
            if v is None or v > INT64_MAX:
                raise err(key, f"{key} {_short(img[key])} is not a positive integer")
            sizes[key] = v
        pixels = sizes["width"] * sizes["height"]
        if self.max_image_pixels is not None and pixels > self.max_image_pixels:
            raise _ImageError(self._file_error(
                f"{sizes['width']}x{sizes['height']} = {pixels} pixels, over max_image_pixels={self.max_image_pixels}",
                image_id=img_id, field="width"), "too_many_pixels")
        file_name = img.get("file_name")
        if file_name is None and isinstance(img.get("coco_url"), str):
            # LVIS v1: "http://images.cocodataset.org/train2017/000000391895.jpg" -> train2017/000000391895.jpg
            file_name = lvis_file_name(img["coco_url"])
            if not file_name:
                raise err("coco_url", f"cannot derive a file name from coco_url {_short(img['coco_url'])}")
        if file_name is None:
            raise err("file_name", "missing file_name (and no coco_url)")
        if not isinstance(file_name, str) or not file_name or "\0" in file_name:
            raise err("file_name", f"file_name {_short(file_name)} is not a non-empty string")
        if os.path.isabs(file_name):
            raise err("file_name", f"file_name {_short(file_name)} is absolute, expected relative to the image dir")
        return file_name, os.path.join(self.image_dir, file_name), sizes["width"], sizes["height"]

    def _parse_annotation(
        self, ann: dict, ann_id: int, img_id: int, width: int, height: int
    ) -> tuple[InstanceAnnotation | None, str]:
        """Validate and clip one annotation.

        Returns ``(instance, "ok" | "clipped")`` or ``(None, drop_reason)``.
        """

        def err(field_: str, reason: str) -> _ImageError:
            return _ImageError(
                self._file_error(reason, image_id=img_id, annotation_id=ann_id, field=field_),
                f"invalid_{field_}",
            )

        if "category_id" not in ann:
            raise err("category_id", "missing category_id")
        cat = ann.get("category_id")
        if not _is_id(cat) or cat not in self.categories:
            raise err("category_id", f"unknown category id {_short(cat)}")
        crowd = ann.get("iscrowd", 0)
        if not ((isinstance(crowd, bool) or _is_int(crowd)) and crowd in (0, 1)):
            raise err("iscrowd", f"iscrowd {_short(crowd)} is not 0 or 1")

        clipped = False
        # ---- bbox
        bbox = ann.get("bbox")
        box: tuple[float, float, float, float] | None = None
        if bbox is not None:
            arr = _num_array(bbox) if isinstance(bbox, list) else None
            if arr is None or arr.shape != (4,) or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
                raise err("bbox", f"bbox {_short(bbox)} is not 4 finite numbers [x, y, w, h]")
            x, y, w, h = (float(v) for v in arr)
            if w < 0 or h < 0:
                raise err("bbox", f"bbox {_short(bbox)} has a negative width or height")
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
            if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
                raise err("segmentation", f"RLE size {_short(size)} is not [height, width]")
            if size != [height, width]:
                raise err("segmentation", f"RLE size {size} != image [height, width] [{height}, {width}]")
            if isinstance(counts, str):
                runs = decode_rle_string(counts)
                if runs is None:
                    raise err("segmentation", "malformed compressed RLE counts string")
            elif isinstance(counts, list) and all(_is_int(v) for v in counts):
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
        x, y, w, h = mask_utils.toBbox(_segmentation_rle(seg, height, width)).tolist()
        return (float(x), float(y), float(w), float(h))

    # ------------------------------------------------------------------ images

    def _image_record(self, index: int) -> ImageRecord:
        """``records[index]``, without building its annotations when they come from the index."""
        image = getattr(self.records, "image", None)
        return image(index) if image is not None else self.records[index]

    def _image_error(self, rec: ImageRecord, reason: str, field_: str = "file_name") -> DatasetError:
        return DatasetError(rec.path, reason, image_id=rec.image_id, field=field_)

    def _check_header(self, rec: ImageRecord, img: Any) -> None:
        """Format and size of a PIL image (or an :class:`ImageHeader`) against the record."""
        if img.format not in _ACCEPTED_FORMATS:
            raise self._image_error(rec, f"unsupported image format {img.format!r} (expected JPEG or PNG)")
        w, h = (img.width, img.height)
        if w != rec.width:
            raise self._image_error(rec, f"file is {w}x{h} (WxH), json says width {rec.width}", "width")
        if h != rec.height:
            raise self._image_error(rec, f"file is {w}x{h} (WxH), json says height {rec.height}", "height")

    def _check_pixels(self, rec: ImageRecord, data: np.ndarray) -> bool:
        """Enforce ``max_image_pixels`` on the size the file's header declares (before any
        decoder sees it). True when the header was parsed (format and size then checked)."""
        header = read_image_header(data.data)
        if header is None:
            return False
        if self.max_image_pixels is not None and header.pixels > self.max_image_pixels:
            raise self._image_error(
                rec,
                f"too many pixels: the file's header declares {header.width}x{header.height} = {header.pixels} "
                f"pixels, over max_image_pixels={self.max_image_pixels}",
                "width",
            )
        return True

    def read_image_bytes(self, index: int) -> np.ndarray:
        """The encoded image file of ``records[index]``.

        Only the header is parsed (PIL ``Image.open`` without decoding): the format must
        be JPEG or PNG and the size must equal the record's width/height; the size the
        header declares must be within ``max_image_pixels`` (checked first, from the raw
        header bytes).

        Returns:
            1-D uint8 array of the file's bytes.

        Raises:
            DatasetError: field ``"file_name"`` for a missing, unreadable or non-image
                file or an unsupported format; ``"width"``/``"height"`` for a size mismatch
                or a size over ``max_image_pixels`` (reason ``"too many pixels: ..."``).
        """
        rec = self._image_record(index)
        try:
            data = np.fromfile(rec.path, dtype=np.uint8)
        except OSError as e:
            raise self._image_error(rec, f"cannot read image file: {e.strerror or e}") from e
        self._check_pixels(rec, data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data.tobytes())) as img:
                    self._check_header(rec, img)
        except Image.DecompressionBombError as e:
            # only reachable with max_image_pixels above Pillow's threshold (or None): the
            # limit the user chose was checked above, so judge the header without Pillow
            header = read_image_header(data.data)
            if header is None:
                raise self._image_error(rec, f"not a readable image: {e}") from e
            self._check_header(rec, header)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            if isinstance(e, DatasetError):
                raise
            raise self._image_error(rec, f"not a readable image: {e}") from e
        return data

    def decode_check(self, index: int) -> DatasetError | None:
        """Fully decode ``records[index]`` with PIL; the error it would cause, or None.

        Slow: meant for the failure path only, to find which file of a batch is corrupt.
        """
        rec = self._image_record(index)
        try:
            self._check_pixels(rec, np.fromfile(rec.path, dtype=np.uint8))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(rec.path) as img:
                    self._check_header(rec, img)
                    img.load()
        except DatasetError as e:
            return e
        except Image.DecompressionBombError as e:
            return self._image_error(rec, f"too many pixels for Pillow to decode: {e}", "width")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            return self._image_error(rec, f"image does not decode: {e}")
        return None

    # ------------------------------------------------------------------ masks

    def rasterize_masks(self, record: ImageRecord | int, *, paste_by_box: bool = False) -> np.ndarray:
        """:func:`rasterize_masks` of a record (or of ``records[index]``): ``(H, W, N)``
        uint8 in ``{0, 1}``, C-contiguous, one channel per annotation."""
        if not isinstance(record, ImageRecord):
            record = self.records[record]
        return rasterize_masks(record, paste_by_box=paste_by_box)

    # ------------------------------------------------------------------ statistics

    def image_category_ids(self) -> list[frozenset[int]]:
        """Per record, in order, its :attr:`ImageRecord.category_ids` (non-crowd category
        ids), read from the index without building the records."""
        if self.index is None:
            return [r.category_ids for r in self.records]
        labels = np.asarray(self.index.labels)
        crowd = np.asarray(self.index.iscrowd) != 0
        kept_before = np.concatenate([[0], np.cumsum(~crowd)])[np.asarray(self.index.inst_offsets)]
        return [frozenset(part.tolist()) for part in np.split(labels[~crowd], kept_before[1:-1])]

    def category_image_counts(self) -> dict[int, int]:
        """Category id -> number of kept images with at least one non-crowd instance of
        it (every category of the json is a key; absent ones count 0). Used for repeat
        factor sampling."""
        if self.index is not None:
            return self.index.category_image_counts()
        counts = {cid: 0 for cid in self.categories}
        for rec in self.records:
            for cid in rec.category_ids:
                counts[cid] += 1
        return counts
