"""DDP through ``torchrun``: process-group setup from the environment, one DALI shard per rank.

``torchrun --nproc_per_node N ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment.
:func:`init_distributed` reads them and joins the process group (nccl on CUDA, gloo on the
CPU); without them it returns a single-process :class:`DistInfo` and nothing else changes.
Each rank then reads shard ``rank`` of ``world_size`` of every epoch
(:meth:`DistInfo.shard_options`), and on CUDA uses GPU ``LOCAL_RANK`` for both the model and
its DALI pipeline.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "init_distributed",
    "in_process_group",
    "resolve_device",
    "wrap_model",
    "unwrap_model",
    "barrier",
    "all_gather_object",
    "broadcast_object",
    "all_reduce_sum",
    "all_ranks_true",
    "cleanup",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes.
        local_rank: rank on this machine (the CUDA device index).
        backend: the process-group backend, or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_options(self) -> dict[str, int]:
        """Loader options for this rank: DALI shard ``rank`` of ``world_size``."""
        return {"shard_id": self.rank, "num_shards": self.world_size}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(backend: str = "auto", device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (if any).

    Args:
        backend: ``"auto"`` (nccl when the run uses CUDA, else gloo), ``"nccl"`` or ``"gloo"``.
        device: the run's device setting (``"auto"``, ``"cpu"``, ``"cuda"``), used by ``"auto"``.
        timeout_s: collective timeout.

    Returns:
        The :class:`DistInfo`; single-process when ``WORLD_SIZE`` is unset or 1.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo(0, 1, local_rank, None)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        _import_before_the_group_exists()
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, backend)


#: Modules that bind ``torch.distributed.group.WORLD`` into default arguments when imported
#: (``def broadcast(tensor, src, group=group.WORLD)``). Imported after the group exists (torch
#: imports this one lazily, e.g. the first optimizer's ``add_param_group`` loads
#: ``torch._dynamo``, which loads it), they hold the default group for the life of the
#: interpreter: ``destroy_process_group`` then frees nothing, and gloo's threads and rank 0's
#: store server are torn down during interpreter shutdown.
_BINDS_WORLD_AT_IMPORT = ("torch.distributed.nn.functional",)


def _import_before_the_group_exists() -> None:
    """Import :data:`_BINDS_WORLD_AT_IMPORT` while ``group.WORLD`` is still None, so their
    defaults hold None (the default group, looked up per call) instead of the group itself."""
    for name in _BINDS_WORLD_AT_IMPORT:
        importlib.import_module(name)


def resolve_device(requested: str, info: DistInfo) -> torch.device:
    """``"auto"`` → ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself."""
    if not info.distributed:
        return model
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index], output_device=device.index, **ddp_kwargs
        )
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or DataParallel) wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (a no-op when not distributed); returns ``tensor``."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ranks_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank (one small collective)."""
    if not info.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def cleanup(info: DistInfo) -> None:
    """Tear the process group down. On a normal exit every rank first meets at a barrier:
    a rank that destroys its group while a peer still has gloo work in flight can abort the
    peer ("terminate called without an active exception", seen here). When an exception is
    propagating the barrier is skipped, since the other ranks may never arrive.

    ``destroy_process_group`` only drops c10d's own reference: a DDP model left in a reference
    cycle (its hooks) still holds the group, and would free it, with gloo's C++ threads and
    their tensors, during interpreter shutdown, where that can abort the process. So a garbage
    collection runs first: call this after the job's own references (model, loop) are gone,
    as :func:`in_process_group` does. Nor may a module hold the group: see
    :func:`init_distributed`, which imports the one torch module that would before the group
    exists. After this returns no gloo thread of the group is left."""
    if info.distributed and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


T = TypeVar("T")


def in_process_group(run: Any, job: Callable[[DistInfo], T]) -> T:
    """``job(info)`` inside this process's group (``run.dist_backend``, ``run.device``:
    :func:`init_distributed`), torn down afterwards (:func:`cleanup`) however ``job`` ends."""
    info = init_distributed(run.dist_backend, run.device)
    try:
        return job(info)
    finally:
        cleanup(info)
