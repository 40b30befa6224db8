"""The self-training source: a batch of a labelled and a second dataset (``split_counts``), the
second set read as a stream in its own shuffled order, and :class:`ImageDirectoryDataset` for a
second set of unlabelled images (see :mod:`decal.dali_pipes.self_training.loader`).

This module imports no torch: it is what a source worker (``source_workers`` > 0, DALI's
parallel external source) unpickles (``tests/test_source_worker_imports.py``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..coco.reader import CocoDataset, ImageRecord
from ..copy_paste.source import GEOMETRY_STREAM, CopyPasteSource
from ..core.epoch_source import LoaderPosition
from ..core.errors import DatasetError
from ..core.samplers import shard_indices
from ..core.scale_jitter import draw_geometry

__all__ = ["split_counts", "check_ratio", "ImageDirectoryDataset", "SelfTrainingSource", "SECOND_ORDER_STREAM", "IMAGE_SUFFIXES"]

#: Stream of the second set's epoch order (the labelled sampler uses ``[seed, epoch]``).
SECOND_ORDER_STREAM = 11
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_counts(total: int, ratio: float) -> tuple[int, int]:
    """``(labelled, second)`` images of a batch of ``total``: second = floor(ratio · total)."""
    second = int(math.floor(ratio * total + 1e-9))
    return total - second, second


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and 0.0 <= ratio < 1.0):
        raise ValueError(f"second-set ratio must be in [0, 1), got {ratio!r}")
    return float(ratio)


class ImageDirectoryDataset(CocoDataset):
    """Unlabelled images: every JPEG/PNG file under a directory (sorted by relative path),
    as a :class:`CocoDataset` without categories or annotations.

    Image ids are 1.. in file order; sizes come from the file headers (read once, at load).
    An unreadable file raises a :class:`DatasetError`, or is left out and counted in
    ``stats.skipped_images`` with ``on_error="skip"``.
    """

    def __init__(self, image_dir: str | Path, *, on_error: Literal["raise", "skip"] = "raise") -> None:
        super().__init__(image_dir, image_dir, on_error=on_error)

    def _load(self) -> None:
        root = self.image_dir
        if not root.is_dir():
            raise DatasetError(root, "not a directory of images")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        next_id = 1
        for path in files:
            try:
                with Image.open(path) as img:
                    width, height = img.size
                if self.max_image_pixels is not None and width * height > self.max_image_pixels:
                    raise DatasetError(
                        path, f"too many pixels: {width}x{height} = {width * height} > max_image_pixels "
                        f"{self.max_image_pixels}", field="width",
                    )
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError, DatasetError) as error:
                if isinstance(error, Image.DecompressionBombError):
                    error = DatasetError(path, f"too many pixels for Pillow to open: {error}", field="width")
                elif not isinstance(error, DatasetError):
                    error = DatasetError(path, f"not a readable image: {error}", field="file_name")
                if self.on_error == "raise":
                    raise error
                reason = "too_many_pixels" if error.field == "width" else "unreadable_file"
                self.stats.skipped_images[reason] = self.stats.skipped_images.get(reason, 0) + 1
                continue
            name = path.relative_to(root).as_posix()
            self.records.append(ImageRecord(next_id, name, path, int(width), int(height), ()))
            next_id += 1
        if not self.records:
            raise DatasetError(root, "no readable JPEG or PNG image found")


class _SecondOrder:
    """The second set's epoch order: a permutation from ``[seed, epoch, SECOND_ORDER_STREAM]``."""

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, SECOND_ORDER_STREAM])
        return rng.permutation(self.num_items).astype(np.int64)


class SelfTrainingSource(CopyPasteSource):
    """Batch-mode ``external_source`` callable over a labelled and a second dataset.

    Columns as :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource`; each batch of T
    samples holds ``split_counts(T, ratio)`` labelled, then second-set images.
    """

    def __init__(self, dataset: CocoDataset, sampler: Any, second: CocoDataset, *, ratio: float, **kwargs: Any) -> None:
        super().__init__(dataset, sampler, **kwargs)
        self.second = second
        self.ratio = check_ratio(ratio)
        self.labelled_per_batch, self.second_per_batch = split_counts(self.batch_size, self.ratio)
        if self.second_per_batch and len(second) == 0:
            raise ValueError("the second dataset is empty")
        self.second_order = _SecondOrder(len(second), self.seed)
        self._second_cache: tuple[int, np.ndarray] | None = None

    # -- epoch bookkeeping in labelled images --------------------------------------------
    @property
    def items_per_batch(self) -> int:
        """A full batch's labelled images: the epoch order is the labelled set's."""
        return self.labelled_per_batch

    def second_epoch_order(self, epoch: int) -> np.ndarray:
        if self._second_cache is None or self._second_cache[0] != epoch:
            order = shard_indices(self.second_order.epoch_indices(epoch), self.shard_id, self.num_shards)
            self._second_cache = (epoch, order)
        return self._second_cache[1]

    def batch_size_for(self, labelled: int) -> int:
        """The batch size T whose labelled share is ``labelled`` (the largest such T <= B)."""
        if labelled == self.labelled_per_batch:
            return self.batch_size
        return max(t for t in range(1, self.batch_size + 1) if split_counts(t, self.ratio)[0] == labelled)

    def read(self, dataset: CocoDataset, index: int) -> tuple[Any, ...]:
        return (*super().read(dataset, index), dataset)

    # -- the batch ---------------------------------------------------------------------
    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[tuple[list[Any], ...], list[tuple[Any, int]]]:
        """The labelled ``payloads`` followed by the second-set images of the batch at
        ``start`` (:meth:`_second_items`, a function of ``start``: the same in DALI's thread
        and in a worker), as copy-paste's columns; the second-set items for error recovery."""
        second = self._second_items(start, self.batch_size_for(len(payloads)) - len(payloads))
        return self._columns(start, cursor, payloads + second), [(self.second, p[0]) for p in second]

    def extra_items(self, start: LoaderPosition, count: int) -> tuple[tuple[Any, int], ...]:
        """The second-set images of the batch at ``start`` with ``count`` labelled ones, as
        :meth:`columns` reads them when all are readable (source workers need
        ``on_error="raise"``)."""
        wanted = self.batch_size_for(count) - count
        return tuple((self.second, index) for index in itertools.islice(self._second_candidates(start), wanted))

    def _second_candidates(self, start: LoaderPosition) -> Iterator[int]:
        """The second set's indices the batch at ``start`` tries, in order: its own epoch order
        from entry ``batch_index · second_per_batch`` on, wrapping around once, bad ones left out."""
        order = self.second_epoch_order(start.epoch)
        first = start.batch_index * self.second_per_batch
        for k in range(len(order)):
            index = int(order[(first + k) % len(order)])
            if index not in self.bad_extra_indices:
                yield index

    def _second_items(self, start: LoaderPosition, wanted: int) -> list[Any]:
        found: list[Any] = []
        for index in self._second_candidates(start):
            if len(found) == wanted:
                break
            payload = self.load(index, self.second)
            if payload is not None:
                found.append(payload)
        if len(found) < wanted:
            raise RuntimeError("SelfTrainingSource: not enough readable images in the second set")
        return found

    def _columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[list[Any], ...]:
        records = [p[3][p[0]] for p in payloads]
        geometry = draw_geometry(self.batch_rng(start, GEOMETRY_STREAM), len(payloads), self.jitter, self.flip_prob)
        return (
            [p[1] for p in payloads],
            [p[2] for p in payloads],
            [np.array([a.category_id for a in r.annotations], dtype=np.int64) for r in records],
            [np.array([a.iscrowd for a in r.annotations], dtype=np.uint8) for r in records],
            [np.array([r.image_id], dtype=np.int64) for r in records],
            *geometry.columns(),
            self.position_column(start, cursor, len(payloads)),
        )
