"""The memory one stream may hold, estimated before the stream is admitted.

An instance stream's (copy-paste, balanced, self-training, mosaic) largest buffers are the scale-jittered images and their per-instance
mask stacks, before the crop to the output square: a sample jittered by scale ``s`` is
resized to about ``s * output_size`` on its long side, with ``3`` image channels (uint8) and
``N + 1`` mask channels (uint8; ``N`` instances plus the dummy channel that keeps an image
without instances resizable). Every batch in flight holds one such stack per sample::

    bytes = batch_size * side**2 * (3 + N_max + 1) * (prefetch_queue_depth + prefetch_batches)
    side  = ceil(output_size * max(1, max_scale))

(Mosaic: up to four tiles per sample, so ``N_max`` is four images' worth; balanced
copy-paste adds its bank's ``bank_max_bytes``), with ``max_scale`` the jitter's upper bound (LSJ 2.0, SSJ 1.25, none 1.0, or the range's
``max_scale``), ``N_max`` the most instances any image of the dataset has, and the depth the
DALI prefetch queue plus the stream's queue of encoded batches. It is an upper bound on what
the request can make the server allocate (images smaller than the output are padded, not
grown), which is what admission needs: a request over ``limits.max_stream_bytes`` is refused
with RESOURCE_EXHAUSTED and the figure, before any pipeline exists. The image-folder
families (CutMix, CP²) have fixed-size planes instead: :func:`folder_stream_bytes`.
"""

from __future__ import annotations

import math
from typing import Any

from ..dali_pipes.core.scale_jitter import ScaleJitter

__all__ = ["max_jitter_scale", "stream_memory_bytes", "max_instances", "folder_stream_bytes"]


def max_jitter_scale(jitter: "ScaleJitter | str | tuple[float, float]") -> float:
    """The largest scale ``jitter`` (a preset name or a ``(min, max)`` pair) can draw."""
    return ScaleJitter.parse(jitter).max_scale


def max_instances(dataset: Any) -> int:
    """The most annotations any record of ``dataset`` (a CocoDataset) carries; 0 if unknown."""
    records = getattr(dataset, "records", None)
    if not records:
        return 0
    return max(len(r.annotations) for r in records)


def stream_memory_bytes(*, batch_size: int, output_size: int, max_scale: float, instances: int, depth: int) -> int:
    """Bytes of the scaled image and mask stacks of ``depth`` batches in flight (see the
    module docstring)."""
    side = math.ceil(output_size * max(1.0, max_scale))
    return int(batch_size) * side * side * (3 + int(instances) + 1) * int(depth)


def folder_stream_bytes(*, batch_size: int, output_size: int, bytes_per_pixel: int, depth: int) -> int:
    """Bytes of ``depth`` batches in flight of an image-folder family (CutMix, CP²), whose
    buffers are fixed-size S×S planes: ``batch_size * S**2 * bytes_per_pixel * depth``.

    ``bytes_per_pixel`` sums a sample's planes: CutMix 3 uint8 crop + 3×4 float32 image (3
    uint8 with ``normalize=False``; +3 with ``return_unmixed``) = 15 (18); CP² 4 uint8 views
    (12) + 2 float32 images (24; 6 uint8 with ``normalize=False``) + 2 masks (2) = 38 (+12
    with ``return_views``, the views held in the output too). Decoded source images before
    the crop are not counted (they are released per sample by the decoder)."""
    return int(batch_size) * int(output_size) ** 2 * int(bytes_per_pixel) * int(depth)
