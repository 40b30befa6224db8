"""Batch plumbing shared by the paste steps of the copy-paste pipelines (copy-paste, balanced,
self-training): DALI's per-sample inputs in, one batched form (:class:`StackedBatch`) that the
steps' cores take, whichever input form it came from; the kernels' batched result out, DALI's
per-sample outputs.

Two input forms, the same batched form:

* **host masks** (:func:`stack_batch`): masks arrive S×S×(N+1) with the dummy last channel
  (see ARCHITECTURE.md "DALI pitfalls") and are stacked to (M, S, S), dummy dropped;
* **mask descriptors** (:func:`descriptor_batch`): the six descriptor columns of
  :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource` are joined and
  rasterised straight into (M, S, S) with one launch per batch
  (:func:`~decal.kernels.instance_masks.rasterize_instances`), which also gives the masks'
  areas and boxes.

NumPy on the CPU backend, CuPy on the GPU backend. On the GPU the host-side metadata a step
needs (labels, crowd flags, the position row, and the areas on the descriptor path) comes to
the host in one copy per batch (:func:`host_int64`), not one per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, Sequence

import numpy as np

from ...kernels.array_module import get_array_module, to_host
from ...kernels.instance_masks import ARRAY_FIELDS, MaskDescriptors, rasterize_instances
from ...kernels.parallel_batch import run_chunks

__all__ = [
    "DESCRIPTOR_COLUMNS",
    "BatchCore",
    "FromDescriptors",
    "StackedBatch",
    "descriptor_batch",
    "host_int64",
    "stack_batch",
    "split_result",
    "to_host",
]

#: The descriptor columns a descriptor step takes after the images, in order (the
#: :data:`~decal.kernels.instance_masks.ARRAY_FIELDS`).
DESCRIPTOR_COLUMNS = ARRAY_FIELDS


@dataclass(frozen=True)
class StackedBatch:
    """One batch in the form the paste cores take.

    Attributes:
        xp: the array module (NumPy or CuPy).
        images: (B, S, S, 3) uint8.
        masks: (M, S, S) uint8 in {0, 1}; image b owns rows ``offsets[b]:offsets[b + 1]``.
        offsets: (B + 1,) int64 host.
        labels: (M,) int64 host category ids.
        iscrowd: (M,) bool host.
        position: (POSITION_FIELDS,) int64 host, the batch's position row.
        areas, boxes: (M,) int64 / (M, 4) float32 of ``masks`` on the masks' device when the
            masks were rasterised from descriptors (computed with them); None otherwise.
        areas_host: ``areas`` on the host (None with them).
    """

    xp: Any
    images: Any
    masks: Any
    offsets: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    position: np.ndarray
    areas: Any = None
    boxes: Any = None
    areas_host: np.ndarray | None = None


def host_int64(xp: Any, *groups: Sequence[Any]) -> list[np.ndarray]:
    """Each group of integer arrays (per-sample columns, NumPy or CuPy) flattened and joined
    into one (n,) int64 host array, with one device-to-host copy for all the groups (sizes
    come from the shapes: nothing synchronises before the copy)."""
    pieces = [xp.asarray(x).astype(xp.int64).reshape(-1) for group in groups for x in group]
    lengths = [sum(int(np.prod(x.shape)) for x in group) for group in groups]
    flat = to_host(xp.concatenate(pieces)) if pieces else np.empty(0, np.int64)
    return np.split(flat.astype(np.int64, copy=False), np.cumsum(lengths)[:-1].astype(np.int64))


def stack_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    labels: Sequence[Any],
    iscrowd: Sequence[Any],
    positions: Sequence[Any],
    pool: ThreadPoolExecutor | None = None,
) -> StackedBatch:
    """The batched form of host-mask inputs: images to (B, S, S, 3); masks S×S×(N+1) to
    (M, S, S), dummy dropped; labels, crowd flags and the position row (``positions[0]``) to
    the host in one copy. With a ``pool`` (NumPy inputs), the per-sample copies run on its
    threads."""
    xp = get_array_module(images[0])
    counts = np.array([m.shape[2] - 1 for m in masks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    height, width = images[0].shape[:2]
    stacked_masks = xp.empty((int(offsets[-1]), height, width), dtype=xp.uint8)

    def copy_masks(b: int) -> None:  # one strided copy per sample: HWC → CHW, dummy dropped
        stacked_masks[offsets[b] : offsets[b + 1]] = xp.moveaxis(masks[b][..., :-1], 2, 0)

    if pool is None or xp is not np:
        stacked_images = xp.stack(images)
        for b in range(len(masks)):
            copy_masks(b)
    else:
        stacked_images = np.empty((len(images),) + tuple(images[0].shape), dtype=images[0].dtype)

        def copy_sample(b: int) -> None:
            stacked_images[b] = images[b]
            copy_masks(b)

        run_chunks(pool, copy_sample, range(len(images)))
    host_labels, host_crowd, position = host_int64(xp, labels, iscrowd, positions[:1])
    return StackedBatch(xp, stacked_images, stacked_masks, offsets, host_labels, host_crowd.astype(bool), position)


def descriptor_batch(
    images: Sequence[Any],
    tables: Sequence[Any],
    verts: Sequence[Any],
    polys: Sequence[Any],
    poly_instances: Sequence[Any],
    toggles: Sequence[Any],
    rle_instances: Sequence[Any],
    labels: Sequence[Any],
    iscrowd: Sequence[Any],
    positions: Sequence[Any],
) -> StackedBatch:
    """The batched form of descriptor inputs: images to (B, S, S, 3); the per-sample
    descriptor pieces (batch-global offsets, as the source sends them) joined and rasterised
    at S×S with one launch per kernel for the batch, with their areas and boxes; the areas,
    labels, crowd flags and position row to the host in one copy (launched after the
    rasteriser, so the copy waits for it on the device, not the host)."""
    xp = get_array_module(images[0])
    height, width = images[0].shape[:2]
    counts = np.array([int(x.shape[0]) for x in labels], dtype=np.int64)  # shapes: no sync
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    columns = (tables, verts, polys, poly_instances, toggles, rle_instances)
    masks, areas, boxes = rasterize_instances(MaskDescriptors.from_columns(columns, height, width, total))
    areas_host, host_labels, host_crowd, position = host_int64(xp, [areas], labels, iscrowd, positions[:1])
    return StackedBatch(
        xp, xp.stack(images), masks, offsets, host_labels, host_crowd.astype(bool), position,
        areas=areas, boxes=boxes, areas_host=areas_host,
    )  # fmt: skip


class BatchCore(Protocol):
    """A paste step's core: one :class:`StackedBatch` in, the seven per-sample outputs
    (:func:`split_result`) out."""

    def paste(self, batch: StackedBatch) -> tuple[list[Any], ...]: ...


@dataclass(frozen=True)
class FromDescriptors:
    """The ``fn.python_function`` body (batch mode) of a descriptor graph over a step's core:
    inputs per sample as :func:`descriptor_batch` takes them (image S×S×3, the six descriptor
    columns, labels, iscrowd, position), outputs those of ``core.paste``. The same core takes
    host masks through its own ``__call__`` (:func:`stack_batch`)."""

    core: BatchCore

    def __call__(self, images, tables, verts, polys, poly_instances, toggles, rle_instances, labels, iscrowd, positions):
        batch = descriptor_batch(images, tables, verts, polys, poly_instances, toggles, rle_instances, labels, iscrowd, positions)
        return self.core.paste(batch)


def split_result(xp: Any, result: Any, batch_size: int) -> tuple[list[Any], ...]:
    """The seven per-sample outputs of a paste step (images, masks, boxes, areas, labels,
    iscrowd, pasted) from a ``CopyPasteResult``-like object whose labels and flags are on the
    host; those three go to the device in one copy."""
    o = result.instance_offsets
    rows = [slice(int(o[b]), int(o[b + 1])) for b in range(batch_size)]
    small = np.stack([np.asarray(result.labels, np.int64), np.asarray(result.iscrowd).astype(np.int64),
                      np.asarray(result.pasted).astype(np.int64)])  # fmt: skip
    small = small if xp is np else xp.asarray(small)  # one upload for the three
    flags = small[1:].astype(xp.uint8)  # one cast for the batch: iscrowd, pasted
    return (
        [result.images[b] for b in range(batch_size)],
        [result.masks[r] for r in rows],
        [result.boxes[r] for r in rows],
        [result.areas[r] for r in rows],
        [small[0, r] for r in rows],
        [flags[0, r] for r in rows],
        [flags[1, r] for r in rows],
    )
