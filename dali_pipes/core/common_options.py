"""The options every loader family shares: the run (seed, order, shard, bad input) and the
device; and the source workers of the families whose source takes them (copy-paste and its
variants, Mosaic). Declared once here (:class:`~decal.dali_pipes.core.option_schema.Option`); each family's
schema or config takes them (``dali_pipes/copy_paste/options.py``, ``CutMixLoaderConfig``,
``CP2LoaderConfig``, ``MosaicLoaderConfig``).
"""

from __future__ import annotations

from typing import Literal

from .option_schema import Option

__all__ = [
    "SEED", "SHUFFLE", "SHARD_ID", "NUM_SHARDS", "DROP_LAST", "ON_ERROR",
    "DEVICE", "DEVICE_ID", "NUM_THREADS", "PREFETCH_QUEUE_DEPTH",
    "SOURCE_WORKERS", "SOURCE_START_METHOD", "RUN_OPTIONS", "DEVICE_OPTIONS", "WORKER_OPTIONS",
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
