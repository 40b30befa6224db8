"""The host side shared by the image-folder pipelines (CutMix, CP²): epoch order, batches,
skipping bad files, and the torchvision ``RandomResizedCrop`` window draw.

Determinism follows the copy-paste source: the epoch order is a function of (seed, epoch),
sharded after sampling; batch ``k`` of an epoch draws its randomness from
``np.random.default_rng([seed, epoch, shard_id, k, stream])``, one ``stream`` per kind of
draw (see the subclasses). So a run is a function of its seed, and a run resumed from a
:class:`~decal.dali_pipes.copy_paste_source.LoaderPosition` continues exactly as it would
have. The draws depend on the image sizes (read from each file's header on the host), never
on anything DALI computes.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, Sequence

import numpy as np

from .copy_paste_source import LoaderPosition, ProducedBatch
from .errors import DatasetError
from .image_folder import ImageFolder, skip_reason
from .samplers import UniformSampler, shard_indices

__all__ = ["FolderBatchSource", "random_resized_crop_params", "Payload", "POSITION_FIELDS"]

#: seed, epoch, shard_id, batch_index, cursor (as in the copy-paste source).
POSITION_FIELDS = 5

#: (dataset index, encoded bytes, (height, width)).
Payload = tuple[int, np.ndarray, tuple[int, int]]


def random_resized_crop_params(
    rng: np.random.Generator,
    heights: Sequence[int] | np.ndarray,
    widths: Sequence[int] | np.ndarray,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    attempts: int = 10,
) -> np.ndarray:
    """Crop windows of torchvision's ``RandomResizedCrop.get_params``, for a batch at once.

    Per image of size H×W: up to ``attempts`` tries of area fraction ~ U(scale) and aspect
    ratio w/h ~ exp(U(log ratio)), ``w = round(sqrt(area·aspect))``,
    ``h = round(sqrt(area/aspect))`` (round half to even, as Python's ``round``); the first
    try with ``0 < w <= W`` and ``0 < h <= H`` wins, placed uniformly
    (``y ~ U{0..H-h}``, ``x ~ U{0..W-w}``). If none fits, the fallback is torchvision's
    central crop clamped to the ratio range. All tries are drawn up front (vectorised), so
    the sequence of draws differs from torchvision's, the distribution does not.

    Returns:
        (B, 4) int64 ``[x, y, w, h]`` in pixels.
    """
    h_img = np.asarray(heights, dtype=np.int64)
    w_img = np.asarray(widths, dtype=np.int64)
    n = len(h_img)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    area = (h_img * w_img).astype(np.float64)[:, None]
    target_area = area * rng.uniform(scale[0], scale[1], size=(n, attempts))
    log_ratio = np.log(np.asarray(ratio, dtype=np.float64))
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, attempts)))
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= w_img[:, None]) & (h > 0) & (h <= h_img[:, None])
    first = np.argmax(fits, axis=1)
    found = fits[np.arange(n), first]
    cw = np.where(found, w[np.arange(n), first], 0)
    ch = np.where(found, h[np.arange(n), first], 0)
    # fallback: central crop (torchvision): the whole image, clamped to the ratio range
    in_ratio = w_img / h_img
    lo, hi = min(ratio), max(ratio)
    fw = np.where(in_ratio < lo, w_img, np.where(in_ratio > hi, np.rint(h_img * hi).astype(np.int64), w_img))
    fh = np.where(in_ratio < lo, np.rint(w_img / lo).astype(np.int64), h_img)
    cw = np.where(found, cw, np.clip(fw, 1, w_img))
    ch = np.where(found, ch, np.clip(fh, 1, h_img))
    y = rng.integers(0, h_img - ch + 1)
    x = rng.integers(0, w_img - cw + 1)
    y = np.where(found, y, (h_img - ch) // 2)
    x = np.where(found, x, (w_img - cw) // 2)
    return np.stack([x, y, cw, ch], axis=1).astype(np.int64)


class FolderBatchSource:
    """Batch-mode ``fn.external_source`` callable over an :class:`ImageFolder` (base class).

    Each call gathers the next ``batch_size`` readable images of this shard's epoch order
    (skipping bad files with ``on_error="skip"``) and returns :meth:`columns`; at the end of
    an epoch it raises ``StopIteration`` (DALI's convention) and the next call starts the
    next epoch. Subclasses set :attr:`column_names` and implement :meth:`columns`.
    """

    column_names: tuple[str, ...] = ()

    def __init__(
        self,
        dataset: ImageFolder,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
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
        self.dataset = dataset
        self.sampler = UniformSampler(len(dataset), seed=seed, shuffle=shuffle)
        self.batch_size = batch_size
        self.seed = seed
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.drop_last = drop_last
        self.on_error = on_error
        self.skipped: dict[str, int] = {}
        self.bad_indices: set[int] = set()
        #: bad images of a second dataset (CP² backgrounds from another folder)
        self.bad_extra_indices: set[int] = set()
        self.produced: deque[ProducedBatch] = deque(maxlen=16)
        self.produced_extra: deque[tuple[tuple[ImageFolder, int], ...]] = deque(maxlen=16)
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

    def restart(self, position: LoaderPosition) -> None:
        """Produce from ``position`` next (after a resume or a pipeline rebuild)."""
        self.position = position
        self.produced.clear()
        self.produced_extra.clear()

    def suspects(self) -> list[tuple[ImageFolder, int]]:
        """Every (dataset, index) of the batches produced since the last restart."""
        found = [(self.dataset, i) for produced in self.produced for i in produced.dataset_indices]
        found += [pair for extra in self.produced_extra for pair in extra]
        unique: dict[tuple[int, int], tuple[ImageFolder, int]] = {}
        for dataset, index in found:
            unique.setdefault((id(dataset), index), (dataset, index))
        return list(unique.values())

    def mark_bad(self, dataset: ImageFolder, index: int, reason: str) -> None:
        """Never read image ``index`` of ``dataset`` again; count it under ``reason``."""
        (self.bad_indices if dataset is self.dataset else self.bad_extra_indices).add(index)
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    # -- helpers for subclasses --------------------------------------------------------
    def batch_rng(self, start: LoaderPosition, stream: int) -> np.random.Generator:
        """The generator of draw ``stream`` for the batch that starts at ``start``."""
        return np.random.default_rng([self.seed, start.epoch, self.shard_id, start.batch_index, stream])

    def position_column(self, start: LoaderPosition, cursor: int, count: int) -> list[np.ndarray]:
        row = np.array([self.seed, start.epoch, self.shard_id, start.batch_index, cursor], dtype=np.int64)
        return [row.copy() for _ in range(count)]

    def load(self, index: int, dataset: ImageFolder | None = None) -> Payload | None:
        """(index, bytes, (h, w)) of one image of ``dataset`` (default: the source's), or
        None when it is bad and skipped (counted in :attr:`skipped`)."""
        data = self.dataset if dataset is None else dataset
        try:
            encoded, size = data.read_image(index)
        except DatasetError as error:
            if self.on_error == "raise":
                raise
            self.mark_bad(data, index, skip_reason(error))
            return None
        return index, encoded, size

    # -- the callable ------------------------------------------------------------------
    def __call__(self) -> tuple[list[np.ndarray], ...]:
        start = self.position
        order = self.epoch_order(start.epoch)
        cursor = start.cursor
        payloads: list[Payload] = []
        while len(payloads) < self.batch_size and cursor < len(order):
            index = int(order[cursor])
            cursor += 1
            if index in self.bad_indices:
                continue
            payload = self.load(index)
            if payload is not None:
                payloads.append(payload)
        if not payloads or (self.drop_last and len(payloads) < self.batch_size):
            self.position = LoaderPosition(start.epoch + 1, 0, 0)
            raise StopIteration
        self.position = LoaderPosition(start.epoch, cursor, start.batch_index + 1)
        columns, extra = self.columns(start, cursor, payloads)
        self.produced.append(ProducedBatch(start, tuple(p[0] for p in payloads)))
        self.produced_extra.append(tuple(extra))
        return columns

    def columns(
        self, start: LoaderPosition, cursor: int, payloads: list[Payload]
    ) -> tuple[tuple[list[Any], ...], Sequence[tuple[ImageFolder, int]]]:
        """The batch's columns (in :attr:`column_names` order) and the (dataset, index) of any
        further images the batch holds (backgrounds), for error recovery."""
        raise NotImplementedError
