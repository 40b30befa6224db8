"""What this process holds, for tests that check it is released: a loader's parallel-source
worker pool (``dali_pipes/core/pipeline_release.py``), its shared memory, native threads."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["alive", "os_thread_names", "shm_mappings", "worker_pids"]


def shm_mappings() -> set[str]:
    """The shared-memory files this process maps (``/proc/self/maps``): DALI's batch chunks and
    queue buffers (``/dev/shm/nvidia_dali_*``) and multiprocessing's semaphores (``sem.*``)."""
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if "/dev/shm/" in line}


def os_thread_names() -> list[str]:
    """The names (``/proc/self/task/*/comm``, at most 15 characters) of this process's OS
    threads, sorted: Python's and native ones (DALI's workers, gRPC core's, gloo's)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(names)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live or unreaped process."""
    return os.path.exists(f"/proc/{pid}")


def worker_pids(pipeline: Any) -> list[int]:
    """The process ids of a DALI ``pipeline``'s parallel-source workers (its ``_py_pool``;
    empty without workers or before ``build()``)."""
    pool = getattr(pipeline, "_py_pool", None)
    return list(pool.pids()) if pool is not None else []
