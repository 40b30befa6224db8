"""The options every loader family shares: the run (seed, order, shard, bad input) and the
device; the source workers of the families whose source takes them (copy-paste and its
variants, Mosaic); and what the image-folder families (CutMix, CP²) share: the
``RandomResizedCrop`` ranges and the normalisation. Declared once here (:class:`~decal.dali_pipes.core.option_schema.Option`); each family's
schema or config takes them (``dali_pipes/copy_paste/options.py``, ``CutMixLoaderConfig``,
``CP2LoaderConfig``, ``MosaicLoaderConfig``).
"""

from __future__ import annotations

from typing import Literal

from .normalization import IMAGENET_MEAN, IMAGENET_STD
from .option_schema import Option

__all__ = [
    "SEED", "SHUFFLE", "SHARD_ID", "NUM_SHARDS", "DROP_LAST", "ON_ERROR",
    "DEVICE", "DEVICE_ID", "NUM_THREADS", "PREFETCH_QUEUE_DEPTH",
    "SOURCE_WORKERS", "SOURCE_START_METHOD", "RUN_OPTIONS", "DEVICE_OPTIONS", "WORKER_OPTIONS",
    "NORMALIZATION_OPTIONS", "resized_crop_options",
]  # fmt: skip

SEED = Option("seed", int, 0, "fixes every random draw")
SHUFFLE = Option("shuffle", bool, True, "shuffle each epoch (uniform sampler)", served=True)
SHARD_ID = Option("shard_id", int, 0, "this process's part of each epoch (DDP rank)", low=0)
NUM_SHARDS = Option("num_shards", int, 1, "the number of parts of each epoch (DDP world size)", low=1)
DROP_LAST = Option("drop_last", bool, False, "drop the last incomplete batch", served=True)
ON_ERROR = Option(
    "on_error", Literal["raise", "skip"], "raise", '`"skip"`: skip bad images and count them in `loader.stats`',
    choices=("raise", "skip"), served=True,
)  # fmt: skip
DEVICE = Option(
    "device", str | None, None, '`"cpu"`, `"gpu"`/`"cuda"`, `"cuda:N"`, or None/`"auto"` (the GPU when CuPy sees one)'
)
DEVICE_ID = Option("device_id", int, 0, 'CUDA device (`device="cuda:N"` sets it)', low=0)
NUM_THREADS = Option("num_threads", int, 2, "DALI CPU threads", low=1)
PREFETCH_QUEUE_DEPTH = Option("prefetch_queue_depth", int, 2, "batches prepared ahead", low=1)
SOURCE_WORKERS = Option(
    "source_workers", int, 0,
    "worker processes of the source (file reads, mask raster; DALI's parallel external source, same batches); "
    '`on_error="raise"` only',
    low=0,
)  # fmt: skip
SOURCE_START_METHOD = Option(
    "source_start_method", str | None, None,
    'the workers\' `"fork"` or `"spawn"`; None = spawn (fork is faster to start but may deadlock a worker forked while other threads hold locks)',
    choices=("fork", "spawn"),
)  # fmt: skip

#: seed, shuffle, shard_id, num_shards, drop_last, on_error.
RUN_OPTIONS: tuple[Option, ...] = (SEED, SHUFFLE, SHARD_ID, NUM_SHARDS, DROP_LAST, ON_ERROR)
#: device, device_id, num_threads, prefetch_queue_depth.
DEVICE_OPTIONS: tuple[Option, ...] = (DEVICE, DEVICE_ID, NUM_THREADS, PREFETCH_QUEUE_DEPTH)
#: source_workers, source_start_method.
WORKER_OPTIONS: tuple[Option, ...] = (SOURCE_WORKERS, SOURCE_START_METHOD)
#: normalize, mean, std (the image-folder families' float32 ImageNet normalisation).
NORMALIZATION_OPTIONS: tuple[Option, ...] = (
    Option("normalize", bool, True, "float32 ImageNet-normalised images; False: uint8", served=True),
    Option("mean", tuple[float, float, float], IMAGENET_MEAN, "normalisation mean per channel, [0, 1] units"),
    Option("std", tuple[float, float, float], IMAGENET_STD, "normalisation std per channel, [0, 1] units"),
)  # fmt: skip


def resized_crop_options(scale: tuple[float, float], scale_help: str) -> tuple[Option, Option]:
    """``scale`` (default ``scale``, described by ``scale_help``) and ``ratio``: torchvision's
    ``RandomResizedCrop`` area fraction and aspect ranges, ``(min, max)`` pairs."""
    return (
        Option("scale", tuple[float, float], scale, scale_help, low=0.0, high=1.0, low_open=True, served=True),
        Option("ratio", tuple[float, float], (3.0 / 4.0, 4.0 / 3.0), "`RandomResizedCrop` aspect range (min, max)", low=0.0, high=100.0, low_open=True, served=True),
    )  # fmt: skip
