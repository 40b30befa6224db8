"""The host side of the copy-paste pipeline: a batch-mode callable for ``fn.external_source``.

Each call returns one batch of columns (encoded image bytes, per-instance masks at the
original size, labels, crowd flags, image ids, the batch's geometry and its position) and
raises ``StopIteration`` at the end of an epoch, DALI's convention; the call after that
starts the next epoch.

Determinism: the epoch order comes from the sampler under (seed, epoch), then this shard's
part of it; the geometry of batch k comes from ``default_rng([seed, epoch, shard_id, k])``
and the copy-paste draws from ``[seed, epoch, shard_id, k, 1]``. So a run is fixed by its
seed, and a run resumed from a :class:`LoaderPosition` continues exactly as it would have.

Masks: polygons and RLE are rasterised here at the original image size with pycocotools, and
travel to DALI as one H×W×(N+1) uint8 tensor whose last channel is an always-empty dummy:
DALI's resize crashes on a tensor with zero channels (an image with no instances), see
DESIGN.md "Known pitfalls"; the dummy channel is removed in the copy-paste step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import numpy as np

from .coco_reader import CocoDataset
from .errors import DatasetError
from .samplers import shard_indices
from .scale_jitter import ScaleJitter, draw_geometry

#: Number of int64 fields of the per-sample ``position`` column: seed, epoch, shard_id,
#: batch_index, cursor (epoch-order entries consumed by the end of this batch).
POSITION_FIELDS = 5


class EpochSampler(Protocol):
    """What the source needs of a sampler: a deterministic order of dataset indices."""

    def epoch_indices(self, epoch: int) -> np.ndarray: ...


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


class CopyPasteSource:
    """Batch-mode ``external_source`` callable over a COCO/LVIS dataset.

    Columns of each call, B = the batch size (the last batch of an epoch may be smaller
    unless ``drop_last``):

    ========== =========================================== =========
    column     per-sample shape                             dtype
    ========== =========================================== =========
    encoded    (bytes,)                                     uint8
    masks      (H, W, N + 1), last channel a dummy          uint8
    labels     (N,) category ids                            int64
    iscrowd    (N,)                                         uint8
    image_id   (1,)                                         int64
    scale      () longer side / output size                 float32
    crop_x     () window anchor fraction                    float32
    crop_y     ()                                           float32
    flip       () 1 = flip horizontally                     int32
    position   (POSITION_FIELDS,) see module docstring      int64
    ========== =========================================== =========
    """

    column_names = (
        "encoded", "masks", "labels", "iscrowd", "image_id",
        "scale", "crop_x", "crop_y", "flip", "position",
    )  # fmt: skip

    def __init__(
        self,
        dataset: CocoDataset,
        sampler: EpochSampler,
        *,
        batch_size: int,
        seed: int,
        jitter: ScaleJitter,
        flip_prob: float = 0.5,
        shard_id: int = 0,
        num_shards: int = 1,
        drop_last: bool = False,
        on_error: Literal["raise", "skip"] = "raise",
        paste_by_box: bool = False,
        position: LoaderPosition | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.jitter = jitter
        self.flip_prob = flip_prob
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.drop_last = drop_last
        self.on_error = on_error
        self.paste_by_box = paste_by_box
        self.skipped: dict[str, int] = {}
        self.bad_indices: set[int] = set()
        self.produced: deque[ProducedBatch] = deque(maxlen=16)
        self._order_cache: tuple[int, np.ndarray] | None = None
        self.position = position or LoaderPosition()
        shard_indices(np.arange(1), shard_id, num_shards)  # validates the shard arguments

    # -- epoch order -------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """This shard's dataset indices for ``epoch``, (L,) int64."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = shard_indices(self.sampler.epoch_indices(epoch), self.shard_id, self.num_shards)
            self._order_cache = (epoch, np.asarray(order, dtype=np.int64))
        return self._order_cache[1]

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches in ``epoch`` for this shard (before any skipped image)."""
        length = len(self.epoch_order(epoch))
        return length // self.batch_size if self.drop_last else -(-length // self.batch_size)

    def normalize(self, position: LoaderPosition) -> LoaderPosition:
        """The same place, written as the next epoch's start when ``position`` is at (or,
        with ``drop_last``, too near) the end of its epoch for another batch."""
        remaining = len(self.epoch_order(position.epoch)) - position.cursor
        if remaining <= 0 or (self.drop_last and remaining < self.batch_size):
            return LoaderPosition(position.epoch + 1, 0, 0)
        return position

    # -- the callable ------------------------------------------------------------------
    def __call__(self) -> tuple[list[np.ndarray], ...]:
        start = self.position
        order = self.epoch_order(start.epoch)
        cursor = start.cursor
        chosen: list[int] = []
        payloads: list[tuple[np.ndarray, np.ndarray]] = []
        while len(chosen) < self.batch_size and cursor < len(order):
            index = int(order[cursor])
            cursor += 1
            if index in self.bad_indices:
                continue
            payload = self._load(index)
            if payload is not None:
                chosen.append(index)
                payloads.append(payload)
        if not chosen or (self.drop_last and len(chosen) < self.batch_size):
            self.position = LoaderPosition(start.epoch + 1, 0, 0)
            raise StopIteration
        self.position = LoaderPosition(start.epoch, cursor, start.batch_index + 1)
        self.produced.append(ProducedBatch(start, tuple(chosen)))
        return self._columns(start, cursor, chosen, payloads)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(encoded bytes, masks H×W×(N+1)) of one item, or None if skipped."""
        try:
            encoded = self.dataset.read_image_bytes(index)
        except DatasetError as error:
            if self.on_error == "raise":
                raise
            self.bad_indices.add(index)
            reason = f"unreadable image ({error.field})"
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return None
        record = self.dataset[index]
        masks = self.dataset.rasterize_masks(record, paste_by_box=self.paste_by_box)
        with_dummy = np.zeros(masks.shape[:2] + (masks.shape[2] + 1,), dtype=np.uint8)
        with_dummy[..., : masks.shape[2]] = masks
        return encoded, with_dummy

    def _columns(
        self, start: LoaderPosition, cursor: int, chosen: list[int], payloads: list[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[list[np.ndarray], ...]:
        records = [self.dataset[i] for i in chosen]
        geometry = draw_geometry(
            np.random.default_rng([self.seed, start.epoch, self.shard_id, start.batch_index]),
            len(chosen),
            self.jitter,
            self.flip_prob,
        )
        position = np.array([self.seed, start.epoch, self.shard_id, start.batch_index, cursor], dtype=np.int64)
        return (
            [p[0] for p in payloads],
            [p[1] for p in payloads],
            [np.array([a.category_id for a in r.annotations], dtype=np.int64) for r in records],
            [np.array([a.iscrowd for a in r.annotations], dtype=np.uint8) for r in records],
            [np.array([r.image_id], dtype=np.int64) for r in records],
            list(geometry.scale),
            list(geometry.crop_x),
            list(geometry.crop_y),
            list(geometry.flip),
            [position.copy() for _ in chosen],
        )

    def restart(self, position: LoaderPosition) -> None:
        """Produce from ``position`` next (after a resume or a pipeline rebuild)."""
        self.position = position
        self.produced.clear()


def copy_paste_rng(position: np.ndarray) -> np.random.Generator:
    """The copy-paste generator of the batch whose ``position`` column is given."""
    seed, epoch, shard_id, batch_index = (int(v) for v in position[:4])
    return np.random.default_rng([seed, epoch, shard_id, batch_index, 1])
