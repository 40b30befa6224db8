"""Shut a DALI pipeline down now, with the worker pool of its parallel external source.

DALI 2.4 frees a pipeline's resources only when the ``Pipeline`` object is collected:
``Pipeline.__del__`` calls ``Pipeline._shutdown`` (the backend's ``Shutdown``, then the backend
dropped), and ``Pipeline._start_py_workers`` registers ``weakref.finalize(pipeline,
WorkerPool.close)`` for the pool of ``py_num_workers`` processes. ``WorkerPool.close`` stops
the pool's observer thread, which closes the task queues, joins the workers (1 s each) and
terminates any left. The pool's shared memory (the batch chunks of every parallel source and
the queues' buffers, ``/dev/shm/nvidia_dali_*`` files unlinked at creation and kept mapped)
is unmapped only when its ``SharedMem`` objects die, and its named semaphores
(``/dev/shm/sem.mp-*`` with the ``"spawn"`` start method) when the queues' locks die. DALI 2.4
has no public call for any of this (nor the ``_shutdown_workers_pool`` of other versions).

:func:`release_pipeline` does the same steps in the same order, now, through those
attributes: backend first (so nothing reads the shared memory any more), then the pool's
processes, then the shared memory. The named semaphores go with the pool object: at once when
nothing else holds the pipeline (a loader drops its reference right after), else at the next
garbage collection. Everything it does is idempotent, so DALI's own finalizer running later is
harmless.
"""

from __future__ import annotations

from typing import Any, Iterator

__all__ = ["release_pipeline"]


def _shared_memory(pool: Any) -> Iterator[Any]:
    """The ``SharedMem``-like objects (with ``close()``) that a DALI ``WorkerPool`` maps: the
    batch chunks of each source's context, then the buffers of the task and result queues."""
    for context in getattr(pool, "contexts", ()):
        yield from context.shm_manager.get_chunks()
    processes = getattr(pool, "pool", None)
    queues = [getattr(processes, "_result_queue", None), getattr(processes, "_general_task_queue", None)]
    queues += [getattr(worker, "dedicated_task_queue", None) for worker in getattr(processes, "_workers_contexts", ())]
    for queue in queues:
        if queue is not None and getattr(queue, "shm", None) is not None:
            yield queue.shm


def release_pipeline(pipeline: Any) -> None:
    """Stop ``pipeline`` (a DALI ``Pipeline``, built or not) and free what it holds now: its
    executor and backend, then its worker processes (joined; gone when this returns) and the
    shared memory they filled. The pipeline cannot run afterwards. Idempotent."""
    pool = getattr(pipeline, "_py_pool", None)
    pipeline._shutdown()
    if pool is None:
        return
    pool.close()
    for memory in _shared_memory(pool):
        memory.close()
    pipeline._py_pool = None
