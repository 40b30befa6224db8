"""What every decal ``external_source`` callable shares: the epoch order of one shard, the
resume position, bad-input bookkeeping, and the gathering of a batch.

Each call of a source gathers the next ``batch_size`` readable items of this shard's epoch
order (skipping bad ones with ``on_error="skip"``) and returns the subclass's columns; at the
end of an epoch it raises ``StopIteration`` (DALI's convention) and the next call starts the
next epoch.

Determinism: the epoch order is the sampler's order for (seed, epoch), sharded after
sampling; batch ``k`` of an epoch draws its randomness from
``np.random.default_rng([seed, epoch, shard_id, k, stream])`` (:meth:`batch_rng`), one
``stream`` per kind of draw. So a run is a function of its seed, and a run resumed from a
:class:`LoaderPosition` continues exactly as it would have. Every batch carries a
``position`` column (:data:`POSITION_FIELDS` int64 per sample) that tells the iterator where
the loader stands after it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple, Protocol, Sequence

import numpy as np

from .errors import DatasetError, skip_reason
from .samplers import shard_indices

class PositionRow(NamedTuple):
    """The per-sample ``position`` column of a batch, by name (int64 on the wire and in DALI).

    Attributes:
        seed, epoch, shard_id, batch_index: what the batch's draws come from
            (:meth:`EpochBatchSource.batch_rng`).
        cursor: epoch-order entries consumed by the end of this batch.
    """

    seed: int
    epoch: int
    shard_id: int
    batch_index: int
    cursor: int

    @classmethod
    def from_array(cls, row: Any) -> "PositionRow":
        """Read a (POSITION_FIELDS,) int64 array (NumPy, or anything ``np.asarray`` takes)."""
        values = np.asarray(row).reshape(-1)
        if values.shape[0] != len(cls._fields):
            raise ValueError(f"a position column has {len(cls._fields)} values {cls._fields}, got {values.shape[0]}")
        return cls(*(int(v) for v in values))

    def array(self) -> np.ndarray:
        """(POSITION_FIELDS,) int64."""
        return np.array(self, dtype=np.int64)

    def after(self) -> "LoaderPosition":
        """Where the loader stands after this batch."""
        return LoaderPosition(self.epoch, self.cursor, self.batch_index + 1)


#: Length of the per-sample ``position`` column (the fields of :class:`PositionRow`).
POSITION_FIELDS = len(PositionRow._fields)


class EpochSampler(Protocol):
    """What a source needs of a sampler: a deterministic order of dataset indices."""

    def epoch_indices(self, epoch: int) -> np.ndarray: ...


class Dataset(Protocol):
    """What error recovery needs of a dataset: a full decode check and item paths."""

    def __getitem__(self, index: int) -> Any: ...

    def decode_check(self, index: int) -> DatasetError | None: ...


@dataclass(frozen=True)
class LoaderPosition:
    """Where a shard stands: the next batch is batch ``batch_index`` of ``epoch``, starting
    at entry ``cursor`` of this shard's epoch order."""

    epoch: int = 0
    cursor: int = 0
    batch_index: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> "LoaderPosition":
        try:
            position = cls(int(state["epoch"]), int(state["cursor"]), int(state["batch_index"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"loader state: expected integer fields epoch, cursor, batch_index; got {state!r}"
            ) from error
        if min(position.epoch, position.cursor, position.batch_index) < 0:
            raise ValueError(f"loader state: fields must be >= 0, got {state!r}")
        return position


@dataclass(frozen=True)
class ProducedBatch:
    """A batch handed to DALI: where it started and which dataset items it holds."""

    start: LoaderPosition
    dataset_indices: tuple[int, ...]


class EpochBatchSource:
    """Base of the batch-mode ``fn.external_source`` callables.

    Subclasses set :attr:`column_names` and implement :meth:`read` (one item's payload; the
    first element of a payload is always the dataset index) and :meth:`columns`. A batch takes
    :attr:`items_per_batch` items of the epoch order; :meth:`columns` may add items of its
    own (a second dataset's), which is how a batch stays a function of its start position for
    the parallel source's workers (:mod:`~decal.dali_pipes.core.parallel_source`).
    """

    column_names: tuple[str, ...] = ()

    def __init__(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        *,
        batch_size: int,
        seed: int,
        shard_id: int = 0,
        num_shards: int = 1,
        drop_last: bool = False,
        on_error: Literal["raise", "skip"] = "raise",
        position: LoaderPosition | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        shard_indices(np.arange(1), shard_id, num_shards)  # validates the shard arguments
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.drop_last = drop_last
        self.on_error = on_error
        self.skipped: dict[str, int] = {}
        self.bad_indices: set[int] = set()
        #: bad items of a second dataset (e.g. CP² backgrounds from another folder)
        self.bad_extra_indices: set[int] = set()
        self.produced: deque[ProducedBatch] = deque(maxlen=16)
        self.produced_extra: deque[tuple[tuple[Dataset, int], ...]] = deque(maxlen=16)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self.position = position or LoaderPosition()

    @property
    def items_per_batch(self) -> int:
        """Items of the epoch order a full batch takes (``batch_size`` unless :meth:`columns`
        adds items of another dataset)."""
        return self.batch_size

    # -- epoch order -------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """This shard's dataset indices for ``epoch``, (L,) int64."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = shard_indices(self.sampler.epoch_indices(epoch), self.shard_id, self.num_shards)
            self._order_cache = (epoch, np.asarray(order, dtype=np.int64))
        return self._order_cache[1]

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches in ``epoch`` for this shard (before any skipped item)."""
        length, per = len(self.epoch_order(epoch)), self.items_per_batch
        return length // per if self.drop_last else -(-length // per)

    def normalize(self, position: LoaderPosition) -> LoaderPosition:
        """The same place, written as the next epoch's start when ``position`` is at (or,
        with ``drop_last``, too near) the end of its epoch for another batch."""
        remaining = len(self.epoch_order(position.epoch)) - position.cursor
        if remaining <= 0 or (self.drop_last and remaining < self.items_per_batch):
            return LoaderPosition(position.epoch + 1, 0, 0)
        return position

    def restart(self, position: LoaderPosition) -> None:
        """Produce from ``position`` next (after a resume or a pipeline rebuild)."""
        self.position = position
        self.produced.clear()
        self.produced_extra.clear()

    # -- bad input ---------------------------------------------------------------------
    def suspects(self) -> list[tuple[Dataset, int]]:
        """Every (dataset, index) of the batches produced since the last restart."""
        found = [(self.dataset, i) for produced in self.produced for i in produced.dataset_indices]
        found += [pair for extra in self.produced_extra for pair in extra]
        unique: dict[tuple[int, int], tuple[Dataset, int]] = {}
        for dataset, index in found:
            unique.setdefault((id(dataset), index), (dataset, index))
        return list(unique.values())

    def mark_bad(self, dataset: Dataset, index: int, reason: str) -> None:
        """Never read item ``index`` of ``dataset`` again; count it under ``reason``."""
        (self.bad_indices if dataset is self.dataset else self.bad_extra_indices).add(index)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def load(self, index: int, dataset: Dataset | None = None) -> Any | None:
        """:meth:`read` of one item, or None when it is bad and skipped (and counted)."""
        data = self.dataset if dataset is None else dataset
        try:
            return self.read(data, index)
        except DatasetError as error:
            if self.on_error == "raise":
                raise
            self.mark_bad(data, index, skip_reason(error))
            return None

    # -- helpers for subclasses --------------------------------------------------------
    def batch_rng(self, start: LoaderPosition, stream: int) -> np.random.Generator:
        """The generator of draw ``stream`` for the batch that starts at ``start``."""
        return np.random.default_rng([self.seed, start.epoch, self.shard_id, start.batch_index, stream])

    def position_column(self, start: LoaderPosition, cursor: int, count: int) -> np.ndarray:
        """The batch's ``position`` column: (count, POSITION_FIELDS) int64, the same row per
        sample, as one dense array (one copy into DALI, not one per sample)."""
        row = PositionRow(self.seed, start.epoch, self.shard_id, start.batch_index, cursor).array()
        return np.repeat(row[None], count, axis=0)

    # -- the callable ------------------------------------------------------------------
    def gather(self, start: LoaderPosition, wanted: int) -> tuple[list[Any], int]:
        """Up to ``wanted`` readable payloads of this shard's epoch order from ``start``, and
        the cursor after them. Raises ``StopIteration`` (and moves to the next epoch) when the
        epoch has none left, or too few for a full batch with ``drop_last``."""
        order = self.epoch_order(start.epoch)
        cursor = start.cursor
        payloads: list[Any] = []
        while len(payloads) < wanted and cursor < len(order):
            index = int(order[cursor])
            cursor += 1
            if index in self.bad_indices:
                continue
            payload = self.load(index)
            if payload is not None:
                payloads.append(payload)
        if not payloads or (self.drop_last and len(payloads) < wanted):
            self.position = LoaderPosition(start.epoch + 1, 0, 0)
            raise StopIteration
        return payloads, cursor

    def __call__(self) -> tuple[list[Any], ...]:
        start = self.position
        payloads, cursor = self.gather(start, self.items_per_batch)
        self.position = LoaderPosition(start.epoch, cursor, start.batch_index + 1)
        columns, extra = self.columns(start, cursor, payloads)
        self.produced.append(ProducedBatch(start, tuple(p[0] for p in payloads)))
        self.produced_extra.append(tuple(extra))
        return columns

    # -- for subclasses ----------------------------------------------------------------
    def extra_items(self, start: LoaderPosition, count: int) -> tuple[tuple[Dataset, int], ...]:
        """The (dataset, index) of the items :meth:`columns` adds to the batch at ``start``
        holding ``count`` items of the epoch order, known without reading them: what error
        recovery checks of the batches source workers made. None here."""
        return ()

    def read(self, dataset: Any, index: int) -> Any:
        """One item's payload, a tuple whose first element is ``index``; raises
        :class:`DatasetError` for bad input."""
        raise NotImplementedError

    def columns(
        self, start: LoaderPosition, cursor: int, payloads: list[Any]
    ) -> tuple[tuple[list[Any], ...], Sequence[tuple[Dataset, int]]]:
        """The batch's columns (in :attr:`column_names` order) and the (dataset, index) of any
        further items the batch holds (e.g. backgrounds), for error recovery. ``payloads`` are
        the items of the epoch order from ``start`` (``cursor`` is the one after them); further
        items must be a function of ``start`` too."""
        raise NotImplementedError
