"""A source's batches made in worker processes: DALI's parallel ``external_source``.

An :class:`~decal.dali_pipes.core.epoch_source.EpochBatchSource` called in the pipeline's thread
produces batch after batch from its own running position. DALI's parallel external source
(``parallel=True, batch=True, batch_info=True`` with the pipeline's ``py_num_workers`` and
``py_start_method``) instead asks a pool of worker processes for batch ``iteration`` of epoch
``epoch_idx`` (a :class:`nvidia.dali.types.BatchInfo`), several at once, and hands them to the
pipeline in iteration order. :class:`BatchInfoSource` answers such a request from the request
alone, so a worker needs no state:

* epoch ``start.epoch + epoch_idx``; its first batch is ``start`` in the epoch the pipeline was
  built at, batch 0 / cursor 0 in the later ones;
* batch ``k`` of that run covers entries ``[cursor₀ + k·B, cursor₀ + (k+1)·B)`` of the shard's
  epoch order (B the source's ``items_per_batch``: its batch size, or a self-training batch's
  labelled images, the source's ``columns`` adding the second set's), and draws from ``(seed, epoch, shard_id, batch_index₀ + k)`` as the in-thread
  source does (:meth:`~decal.dali_pipes.core.epoch_source.EpochBatchSource.batch_rng`).

So the batches, their positions, resume and sharding are exactly those of the in-thread
source (``tests/test_parallel_source.py``). The one difference is bad input found while
reading an image: the in-thread source can skip it and read one more item, which shifts every
later batch; a stateless worker cannot, so :class:`BatchInfoSource` requires
``on_error="raise"`` (the reader's own ``on_error="skip"`` checks at load time are unaffected:
those images never enter the epoch order).

Start method: ``"fork"`` is fast and shares the parent's memory, but DALI refuses it once the
process holds a CUDA context; ``"spawn"`` pickles the source into fresh interpreters (a
memory-mapped :class:`~decal.dali_pipes.coco.index.CocoIndex` travels as its directory).
The loaders default to ``"spawn"``: a pipeline rebuilt in a process that already runs threads
(the copy-paste step's pool, an earlier pipeline's, gRPC's) forks workers that can inherit a
held lock and hang; the test suite saw that once with ``"fork"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .epoch_source import EpochBatchSource, LoaderPosition, ProducedBatch

__all__ = ["BatchInfoSource", "START_METHODS", "check_workers", "expect_worker_batches", "planned_batches"]

#: ``py_start_method`` values DALI accepts.
START_METHODS = ("fork", "spawn")


def check_workers(workers: int, start_method: str, on_error: str) -> None:
    """Validate the parallel-source options (``workers`` 0 means in-thread)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"source_workers must be an integer >= 0, got {workers!r}")
    if start_method not in START_METHODS:
        raise ValueError(f"source_start_method must be one of {START_METHODS}, got {start_method!r}")
    if workers and on_error != "raise":
        raise ValueError(
            "source_workers > 0 needs on_error='raise': a worker cannot replace an unreadable image "
            "without shifting every later batch (use source_workers=0 with on_error='skip')"
        )


class BatchInfoSource:
    """The stateless batch callable over ``source`` for a pipeline built at ``start``.

    Args:
        source: the in-thread source whose ``read`` / ``columns`` make the batch (it is pickled
            into the workers with ``"spawn"``, inherited with ``"fork"``).
        start: the position the pipeline starts at (the loader's resume point).

    Called with a ``BatchInfo`` (``iteration``, ``epoch_idx``), returns the batch's columns in
    ``source.column_names`` order, or raises ``StopIteration`` past the end of the epoch (for
    every later iteration too, as DALI's prefetching requires).
    """

    def __init__(self, source: EpochBatchSource, start: LoaderPosition) -> None:
        if source.on_error != "raise":
            check_workers(1, "fork", source.on_error)
        self.source = source
        self.start = start

    def batch_start(self, iteration: int, epoch_idx: int) -> LoaderPosition:
        """Where batch ``iteration`` of the pipeline's epoch ``epoch_idx`` starts."""
        first = self.start if epoch_idx == 0 else LoaderPosition(self.start.epoch + epoch_idx, 0, 0)
        size = self.source.items_per_batch
        return LoaderPosition(first.epoch, first.cursor + iteration * size, first.batch_index + iteration)

    def __call__(self, info: Any) -> tuple[list[Any], ...]:
        """The columns of the batch ``info`` asks for (see the class docstring)."""
        source = self.source
        start = self.batch_start(int(info.iteration), int(info.epoch_idx))
        order = source.epoch_order(start.epoch)
        remaining = len(order) - start.cursor
        per = source.items_per_batch
        if remaining <= 0 or (source.drop_last and remaining < per):
            raise StopIteration
        items = order[start.cursor : start.cursor + per].tolist()
        payloads = [source.read(source.dataset, index) for index in items]
        columns, _ = source.columns(start, start.cursor + len(items), payloads)
        # parallel external source ships arrays through shared memory: no NumPy scalars
        return tuple([np.asarray(sample) for sample in column] for column in columns)


def planned_batches(source: EpochBatchSource, start: LoaderPosition, count: int) -> list[ProducedBatch]:
    """The next ``count`` batches workers make from ``start`` (within its epoch), as the
    in-thread source records them in ``source.produced``: what error recovery decodes to find
    a corrupt file, since the workers' own records stay in their processes."""
    parallel = BatchInfoSource(source, source.normalize(start))
    order = source.epoch_order(parallel.start.epoch)
    out = []
    for k in range(count):
        batch = parallel.batch_start(k, 0)
        items = order[batch.cursor : batch.cursor + source.items_per_batch]
        if not len(items):
            break
        out.append(ProducedBatch(batch, tuple(int(i) for i in items)))
    return out


def expect_worker_batches(source: EpochBatchSource, position: LoaderPosition, prefetch_queue_depth: int, workers: int) -> None:
    """Before error recovery with ``workers`` > 0: restart ``source`` at the last delivered
    ``position`` and record as produced every batch the workers may have made since (the
    pipeline's queue, the parallel source's own queue of ``max(2, workers)``, one in flight),
    so that recovery decodes them (and the items their ``columns`` add) to find a corrupt file."""
    ahead = prefetch_queue_depth + max(2, workers) + 1
    source.restart(position)
    planned = planned_batches(source, position, ahead)
    source.produced.extend(planned)
    source.produced_extra.extend(source.extra_items(batch.start, len(batch.dataset_indices)) for batch in planned)
