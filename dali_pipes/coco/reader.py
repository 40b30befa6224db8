"""COCO / LVIS instance-annotation reader.

Loads an instance json (COCO ``instances_*.json`` or LVIS ``lvis_v1_*.json``)
(:func:`parse_json`), validates it by the rules below and compiles it into a
:class:`~decal.dali_pipes.coco.index.CocoIndex` (:mod:`~decal.dali_pipes.coco.compiler`: bulk
checks, with this module's per-entry parser for anything out of the ordinary), and exposes one
:class:`ImageRecord` per image, in json order (images without annotations included), built
from the index on access.

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

Errors are :class:`~decal.dali_pipes.core.errors.DatasetError`. With ``on_error="skip"`` the
image an error belongs to is skipped (counted in ``stats.skipped_images[reason]``); an
annotation that points to an unknown image id has no image to skip and is dropped instead
(counted in ``stats.dropped_instances["unknown_image_id"]``). Problems of the file as a
whole (unreadable, not JSON, not a COCO instance file, malformed or duplicate categories)
always raise, and so does a missing image directory (one error when the dataset is
built, not one per file).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from .compiler import JsonCompiler, lvis_file_name, parse_json
from .index import CocoIndex, IndexRecords, open_index
from .records import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageRecord,
    InstanceAnnotation,
    ReaderStats,
    Segmentation,
    decode_rle_string,
    is_json_int,
    segmentation_rle,
)
from ..core.errors import DatasetError
from .file_bytes import read_file_bytes
from .image_header import ImageHeader, read_image_header

__all__ = [
    "decode_rle_string",
    "Segmentation",
    "InstanceAnnotation",
    "ImageRecord",
    "ReaderStats",
    "CocoDataset",
    "rasterize_masks",
    "lvis_file_name",
    "parse_json",
    "DEFAULT_MAX_IMAGE_PIXELS",
]

_ACCEPTED_FORMATS = ("JPEG", "PNG")

# --------------------------------------------------------------------------- helpers


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
            rles.append(segmentation_rle(ann.segmentation, h, w))
            rle_slots.append(i)
    if rles:
        with warnings.catch_warnings():  # pycocotools vs numpy 2 `copy=` DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rles)  # (h, w, k) Fortran order
        out[:, :, rle_slots] = decoded
    return out


# --------------------------------------------------------------------------- dataset


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

    The json is compiled into a :class:`~decal.dali_pipes.coco.index.CocoIndex`
    (:mod:`~decal.dali_pipes.coco.compiler`); :attr:`records` are built from it on access.
    :meth:`open` uses the cached, memory-mapped index instead of parsing the json.

    Attributes:
        records: one :class:`ImageRecord` per kept image, in json order (a read-only
            sequence built from :attr:`index` on access: hold on to a record, not to the
            sequence, when reading one many times).
        index: the compiled :class:`~decal.dali_pipes.coco.index.CocoIndex`.
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
        if max_image_pixels is not None and (not is_json_int(max_image_pixels) or max_image_pixels < 1):
            raise ValueError(f"max_image_pixels must be a positive integer or None, got {max_image_pixels!r}")
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.on_error = on_error
        self.max_image_pixels = max_image_pixels
        self.require_segmentation = bool(require_segmentation)
        self._vectorised = bool(vectorised)
        self.stats = ReaderStats()
        self._file_entries: dict[int, tuple[str, int, int]] = {}
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
        (:func:`~decal.dali_pipes.coco.index.open_index`, in ``cache_dir``): the json is parsed
        and validated only when it changed; what the loaders use, so that their worker
        processes share one copy of the index in the page cache instead of each holding Python
        objects. ``reader_options``: the constructor's ``on_error``, ``max_image_pixels`` and
        ``require_segmentation``."""
        index = open_index(annotation_file, image_dir, cache_dir=cache_dir, **reader_options)
        return cls.from_index(index, annotation_file, image_dir, **reader_options)

    @classmethod
    def from_index(
        cls,
        index: CocoIndex,
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

    def _attach(self, index: CocoIndex) -> None:
        self.index = index
        self.categories = dict(index.categories)
        self.stats = ReaderStats(dict(index.stats.skipped_images), dict(index.stats.dropped_instances),
                                 index.stats.clipped_instances)
        self.records = IndexRecords(index, self.image_dir)
        self._file_entries = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the per-read cache (a DALI worker builds its own)."""
        return {**self.__dict__, "_file_entries": {}}

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

    def _load(self) -> None:
        """Parse, validate and compile the json (:class:`~decal.dali_pipes.coco.compiler.JsonCompiler`)."""
        compiler = JsonCompiler(self.annotation_file, self.image_dir, on_error=self.on_error,
                                max_image_pixels=self.max_image_pixels,
                                require_segmentation=self.require_segmentation)
        self._attach(CocoIndex(**compiler.compile(vectorised=self._vectorised)))

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

    def _check_pixels(self, rec: ImageRecord, data: np.ndarray) -> ImageHeader | None:
        """Enforce ``max_image_pixels`` on the size the file's header declares (before any
        decoder sees it). The parsed header, or None when the raw parser could not read it."""
        header = read_image_header(data.data)
        if header is None:
            return None
        if self.max_image_pixels is not None and header.pixels > self.max_image_pixels:
            raise self._image_error(
                rec,
                f"too many pixels: the file's header declares {header.width}x{header.height} = {header.pixels} "
                f"pixels, over max_image_pixels={self.max_image_pixels}",
                "width",
            )
        return header

    def _file_entry(self, index: int) -> tuple[str, int, int]:
        """``(path, width, height)`` of ``records[index]``: built from the record the first time
        an index is read, then looked up (one dict lookup per read, no record, no path join)."""
        entry = self._file_entries.get(index)
        if entry is None:
            rec = self._image_record(index)
            entry = self._file_entries[index] = (str(rec.path), rec.width, rec.height)
        return entry

    def read_image_bytes(self, index: int) -> np.ndarray:
        """The encoded image file of ``records[index]``.

        Only the header is parsed: the format must be JPEG or PNG and the size must equal the
        record's width/height; the size the header declares must be within
        ``max_image_pixels``. The raw header parser (``dali_pipes/coco/image_header.py``)
        reads them on the hot path; Pillow (``Image.open`` without decoding) judges only a
        file that parser cannot read, so its error names what is wrong. Broken data after
        a valid header is found when the file is decoded (:meth:`decode_check`).

        The hot path reads the path and size from a per-dataset cache (:meth:`_file_entry`)
        and the file with :func:`~decal.dali_pipes.coco.file_bytes.read_file_bytes`; any
        failed check goes to :meth:`_checked_bytes`, which builds the record and raises the
        error.

        Returns:
            1-D uint8 array of the file's bytes.

        Raises:
            DatasetError: field ``"file_name"`` for a missing, unreadable or non-image
                file or an unsupported format; ``"width"``/``"height"`` for a size mismatch
                or a size over ``max_image_pixels`` (reason ``"too many pixels: ..."``).
        """
        path, width, height = self._file_entry(index)
        try:
            data = read_file_bytes(path)
        except OSError as e:
            raise self._image_error(self._image_record(index), f"cannot read image file: {e.strerror or e}") from e
        header = read_image_header(data.data)
        if header is not None:
            fmt, w, h = header
            limit = self.max_image_pixels
            if w == width and h == height and (limit is None or w * h <= limit) and fmt in _ACCEPTED_FORMATS:
                return data
        return self._checked_bytes(self._image_record(index), data)

    def _checked_bytes(self, rec: ImageRecord, data: np.ndarray) -> np.ndarray:
        """``data`` (the file of ``rec``) after every header check, each failure raised as its
        :class:`DatasetError`: the pixel limit, then format and size (from the raw header, or
        from Pillow when that parser cannot read the file)."""
        header = self._check_pixels(rec, data)
        if header is not None:  # no Pillow (~60 µs an image)
            self._check_header(rec, header)
            return data
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data.tobytes())) as img:
                    self._check_header(rec, img)
        except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            # a file the raw parser cannot read: whatever Pillow says is wrong with it
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
