"""The host side of the copy-paste pipeline: a batch-mode callable for ``fn.external_source``.

Each call returns one batch of columns (encoded image bytes, per-instance masks at the
original size, labels, crowd flags, image ids, the batch's geometry and its position) and
raises ``StopIteration`` at the end of an epoch, DALI's convention; the call after that
starts the next epoch.

Determinism: the epoch order comes from the sampler under (seed, epoch), then this shard's
part of it; the geometry of batch k comes from ``default_rng([seed, epoch, shard_id, k, 0])``
and the copy-paste draws from ``[seed, epoch, shard_id, k, 1]``. So a run is fixed by its
seed, and a run resumed from a :class:`LoaderPosition` continues exactly as it would have.

Masks: polygons and RLE are rasterised here at the original image size with pycocotools, and
travel to DALI as one H×W×(N+1) uint8 tensor whose last channel is an always-empty dummy:
DALI's resize crashes on a tensor with zero channels (an image with no instances), see
ARCHITECTURE.md "DALI pitfalls the code works around"; the dummy channel is removed in the copy-paste step.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..coco.reader import CocoDataset
from ..coco.index import CocoIndex, instance_columns
from ..core.epoch_source import POSITION_FIELDS, EpochBatchSource, EpochSampler, LoaderPosition, PositionRow
from ..core.scale_jitter import ScaleJitter, draw_geometry
from .window_prune import instances_in_window

__all__ = ["CopyPasteSource", "LoaderPosition", "POSITION_FIELDS", "SourceGroup", "copy_paste_rng", "group_instance_columns"]

#: The images of a batch read from one dataset: its compiled index and their payloads (each a
#: tuple whose first element is the image's position in that index).
SourceGroup = tuple[CocoIndex, list[Any]]

#: Draw streams of a batch (see :meth:`EpochBatchSource.batch_rng`).
GEOMETRY_STREAM = 0
COPY_PASTE_STREAM = 1


class CopyPasteSource(EpochBatchSource):
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
        jitter: ScaleJitter,
        flip_prob: float = 0.5,
        paste_by_box: bool = False,
        **run: Any,
    ) -> None:
        """``run``: the options of :class:`EpochBatchSource` (``batch_size``, ``seed``,
        ``shard_id``, ``num_shards``, ``drop_last``, ``on_error``, ``position``)."""
        super().__init__(dataset, sampler, **run)
        #: the compiled index of ``dataset`` (its instances' labels, crowd flags, image ids)
        self.index: CocoIndex = CocoIndex.from_dataset(dataset)
        self.jitter = jitter
        self.flip_prob = flip_prob
        self.paste_by_box = paste_by_box
        #: the output size S to drop instances that cannot show in their S×S output window
        #: (:mod:`~decal.dali_pipes.copy_paste.window_prune`), or None to keep every instance; set by
        #: loaders whose step drops empty instances anyway (the default Copy-Paste step), so
        #: that the output is unchanged
        self.prune_window_size: int | None = None

    def read(self, dataset: CocoDataset, index: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(index, encoded bytes, masks H×W×(N+1)) of one image; DatasetError if unreadable."""
        encoded = dataset.read_image_bytes(index)
        masks = dataset.rasterize_masks(dataset[index], paste_by_box=self.paste_by_box)
        with_dummy = np.zeros(masks.shape[:2] + (masks.shape[2] + 1,), dtype=np.uint8)
        with_dummy[..., : masks.shape[2]] = masks
        return index, encoded, with_dummy

    def columns(
        self, start: LoaderPosition, cursor: int, payloads: list[tuple[int, np.ndarray, np.ndarray]]
    ) -> tuple[tuple[list[Any], ...], tuple]:
        return self.batch_columns(start, cursor, [(self.index, payloads)]), ()

    def batch_columns(self, start: LoaderPosition, cursor: int, groups: Sequence[SourceGroup]) -> tuple[list[Any], ...]:
        """The batch's columns (:attr:`column_names` order) of payloads read from one or more
        datasets: ``groups`` holds, in batch order, each dataset's compiled index and the
        payloads (:meth:`read`) of its images (the self-training source mixes two sets)."""
        payloads = [p for _, part in groups for p in part]
        geometry = draw_geometry(self.batch_rng(start, GEOMETRY_STREAM), len(payloads), self.jitter, self.flip_prob)
        masks = [p[2] for p in payloads]
        # sliced from the index: no record is built again (read() built the one it rasterised)
        labels, iscrowd, image_ids = group_instance_columns(groups)
        if self.prune_window_size is not None:
            for i, m in enumerate(masks):
                keep = instances_in_window(
                    m[..., :-1], geometry.scale[i], geometry.crop_x[i], geometry.crop_y[i], geometry.flip[i],
                    self.prune_window_size,
                )
                if not keep.all():
                    masks[i] = np.ascontiguousarray(m[..., np.append(keep, True)])  # the dummy channel stays
                    labels[i], iscrowd[i] = labels[i][keep], iscrowd[i][keep]
        return (
            [p[1] for p in payloads],
            masks,
            labels,
            iscrowd,
            image_ids,  # (B, 1): one dense copy
            *geometry.columns(),
            self.position_column(start, cursor, len(payloads)),
        )


def group_instance_columns(groups: Sequence[SourceGroup]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """:func:`~decal.dali_pipes.coco.index.instance_columns` of a batch whose images come from
    one or more indices (``groups`` as :meth:`CopyPasteSource.batch_columns` takes them; a
    payload's first element is its image's position in its index): labels and crowd flags per
    image, image ids as one (B, 1) int64 array, in batch order."""
    labels: list[np.ndarray] = []
    iscrowd: list[np.ndarray] = []
    image_ids = []
    for index, part in groups:
        if part:
            group_labels, group_crowd, group_ids = instance_columns(index, np.array([p[0] for p in part], np.int64))
            labels += group_labels
            iscrowd += group_crowd
            image_ids.append(group_ids)
    return labels, iscrowd, np.concatenate(image_ids)


def copy_paste_rng(position: np.ndarray) -> np.random.Generator:
    """The copy-paste generator of the batch whose ``position`` column is given (the same
    stream :meth:`EpochBatchSource.batch_rng` would give for ``COPY_PASTE_STREAM``)."""
    row = PositionRow.from_array(position)
    return np.random.default_rng([row.seed, row.epoch, row.shard_id, row.batch_index, COPY_PASTE_STREAM])
