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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..coco.index import CocoIndex
from ..coco.reader import CocoDataset
from ..copy_paste.gpu_masks import GpuMaskCopyPasteSource
from ..copy_paste.source import CopyPasteSource
from ..core.epoch_source import LoaderPosition, ProducedBatch
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
    def batches_in_epoch(self, epoch: int) -> int:
        length, per = len(self.epoch_order(epoch)), self.labelled_per_batch
        return length // per if self.drop_last else -(-length // per)

    def normalize(self, position: LoaderPosition) -> LoaderPosition:
        remaining = len(self.epoch_order(position.epoch)) - position.cursor
        if remaining <= 0 or (self.drop_last and remaining < self.labelled_per_batch):
            return LoaderPosition(position.epoch + 1, 0, 0)
        return position

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

    # -- the callable --------------------------------------------------------------------
    def __call__(self) -> tuple[list[Any], ...]:
        start = self.position
        labelled, cursor = self.gather(start, self.labelled_per_batch)
        wanted = self.batch_size_for(len(labelled)) - len(labelled)
        second = self._second_items(start, wanted)
        self.position = LoaderPosition(start.epoch, cursor, start.batch_index + 1)
        self.produced.append(ProducedBatch(start, tuple(p[0] for p in labelled)))
        self.produced_extra.append(tuple((self.second, p[0]) for p in second))
        return self.batch_columns(start, cursor, [(self.index, labelled), (self.second_index, second)])

    def _second_items(self, start: LoaderPosition, wanted: int) -> list[Any]:
        order = self.second_epoch_order(start.epoch)
        found: list[Any] = []
        j = start.batch_index * self.second_per_batch
        for _ in range(len(order)):
            if len(found) == wanted:
                break
            index = int(order[j % len(order)])
            j += 1
            if index in self.bad_extra_indices:
                continue
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
