"""What every DALI graph builder shares: the ``pipeline_def`` arguments of a backend, and the
source read in DALI's thread or in worker processes."""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn

from .backend import check_backend
from .epoch_source import EpochBatchSource
from .parallel_source import BatchInfoSource

__all__ = ["pipeline_arguments", "source_outputs"]


def pipeline_arguments(
    source: EpochBatchSource,
    device: str,
    device_id: int,
    num_threads: int,
    prefetch_queue_depth: int,
    source_workers: int = 0,
    source_start_method: str = "spawn",
) -> dict[str, Any]:
    """The ``pipeline_def`` keyword arguments of a graph over ``source`` on ``device``
    (``"cpu"`` or ``"gpu"``, checked): the source's batch size, DALI's CPU threads and
    prefetch depth, the CUDA device on the GPU only, and the parallel source's worker
    processes when ``source_workers`` > 0."""
    on_gpu = check_backend(device) == "gpu"
    arguments: dict[str, Any] = dict(
        batch_size=source.batch_size,
        num_threads=num_threads,
        device_id=device_id if on_gpu else None,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    if source_workers:
        arguments.update(py_num_workers=source_workers, py_start_method=source_start_method)
    return arguments


def source_outputs(source: EpochBatchSource, num_outputs: int, source_workers: int = 0, **options: Any) -> Any:
    """``fn.external_source`` over ``source`` (batch mode, ``num_outputs`` columns, other
    ``options`` such as ``layout`` passed on): called in DALI's thread, or, with
    ``source_workers`` > 0, in the worker processes of DALI's parallel external source
    (:class:`~decal.dali_pipes.core.parallel_source.BatchInfoSource`, from ``source.position``)."""
    if source_workers:
        return fn.external_source(
            source=BatchInfoSource(source, source.position), num_outputs=num_outputs, batch=True, batch_info=True,
            parallel=True, prefetch_queue_depth=max(2, source_workers), **options,
        )  # fmt: skip
    return fn.external_source(source=source, num_outputs=num_outputs, batch=True, **options)
