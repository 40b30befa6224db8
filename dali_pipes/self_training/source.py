"""Self-training Copy-Paste's source: each batch mixes labelled images (in the labelled
sampler's epoch order) with images of the second set (read as a stream, see
``dali_pipes/self_training/loader.py``), ``split_counts(T, ratio)`` of a batch of T.

The two-set bookkeeping (:class:`TwoSetBatches`) sits on either copy-paste source, so the
columns are those sources' own, made by their shared ``batch_columns`` from one group of
payloads per set (each with its set's compiled index):

* :class:`SelfTrainingSource` on :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource`:
  masks rasterised on the host, H×W×(N+1) per image; instances that cannot show in their
  output window are dropped before DALI resizes them (the step drops empty instances and its
  paste draws choose among non-empty ones only, so the batch is the same bit for bit,
  ``dali_pipes/copy_paste/window_prune.py``);
* :class:`GpuMaskSelfTrainingSource` on
  :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource`: mask descriptors
  of both sets joined into one batch (:func:`~decal.dali_pipes.copy_paste.gpu_masks.join_descriptors`),
  rasterised by the step.

A batch takes ``labelled_per_batch`` items of the labelled epoch order (the source's
``items_per_batch``) and its ``columns`` add the second set's, a function of the batch's
start alone; so the parallel source's workers (``source_workers`` > 0,
``dali_pipes/core/parallel_source.py``) make the in-thread batches. This module and what it
imports stay free of torch: a spawned worker unpickles the source
(``tests/test_source_worker_imports.py``).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import numpy as np

from ..coco.index import CocoIndex
from ..coco.reader import CocoDataset
from ..copy_paste.gpu_masks import GpuMaskCopyPasteSource
from ..copy_paste.source import CopyPasteSource
from ..core.epoch_source import LoaderPosition
from ..core.samplers import shard_indices
from .second_set import SecondOrder
from .twin import check_ratio, split_counts

__all__ = ["GpuMaskSelfTrainingSource", "SelfTrainingSource", "TwoSetBatches"]


class TwoSetBatches:
    """The two-set part of a self-training source, mixed into a copy-paste source class
    (first in the bases): epochs counted in labelled images, each batch's labelled payloads
    then its second-set ones, the columns from the copy-paste source's ``batch_columns``.

    ``second`` is the second set (a :class:`~decal.dali_pipes.coco.reader.CocoDataset`, e.g.
    an :class:`~decal.dali_pipes.self_training.second_set.ImageDirectoryDataset`), ``ratio``
    its share of a batch; the other arguments are the copy-paste source's.
    """

    def __init__(self, dataset: CocoDataset, sampler: Any, *, second: CocoDataset, ratio: float, **kwargs: Any) -> None:
        super().__init__(dataset, sampler, **kwargs)  # type: ignore[call-arg]
        self.second = second
        #: the second set's compiled index (an image directory's is compiled here, once)
        self.second_index = CocoIndex.from_dataset(second)
        self.ratio = check_ratio(ratio)
        self.labelled_per_batch, self.second_per_batch = split_counts(self.batch_size, self.ratio)
        if self.second_per_batch and len(second) == 0:
            raise ValueError("the second dataset is empty")
        self.second_order = SecondOrder(len(second), self.seed)
        self._second_cache: tuple[int, np.ndarray] | None = None

    # -- epoch bookkeeping in labelled images --------------------------------------------
    @property
    def items_per_batch(self) -> int:
        """A full batch's labelled images: the epoch order is the labelled set's."""
        return self.labelled_per_batch

    def second_epoch_order(self, epoch: int) -> np.ndarray:
        """This shard's part of the second set's order for ``epoch``, (L,) int64."""
        if self._second_cache is None or self._second_cache[0] != epoch:
            order = shard_indices(self.second_order.epoch_indices(epoch), self.shard_id, self.num_shards)
            self._second_cache = (epoch, order)
        return self._second_cache[1]

    def batch_size_for(self, labelled: int) -> int:
        """The batch size T whose labelled share is ``labelled`` (the largest such T <= B)."""
        if labelled == self.labelled_per_batch:
            return self.batch_size
        return max(t for t in range(1, self.batch_size + 1) if split_counts(t, self.ratio)[0] == labelled)

    # -- the batch -----------------------------------------------------------------------
    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[tuple[list[Any], ...], list[tuple[CocoDataset, int]]]:
        """The labelled ``payloads`` then the second-set images of the batch at ``start``
        (:meth:`_second_items`, a function of ``start``: the same in DALI's thread and in a
        worker), as the copy-paste source's ``batch_columns``; and the second-set items, for
        error recovery."""
        second = self._second_items(start, self.batch_size_for(len(payloads)) - len(payloads))
        columns = self.batch_columns(start, cursor, [(self.index, payloads), (self.second_index, second)])
        return columns, [(self.second, p[0]) for p in second]

    def extra_items(self, start: LoaderPosition, count: int) -> tuple[tuple[CocoDataset, int], ...]:
        """The second-set images of the batch at ``start`` with ``count`` labelled ones, as
        :meth:`columns` reads them when all are readable (source workers need
        ``on_error="raise"``)."""
        wanted = self.batch_size_for(count) - count
        return tuple((self.second, index) for index in itertools.islice(self._second_candidates(start), wanted))

    def _second_candidates(self, start: LoaderPosition) -> Iterator[int]:
        """The second set's indices the batch at ``start`` tries, in order: this epoch's
        second-set order from entry ``batch_index · second_per_batch`` on, wrapping around
        once, known-bad ones left out."""
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
            raise RuntimeError(f"{type(self).__name__}: not enough readable images in the second set")
        return found


class SelfTrainingSource(TwoSetBatches, CopyPasteSource):
    """Batch-mode ``external_source`` callable over a labelled and a second dataset, host
    masks: columns as :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource`'s; each
    batch of T samples holds ``split_counts(T, ratio)`` labelled, then second-set images."""


class GpuMaskSelfTrainingSource(TwoSetBatches, GpuMaskCopyPasteSource):
    """Batch-mode ``external_source`` callable over a labelled and a second dataset, mask
    descriptors: columns as :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource`'s
    (offsets batch-global over both sets); each batch of T samples holds
    ``split_counts(T, ratio)`` labelled, then second-set images."""
