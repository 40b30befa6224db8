"""The batched NumPy twins of Copy-Paste run in per-sample (or per-instance) chunks on a
thread pool, so the CPU backend's copy-paste step uses every core.

Every kernel of the step is independent across samples (images, alphas) or across instances
(masks, boxes): :func:`~decal.kernels.mask_boxes.mask_boxes_numpy` of rows ``a:b`` is rows
``a:b`` of it over all rows, and likewise for
:func:`~decal.kernels.paste_alpha.paste_alpha_numpy`,
:func:`~decal.kernels.gaussian_blur.gaussian_blur_numpy`,
:func:`~decal.kernels.composite.composite_numpy` and
:func:`~decal.kernels.occlusion_update.occlusion_update_numpy`. So each function here calls the
twin itself on a chunk and writes the chunk's rows of one preallocated output: the result is
bit-identical to the batched twin (``tests/test_parallel_batch.py``), the twins stay the
specification, and the pixel work runs in NumPy calls that release the GIL (ufuncs,
reductions, casts and copies on uint8/float32 arrays), so T threads run on T cores.

:class:`BatchOps` bundles the five operations: :meth:`BatchOps.serial` is the batched
dispatchers (NumPy or CuPy), :meth:`BatchOps.threaded` the chunked twins over a pool.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .composite import composite, composite_numpy
from .exact_host import composite_hard, mask_boxes_rows, occlusion_update_rows, uncovered
from .gaussian_blur import gaussian_blur, gaussian_blur_numpy
from .mask_boxes import mask_boxes, mask_boxes_numpy
from .occlusion_update import occlusion_update, occlusion_update_numpy
from .paste_alpha import paste_alpha, paste_alpha_numpy

__all__ = [
    "BatchOps",
    "shared_pool",
    "row_chunks",
    "run_chunks",
    "mask_boxes_chunked",
    "paste_alpha_chunked",
    "gaussian_blur_chunked",
    "composite_chunked",
    "occlusion_update_chunked",
    "copy_rows",
]

#: chunks per thread for per-instance work: small enough to balance uneven rows
_CHUNKS_PER_THREAD = 4


@functools.lru_cache(maxsize=None)
def shared_pool(threads: int) -> ThreadPoolExecutor:
    """One process-wide pool of ``threads`` threads (reused by every step that asks for it),
    its threads started by the caller (:func:`_start_threads`)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"paste-step{threads}")
    _start_threads(pool, threads)
    return pool


def _start_threads(pool: ThreadPoolExecutor, threads: int) -> None:
    """Start all ``threads`` threads of ``pool`` now, from the calling thread. A pool starts
    its threads on demand, from the thread that submits work; when that is one of DALI's
    native threads (a step runs there), ``threading`` registers it as a ``Dummy-N`` thread
    that outlives it. One task per thread, each waiting for all, forces every thread up."""
    barrier = threading.Barrier(threads)
    for future in [pool.submit(barrier.wait) for _ in range(threads)]:
        future.result()


def row_chunks(count: int, threads: int) -> list[slice]:
    """``count`` rows cut into at most ``_CHUNKS_PER_THREAD · threads`` contiguous slices of
    near-equal length (no empty slice)."""
    pieces = max(1, min(count, _CHUNKS_PER_THREAD * threads))
    edges = np.linspace(0, count, pieces + 1).round().astype(np.int64)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run_chunks(pool: ThreadPoolExecutor, work: Callable[[Any], None], chunks: Sequence[Any]) -> None:
    """``work(chunk)`` for every chunk on ``pool`` (inline when the pool has one thread);
    waits for all, re-raises the first error."""
    if len(chunks) <= 1 or _threads(pool) == 1:
        for chunk in chunks:
            work(chunk)
        return
    for future in [pool.submit(work, chunk) for chunk in chunks]:
        future.result()


def _threads(pool: ThreadPoolExecutor) -> int:
    return int(pool._max_workers)  # noqa: SLF001 - the executor keeps no public count


def mask_boxes_chunked(masks: np.ndarray, pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~decal.kernels.mask_boxes.mask_boxes_numpy` over chunks of instances:
    masks (M, H, W) → areas (M,) int64, boxes (M, 4) float32."""
    m = masks.shape[0]
    areas = np.empty(m, dtype=np.int64)
    boxes = np.empty((m, 4), dtype=np.float32)

    def work(rows: slice) -> None:
        if masks.dtype == np.uint8:
            mask_boxes_rows(masks[rows], areas[rows], boxes[rows])
        else:
            areas[rows], boxes[rows] = mask_boxes_numpy(masks[rows])

    run_chunks(pool, work, row_chunks(m, _threads(pool)))
    return areas, boxes


def paste_alpha_chunked(
    masks: np.ndarray, paste_offsets: np.ndarray, paste_indices: np.ndarray, num_samples: int, pool: ThreadPoolExecutor
) -> np.ndarray:
    """:func:`~decal.kernels.paste_alpha.paste_alpha_numpy` sample by sample: (B, H, W) uint8."""
    paste_offsets = np.asarray(paste_offsets, dtype=np.int64)
    paste_indices = np.asarray(paste_indices, dtype=np.int64)
    if paste_offsets.shape != (num_samples + 1,):  # the twin's own check, before slicing
        paste_alpha_numpy(masks, paste_offsets, paste_indices, num_samples)
    alpha = np.empty((num_samples,) + masks.shape[1:], dtype=np.uint8)

    def work(b: int) -> None:
        lo, hi = paste_offsets[b], paste_offsets[b + 1]
        alpha[b : b + 1] = paste_alpha_numpy(masks, np.array([0, hi - lo]), paste_indices[lo:hi], 1)

    run_chunks(pool, work, range(num_samples))
    return alpha


def gaussian_blur_chunked(alpha: np.ndarray, sigma: float, pool: ThreadPoolExecutor) -> np.ndarray:
    """:func:`~decal.kernels.gaussian_blur.gaussian_blur_numpy` sample by sample: (B, H, W) float32."""
    out = np.empty(alpha.shape, dtype=np.float32)

    def work(b: int) -> None:
        out[b : b + 1] = gaussian_blur_numpy(alpha[b : b + 1], sigma)

    run_chunks(pool, work, range(alpha.shape[0]))
    return out


def composite_chunked(
    dst_images: np.ndarray, src_images: np.ndarray, partner: np.ndarray, alpha: np.ndarray, pool: ThreadPoolExecutor
) -> np.ndarray:
    """:func:`~decal.kernels.composite.composite_numpy` sample by sample: (B, H, W, C) uint8
    (a uint8 alpha through its exact select, :func:`~decal.kernels.exact_host.composite_hard`)."""
    partner = np.asarray(partner, dtype=np.int64)
    if partner.shape != (dst_images.shape[0],) or alpha.shape != dst_images.shape[:3]:
        composite_numpy(dst_images, src_images, partner, alpha)  # raises the twin's error
    out = np.empty(dst_images.shape, dtype=np.uint8)

    hard = alpha.dtype == np.uint8 and dst_images.dtype == np.uint8 and src_images.dtype == np.uint8

    def work(b: int) -> None:
        if hard:
            composite_hard(dst_images[b], src_images[partner[b]], alpha[b], out[b])
        else:
            out[b : b + 1] = composite_numpy(dst_images[b : b + 1], src_images, partner[b : b + 1], alpha[b : b + 1])

    run_chunks(pool, work, range(dst_images.shape[0]))
    return out


def occlusion_update_chunked(
    masks: np.ndarray, instance_sample: np.ndarray, alpha_hard: np.ndarray, pool: ThreadPoolExecutor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~decal.kernels.occlusion_update.occlusion_update_numpy` over chunks of instances:
    masks (M, H, W) uint8, areas (M,) int64, boxes (M, 4) float32."""
    instance_sample = np.asarray(instance_sample, dtype=np.int64)
    if instance_sample.shape != (masks.shape[0],) or masks.shape[1:] != alpha_hard.shape[1:]:
        occlusion_update_numpy(masks, instance_sample, alpha_hard)  # raises the twin's error
    m = masks.shape[0]
    new_masks = np.empty(masks.shape, dtype=np.uint8)
    areas = np.empty(m, dtype=np.int64)
    boxes = np.empty((m, 4), dtype=np.float32)

    fast = masks.dtype == np.uint8 and alpha_hard.dtype == np.uint8
    keep = uncovered(alpha_hard) if fast else None

    def work(rows: slice) -> None:
        if fast:
            occlusion_update_rows(masks[rows], instance_sample[rows], keep, new_masks[rows])
            mask_boxes_rows(new_masks[rows], areas[rows], boxes[rows])
        else:
            new_masks[rows], areas[rows], boxes[rows] = occlusion_update_numpy(masks[rows], instance_sample[rows], alpha_hard)

    run_chunks(pool, work, row_chunks(m, _threads(pool)))
    return new_masks, areas, boxes


def copy_rows(out: np.ndarray, dest: np.ndarray, src: np.ndarray, rows: np.ndarray, pool: ThreadPoolExecutor) -> None:
    """``out[dest] = src[rows]`` (row gather-scatter of (N, ...) arrays) in chunks on ``pool``."""
    dest = np.asarray(dest, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)

    def work(part: slice) -> None:
        for d, r in zip(dest[part].tolist(), rows[part].tolist()):
            out[d] = src[r]

    run_chunks(pool, work, row_chunks(len(dest), _threads(pool)))


def _copy_rows_batched(out: Any, dest: Any, src: Any, rows: Any) -> None:
    out[dest] = src[rows]


@dataclass(frozen=True)
class BatchOps:
    """The pixel operations of :func:`~decal.kernels.copy_paste.copy_paste_batch`, with the
    batched kernels' signatures (``copy_rows(out, dest, src, rows)`` is ``out[dest] = src[rows]``)."""

    mask_boxes: Callable[..., Any]
    paste_alpha: Callable[..., Any]
    gaussian_blur: Callable[..., Any]
    composite: Callable[..., Any]
    occlusion_update: Callable[..., Any]
    copy_rows: Callable[..., None]

    @classmethod
    def serial(cls) -> "BatchOps":
        """The batched dispatchers: one NumPy call (or one CUDA launch) per operation."""
        return cls(mask_boxes, paste_alpha, gaussian_blur, composite, occlusion_update, _copy_rows_batched)

    @classmethod
    def threaded(cls, pool: ThreadPoolExecutor) -> "BatchOps":
        """The NumPy twins in chunks on ``pool`` (NumPy arrays only)."""
        bind = functools.partial
        return cls(
            bind(mask_boxes_chunked, pool=pool),
            bind(paste_alpha_chunked, pool=pool),
            bind(gaussian_blur_chunked, pool=pool),
            bind(composite_chunked, pool=pool),
            bind(occlusion_update_chunked, pool=pool),
            bind(copy_rows, pool=pool),
        )
