"""A compiled COCO / LVIS dataset index: the validated annotations as packed NumPy arrays.

A source that must describe thousands of images per second cannot walk Python lists of
annotations. :class:`CocoIndex` holds the kept images and instances of a json as flat arrays,
so a batch's instance data is gathered by slicing. It is what
:class:`~decal.dali_pipes.coco.reader.CocoDataset` compiles the json into
(:mod:`~decal.dali_pipes.coco.compiler`, with the reader's errors, skips and counts;
:class:`IndexBuilder` packs the rows), and :class:`IndexRecords` gives the reader's
:class:`~decal.dali_pipes.coco.reader.ImageRecord` view of it:

Per image (I images, in ``dataset.records`` order):

================ ============ =====================================================
array            shape        meaning
================ ============ =====================================================
image_ids        (I,) int64   json image id
heights, widths  (I,) int32   pixels
name_offsets     (I+1,) int64 byte range of each file name in ``names`` (UTF-8)
names            (bytes,) u8  all file names, concatenated
inst_offsets     (I+1,) int64 range of each image's instances
================ ============ =====================================================

Per instance (N instances, in record order, crowd ones included):

================ ============ =====================================================
ann_ids          (N,) int64   json annotation id
labels           (N,) int64   category id
iscrowd          (N,) uint8   COCO ``iscrowd``
areas            (N,) float64 the reader's area: shoelace sum of the (clipped) polygons,
                              foreground pixels of an RLE, ``w·h`` of a box
boxes            (N, 4) f64   ``(x, y, w, h)`` pixels, the reader's (clipped) box
box_pixels       (N, 4) int32 ``[x0, y0, x1, y1)`` pixels whose centres lie in the box
kinds            (N,) uint8   :data:`POLYGON`, :data:`RLE` or :data:`BOX` (no segmentation)
part_offsets     (N+1,) int64 range of each instance's polygons in ``vert_offsets``
vert_offsets     (P+1,) int64 range of each polygon's vertices in ``verts``
verts            (V, 2) f64   polygon vertices ``(x, y)``, pixels, exactly the reader's
toggle_offsets   (N+1,) int64 range of each RLE's toggles in ``toggles``
toggles          (Q,) int32   RLE toggle positions, column-major
                              (:func:`~decal.kernels.rle_decode.toggles_from_counts`)
rle_text_offsets (N+1,) int64 byte range of each instance's compressed RLE string in
                              ``rle_text`` (empty for uncompressed RLE and the others)
rle_text         (bytes,) u8  the json's compressed RLE strings (ASCII), concatenated
================ ============ =====================================================

**Cache.** :func:`open_index` keeps the arrays as ``.npy`` files in
``cache_dir / <key>/``, opened with ``mmap_mode="r"`` so that every process of a node (DALI
source workers, DDP ranks) shares one copy in the page cache. The key is the BLAKE2b digest
of the json's *content*, the reader options (``on_error``, the image directory) and
:data:`FORMAT_VERSION`; a changed json therefore gets a new index. To avoid hashing a large
json on every open, the digest is remembered per json path together with its size and
``st_mtime_ns``: a json whose size or mtime changed is re-hashed (and, if its content did not
change, finds its old index). An index directory is written under a temporary name and
renamed into place, so a reader never sees a half-written one. Image files are checked for
existence when the index is built; one that disappears later is reported when it is read
(:meth:`~decal.dali_pipes.coco.reader.CocoDataset.read_image_bytes`).

Instances are described as :func:`~decal.dali_pipes.copy_paste.gpu_masks.record_instances`
describes them, and :func:`batch_descriptors` gives the same
:class:`~decal.kernels.instance_masks.MaskDescriptors` as
:func:`~decal.kernels.instance_masks.build_descriptors`, bit for bit
(``tests/test_coco_index.py``), without a Python loop over annotations.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ...kernels.geometry_batch import GeometryBatch, geometry_tables
from ...kernels.instance_masks import ARRAY_FIELDS, MaskDescriptors
from ...kernels.mask_geometry import SampleGeometry
from ...kernels.rasterize_polygons import upsample_vertices
from ...kernels.rle_decode import box_toggles
from .compiler import BOX, POLYGON, RLE, IndexBuilder, JsonCompiler
from .records import DEFAULT_MAX_IMAGE_PIXELS, ImageRecord, InstanceAnnotation, ReaderStats, offsets, ranges

__all__ = [
    "POLYGON",
    "RLE",
    "BOX",
    "FORMAT_VERSION",
    "CocoIndex",
    "open_index",
    "index_key",
    "default_index_dir",
    "batch_descriptors",
    "instance_columns",
    "instance_spans",
    "dataset_index",
    "IndexBuilder",
    "IndexRecords",
]

#: Bumped whenever the arrays' layout or meaning changes (part of the cache key).
FORMAT_VERSION = 2
_COMPLETE = "meta.json"


def default_index_dir() -> Path:
    """``$DECAL_INDEX_DIR``, else ``$XDG_CACHE_HOME/decal/coco_index`` (``~/.cache/...``)."""
    if os.environ.get("DECAL_INDEX_DIR"):
        return Path(os.environ["DECAL_INDEX_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "decal" / "coco_index"


@dataclass(frozen=True)
class CocoIndex:
    """The packed arrays of a validated dataset (see the module docstring for each field).

    Attributes besides the arrays:
        image_dir: directory the file names are relative to.
        categories: category id -> json category dict.
        stats: the reader's :class:`~decal.dali_pipes.coco.reader.ReaderStats` at build time.
        directory: where the arrays live on disk (memory-mapped), or None (in memory).
    """

    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    name_offsets: np.ndarray
    names: np.ndarray
    inst_offsets: np.ndarray
    ann_ids: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray
    boxes: np.ndarray
    box_pixels: np.ndarray
    kinds: np.ndarray
    part_offsets: np.ndarray
    vert_offsets: np.ndarray
    verts: np.ndarray
    toggle_offsets: np.ndarray
    toggles: np.ndarray
    rle_text_offsets: np.ndarray
    rle_text: np.ndarray
    image_dir: Path
    categories: dict[int, dict]
    stats: ReaderStats
    directory: Path | None = None

    # ------------------------------------------------------------------ build

    @classmethod
    def from_dataset(cls, dataset: Any) -> "CocoIndex":
        """The index of a loaded dataset: a :class:`~decal.dali_pipes.coco.reader.CocoDataset`
        is compiled already (its :attr:`~decal.dali_pipes.coco.reader.CocoDataset.index`);
        any other dataset with ``records`` (e.g. an image folder) is compiled from them."""
        compiled = getattr(dataset, "index", None)
        if isinstance(compiled, CocoIndex):
            return compiled
        builder = IndexBuilder()
        for rec in dataset.records:
            for ann in rec.annotations:
                builder.add(rec.image_id, ann)
        return cls(**builder.build(
            [(r.image_id, r.file_name, r.width, r.height) for r in dataset.records],
            dataset.image_dir, dict(dataset.categories), dataset.stats,
        ))

    # ------------------------------------------------------------------ disk

    @classmethod
    def array_names(cls) -> tuple[str, ...]:
        """The names of the array fields (one ``.npy`` file each)."""
        return tuple(f.name for f in fields(cls) if f.type == "np.ndarray")

    def save(self, directory: str | Path) -> Path:
        """Write the arrays and metadata into a new ``directory`` (atomically: written
        beside it, then renamed). Returns ``directory``; an existing one is left alone."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            for name in self.array_names():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name)), allow_pickle=False)
            meta = {
                "format_version": FORMAT_VERSION,
                "image_dir": str(self.image_dir),
                "categories": [self.categories[k] for k in self.categories],
                "stats": {
                    "skipped_images": self.stats.skipped_images,
                    "dropped_instances": self.stats.dropped_instances,
                    "clipped_instances": self.stats.clipped_instances,
                },
            }
            (tmp / _COMPLETE).write_text(json.dumps(meta))
            try:
                os.rename(tmp, directory)
            except OSError:  # another process got there first: keep theirs
                if not (directory / _COMPLETE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True) -> "CocoIndex":
        """Open an index written by :meth:`save`; arrays memory-mapped read-only by default."""
        directory = Path(directory)
        meta_path = directory / _COMPLETE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"{directory}: not a complete decal index ({error})") from error
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: field 'format_version' is {meta.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}; delete the directory to rebuild it")
        arrays = {}
        for name in cls.array_names():
            path = directory / f"{name}.npy"
            try:
                arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ValueError(f"{path}: damaged index array ({error}); delete {directory} to rebuild it") from error
        stats = meta["stats"]
        return cls(
            **arrays,
            image_dir=Path(meta["image_dir"]),
            categories={int(c["id"]): c for c in meta["categories"]},
            stats=ReaderStats(stats["skipped_images"], stats["dropped_instances"], stats["clipped_instances"]),
            directory=directory,
        )

    def __reduce__(self) -> Any:
        """A memory-mapped index pickles as its directory (worker processes map the same
        files); an in-memory one as its arrays."""
        if self.directory is not None:
            return (CocoIndex.load, (self.directory,))
        return (_rebuild, (self.__class__, {f.name: getattr(self, f.name) for f in fields(self)}))

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_instances(self) -> int:
        return len(self.labels)

    def file_name(self, i: int) -> str:
        """File name of image ``i``, relative to :attr:`image_dir`."""
        return bytes(self.names[self.name_offsets[i] : self.name_offsets[i + 1]]).decode()

    def instance_range(self, i: int) -> tuple[int, int]:
        """[begin, end) of image ``i``'s instances."""
        return int(self.inst_offsets[i]), int(self.inst_offsets[i + 1])

    def polygons(self, n: int) -> list[np.ndarray]:
        """The polygons of instance ``n``, each (K, 2) float64 ``(x, y)`` (empty list unless
        it is a :data:`POLYGON` instance)."""
        p0, p1 = int(self.part_offsets[n]), int(self.part_offsets[n + 1])
        return [np.asarray(self.verts[self.vert_offsets[p] : self.vert_offsets[p + 1]]) for p in range(p0, p1)]

    def instance_toggles(self, n: int) -> np.ndarray:
        """(Q,) int32 RLE toggles of instance ``n`` (empty unless it is an :data:`RLE` one)."""
        return np.asarray(self.toggles[self.toggle_offsets[n] : self.toggle_offsets[n + 1]])

    def instances(self, i: int, *, paste_by_box: bool = False) -> list[tuple[str, Any]]:
        """Image ``i``'s instances as ``("poly", [(K, 2) float64, ...])`` or ``("rle",
        toggles)`` (box-only ones, and all with ``paste_by_box``, as the toggles of their
        filled pixel box): what :func:`~decal.kernels.instance_masks.build_descriptors` takes."""
        begin, end = self.instance_range(i)
        height = int(self.heights[i])
        out: list[tuple[str, Any]] = []
        for n in range(begin, end):
            kind = int(self.kinds[n])
            if paste_by_box or kind == BOX:
                x0, y0, x1, y1 = (int(v) for v in self.box_pixels[n])
                out.append(("rle", box_toggles(x0, y0, x1, y1, height)))
            elif kind == POLYGON:
                out.append(("poly", self.polygons(n)))
            else:
                out.append(("rle", self.instance_toggles(n)))
        return out

    def category_image_counts(self) -> dict[int, int]:
        """Category id -> number of images with at least one non-crowd instance of it (as
        :meth:`~decal.dali_pipes.coco.reader.CocoDataset.category_image_counts`)."""
        image_of = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.inst_offsets))
        keep = np.asarray(self.iscrowd) == 0
        pairs = np.unique(np.stack([np.asarray(self.labels)[keep], image_of[keep]]), axis=1)
        cats, counts = np.unique(pairs[0], return_counts=True)
        out = {cid: 0 for cid in self.categories}
        out.update({int(c): int(k) for c, k in zip(cats, counts)})
        return out


def _rebuild(cls: type, values: dict[str, Any]) -> CocoIndex:
    return cls(**values)


class IndexRecords(Sequence[ImageRecord]):
    """The :class:`~decal.dali_pipes.coco.reader.ImageRecord` s of an index, built on access
    (nothing is kept: a record costs ~2 µs per instance to build).

    A record equals the one the per-annotation reader builds: polygons as lists of floats
    (the reader's clipped coordinates), RLE as ``{"size": [h, w], "counts": ...}`` with the
    json's own compressed string or run-length list, ``None`` for box-only instances.
    """

    def __init__(self, index: CocoIndex, image_dir: str | Path) -> None:
        self.index = index
        self.image_dir = Path(image_dir)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._record(k) for k in range(*i.indices(len(self)))]
        return self._record(self._position(i))

    def __iter__(self) -> Any:
        return (self._record(k) for k in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (IndexRecords, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __reduce__(self) -> Any:
        return (IndexRecords, (self.index, self.image_dir))

    def _position(self, i: Any) -> int:
        n = len(self)
        k = int(i)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"record {i} out of range for {n} images")
        return k

    def image(self, i: int) -> ImageRecord:
        """Record ``i`` without its annotations (file, size and id only: cheap)."""
        k = self._position(i)
        name = self.index.file_name(k)
        return ImageRecord(int(self.index.image_ids[k]), name, self.image_dir / name,
                           int(self.index.widths[k]), int(self.index.heights[k]), ())

    def _record(self, k: int) -> ImageRecord:
        index = self.index
        begin, end = index.instance_range(k)
        height, width = int(index.heights[k]), int(index.widths[k])
        anns = []
        if end > begin:
            kinds = index.kinds[begin:end].tolist()
            boxes = index.boxes[begin:end].tolist()
            ann_ids, labels = index.ann_ids[begin:end].tolist(), index.labels[begin:end].tolist()
            crowd = index.iscrowd[begin:end].tolist()
            for n, kind in enumerate(kinds, start=begin):
                seg: Any = None
                if kind == POLYGON:
                    seg = [np.asarray(p).reshape(-1).tolist() for p in index.polygons(n)]
                elif kind == RLE:
                    t0, t1 = int(index.rle_text_offsets[n]), int(index.rle_text_offsets[n + 1])
                    if t1 > t0:
                        counts: Any = bytes(index.rle_text[t0:t1]).decode()
                    else:
                        edges = np.concatenate([[0], index.instance_toggles(n).astype(np.int64), [height * width]])
                        counts = np.diff(edges).tolist()
                    seg = {"size": [height, width], "counts": counts}
                m = n - begin
                anns.append(InstanceAnnotation(ann_ids[m], labels[m], bool(crowd[m]), seg, tuple(boxes[m])))
        name = index.file_name(k)
        return ImageRecord(int(index.image_ids[k]), name, self.image_dir / name, width, height, tuple(anns))


# --------------------------------------------------------------------------- cache


def _content_digest(path: Path, stamp_dir: Path) -> str:
    """BLAKE2b of the file's bytes, remembered per (path, size, mtime_ns)."""
    st = path.stat()
    stamp = stamp_dir / (hashlib.blake2b(str(path.resolve()).encode(), digest_size=16).hexdigest() + ".json")
    try:
        known = json.loads(stamp.read_text())
        if known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
            return str(known["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    stamp_dir.mkdir(parents=True, exist_ok=True)
    # a temporary file of this call's own (threads of one process open datasets at once),
    # renamed into place atomically
    fd, tmp = tempfile.mkstemp(prefix=stamp.stem + ".", suffix=".tmp", dir=stamp_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": value}))
    os.replace(tmp, stamp)
    return value


def index_key(
    annotation_file: str | Path,
    image_dir: str | Path,
    on_error: str,
    cache_dir: Path,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    require_segmentation: bool = True,
) -> str:
    """The cache key of an index: json content, every reader option (they decide which
    images and instances the index holds) and :data:`FORMAT_VERSION`."""
    digest = _content_digest(Path(annotation_file), cache_dir / "stamps")
    options = (
        f"{FORMAT_VERSION}|{on_error}|{Path(image_dir).resolve()}|{max_image_pixels}|{bool(require_segmentation)}"
    ).encode()
    return f"{digest}-{hashlib.blake2b(options, digest_size=8).hexdigest()}"


def open_index(
    annotation_file: str | Path,
    image_dir: str | Path,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    require_segmentation: bool = True,
    cache_dir: str | Path | None = None,
    dataset: Any = None,
) -> CocoIndex:
    """The memory-mapped index of ``annotation_file``, built (and cached) on first use.

    Args:
        annotation_file, image_dir, on_error, max_image_pixels, require_segmentation: as
            :class:`~decal.dali_pipes.coco.reader.CocoDataset`.
        cache_dir: where indices live (default :func:`default_index_dir`).
        dataset: the already loaded :class:`~decal.dali_pipes.coco.reader.CocoDataset` of
            this json, whose index is saved when none is cached (otherwise the json is
            compiled by :class:`~decal.dali_pipes.coco.compiler.JsonCompiler`); its own reader
            options then take the place of the arguments.

    Raises:
        DatasetError: when building, for the reader's errors (``on_error="raise"``).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_index_dir()
    if dataset is not None:
        on_error, max_image_pixels = dataset.on_error, dataset.max_image_pixels
        require_segmentation = dataset.require_segmentation
    reader_options = {"max_image_pixels": max_image_pixels, "require_segmentation": require_segmentation}
    directory = cache / index_key(annotation_file, image_dir, on_error, cache, **reader_options)
    if (directory / _COMPLETE).is_file():
        return CocoIndex.load(directory)
    if dataset is None:
        CocoIndex(**JsonCompiler(annotation_file, image_dir, on_error=on_error, **reader_options).compile()).save(directory)
    else:
        dataset.index.save(directory)
    return CocoIndex.load(directory)


# --------------------------------------------------------------------------- batches


def instance_columns(index: CocoIndex, images: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The per-instance source columns of the images ``images`` (B,) int64, sliced from the
    index with no record built: labels, one (N_b,) int64 per image; iscrowd, one (N_b,) uint8
    per image; image ids, one dense (B, 1) int64 array."""
    ranges = np.stack([index.inst_offsets[images], index.inst_offsets[images + 1]], axis=1).tolist()
    labels, iscrowd = np.asarray(index.labels), np.asarray(index.iscrowd)
    return (
        [np.array(labels[b:e], dtype=np.int64) for b, e in ranges],
        [np.array(iscrowd[b:e], dtype=np.uint8) for b, e in ranges],
        np.asarray(index.image_ids)[images].astype(np.int64).reshape(-1, 1),
    )


def dataset_index(dataset: Any, index: CocoIndex | None = None) -> CocoIndex:
    """The compiled index of ``dataset``: ``index`` when given (checked to hold the dataset's
    images, else ValueError), else :meth:`CocoIndex.from_dataset`."""
    own = CocoIndex.from_dataset(dataset)
    if index is None:
        return own
    if len(index) != len(dataset) or not np.array_equal(index.image_ids, own.image_ids):
        raise ValueError("index: its images are not the dataset's (built from another json or reader options)")
    return index


def instance_spans(index: CocoIndex, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first instance, instance count) of each image of ``images`` (B,) int64, both (B,)
    int64; an entry of -1 stands for an image without instances (e.g. an unused mosaic tile)."""
    images = np.asarray(images, dtype=np.int64)
    present = images >= 0
    at = np.where(present, images, 0)
    first = np.asarray(index.inst_offsets)[at]
    return np.where(present, first, 0), np.where(present, np.asarray(index.inst_offsets)[at + 1] - first, 0)


def batch_descriptors(
    index: CocoIndex,
    images: Sequence[int],
    geometries: GeometryBatch | Sequence[SampleGeometry],
    *,
    subpixel: bool = False,
    paste_by_box: bool = False,
) -> tuple[MaskDescriptors, dict[str, np.ndarray]]:
    """The :func:`~decal.kernels.instance_masks.build_descriptors` of ``index.instances(i)``
    for each image ``i`` of a batch, computed by gathering from the packed arrays.

    Args:
        index: the compiled dataset.
        images: (B,) image indices of the batch; -1 for an entry without instances (its
            geometry still gets its table).
        geometries: the batch's geometry (:class:`~decal.kernels.geometry_batch.GeometryBatch`,
            what the sources pass), or per sample its
            :class:`~decal.kernels.mask_geometry.SampleGeometry` (all of one output size).
        subpixel, paste_by_box: as ``build_descriptors`` / the loaders.

    Returns:
        ``(descriptors, bounds)`` equal, array for array, to ``build_descriptors``'s.
    """
    images = np.asarray(images, dtype=np.int64).reshape(-1)
    if len(images) != len(geometries):
        raise ValueError(f"{len(images)} samples but {len(geometries)} geometries")
    if not len(images):
        raise ValueError("a batch needs at least one sample")
    if not isinstance(geometries, GeometryBatch):
        geometries = GeometryBatch.from_samples(geometries)
    batch = len(images)
    height, width = geometries.out_h, geometries.out_w
    tables = geometry_tables(geometries, subpixel=subpixel)  # one vectorised pass
    per_sample_tables = 2 if subpixel else 1

    # the batch's instances, in sample order: global instance ids, their sample, output row
    first, counts = instance_spans(index, images)
    inst = ranges(first, counts)
    sample = np.repeat(np.arange(batch, dtype=np.int64), counts)
    row = np.arange(len(inst), dtype=np.int64)
    kinds = np.asarray(index.kinds)[inst]
    is_poly = np.zeros(len(inst), bool) if paste_by_box else kinds == POLYGON
    is_rle = ~is_poly
    is_box = is_rle if paste_by_box else kinds == BOX

    # polygons: parts, then vertices
    p_inst = inst[is_poly]
    p_sample = sample[is_poly]
    part_first = index.part_offsets[p_inst]
    part_count = index.part_offsets[p_inst + 1] - part_first
    parts = ranges(part_first, part_count)
    part_sample = np.repeat(p_sample, part_count)
    vert_first = index.vert_offsets[parts]
    vert_count = index.vert_offsets[parts + 1] - vert_first
    xy = np.take(np.asarray(index.verts), ranges(vert_first, vert_count), axis=0)  # ~10× faster than [idx] on (V, 2)
    if subpixel:
        xy = _transform(xy, np.repeat(part_sample, vert_count), geometries)
    verts = upsample_vertices(xy)
    vert_ends = np.cumsum(vert_count)
    polys = np.stack([vert_ends - vert_count, vert_ends], axis=1)
    poly_ends = np.cumsum(part_count)
    poly_instances = np.stack(
        [poly_ends - part_count, poly_ends, row[is_poly], p_sample * per_sample_tables + (1 if subpixel else 0)], axis=1
    )

    # RLE and box instances: toggles
    r_inst = inst[is_rle]
    r_sample = sample[is_rle]
    r_box = is_box[is_rle]
    box = np.asarray(index.box_pixels)[r_inst[r_box]].astype(np.int64).reshape(-1, 4)
    box_cols = np.where((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]), box[:, 2] - box[:, 0], 0)
    tog_first = index.toggle_offsets[r_inst]
    tog_count = index.toggle_offsets[r_inst + 1] - tog_first
    tog_count[r_box] = 2 * box_cols
    toggles = np.empty(int(tog_count.sum()), np.int32)
    tog_ends = np.cumsum(tog_count)
    tog_starts = tog_ends - tog_count
    rle_only = ~r_box
    toggles[ranges(tog_starts[rle_only], tog_count[rle_only])] = np.asarray(index.toggles)[
        ranges(tog_first[rle_only], tog_count[rle_only])
    ]
    if len(box):
        h_box = np.asarray(index.heights, np.int64)[images[r_sample[r_box]]]
        col = ranges(box[:, 0], box_cols)
        base = col * np.repeat(h_box, box_cols)
        pairs = np.stack([base + np.repeat(box[:, 1], box_cols), base + np.repeat(box[:, 3], box_cols)], axis=1)
        toggles[ranges(tog_starts[r_box], 2 * box_cols)] = pairs.reshape(-1)
    rle_instances = np.stack([tog_starts, tog_ends, row[is_rle], r_sample * per_sample_tables], axis=1)

    desc = MaskDescriptors(
        height=height,
        width=width,
        num_instances=len(inst),
        tables=tables,
        verts=verts.reshape(-1, 2),
        polys=polys.astype(np.int32).reshape(-1, 2),
        poly_instances=poly_instances.astype(np.int32).reshape(-1, 4),
        toggles=toggles,
        rle_instances=rle_instances.astype(np.int32).reshape(-1, 4),
    )
    per_sample = {
        "tables": np.full(batch, per_sample_tables),
        "verts": np.bincount(part_sample, weights=vert_count, minlength=batch),
        "polys": np.bincount(p_sample, weights=part_count, minlength=batch),
        "poly_instances": np.bincount(p_sample, minlength=batch),
        "toggles": np.bincount(r_sample, weights=tog_count, minlength=batch),
        "rle_instances": np.bincount(r_sample, minlength=batch),
    }
    bounds = {name: offsets(per_sample[name].astype(np.int64)) for name in ARRAY_FIELDS}
    return desc, bounds


def _transform(xy: np.ndarray, sample: np.ndarray, g: GeometryBatch) -> np.ndarray:
    """:func:`~decal.kernels.mask_geometry.transform_points` of each vertex under its
    sample's geometry, vectorised (the same float64 operations, so the same bits)."""
    out = np.empty_like(xy)
    out[:, 0] = (xy[:, 0] - g.lo_x.astype(np.float64)[sample]) / g.scale_x.astype(np.float64)[sample] - g.anchor_x[
        sample
    ].astype(np.float64)
    out[:, 1] = (xy[:, 1] - g.lo_y.astype(np.float64)[sample]) / g.scale_y.astype(np.float64)[sample] - g.anchor_y[
        sample
    ].astype(np.float64)
    out[:, 0] = np.where(g.flip[sample], float(g.out_w) - out[:, 0], out[:, 0])
    return out
