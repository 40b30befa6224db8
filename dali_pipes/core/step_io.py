"""Batch plumbing shared by the paste steps that plug into the copy-paste pipeline
(:class:`~decal.dali_pipes.balanced.loader.BalancedCopyPasteStep`,
:class:`~decal.dali_pipes.self_training.loader.SelfTrainingStep`): DALI's per-sample inputs in,
the batched arrays the kernels take; the kernels' batched result out, DALI's per-sample
outputs. Same conventions as :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`
(NumPy on the CPU backend, CuPy on the GPU backend; masks arrive H×W×(N+1) with the dummy
last channel, see ARCHITECTURE.md "DALI pitfalls").
"""

from __future__ import annotations

from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from ...kernels.array_module import get_array_module, to_host
from ...kernels.parallel_batch import run_chunks

__all__ = ["StackedBatch", "stack_batch", "split_result", "to_host"]


@dataclass(frozen=True)
class StackedBatch:
    """images (B, H, W, 3) uint8; masks (M, H, W) uint8; offsets (B + 1,) int64 host;
    labels (M,) int64 host; iscrowd (M,) bool host; xp the array module."""

    xp: Any
    images: Any
    masks: Any
    offsets: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray


def stack_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    labels: Sequence[Any],
    iscrowd: Sequence[Any],
    pool: ThreadPoolExecutor | None = None,
) -> StackedBatch:
    """Stack a batch: images to (B, H, W, 3); masks H×W×(N+1) to (M, H, W), dummy dropped.
    With a ``pool`` (NumPy inputs), the per-sample copies run on its threads."""
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
    host_labels = np.concatenate([to_host(x) for x in labels]).astype(np.int64) if len(labels) else np.empty(0, np.int64)
    host_crowd = np.concatenate([to_host(x) for x in iscrowd]).astype(bool) if len(iscrowd) else np.empty(0, bool)
    return StackedBatch(xp, stacked_images, stacked_masks, offsets, host_labels, host_crowd)


def split_result(xp: Any, result: Any, batch_size: int) -> tuple[list[Any], ...]:
    """The seven per-sample outputs of a paste step (images, masks, boxes, areas, labels,
    iscrowd, pasted) from a ``CopyPasteResult``-like object."""
    o = result.instance_offsets
    rows = [slice(int(o[b]), int(o[b + 1])) for b in range(batch_size)]

    def per_sample(array: Any) -> list[Any]:
        return [array[r] for r in rows]

    return (
        [result.images[b] for b in range(batch_size)],
        per_sample(result.masks),
        per_sample(result.boxes),
        per_sample(result.areas),
        [xp.asarray(x) for x in per_sample(result.labels)],
        [xp.asarray(x.astype(np.uint8)) for x in per_sample(result.iscrowd)],
        [xp.asarray(x.astype(np.uint8)) for x in per_sample(result.pasted)],
    )
