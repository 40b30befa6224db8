"""Pieces shared by decal's reference trainers (detection, CP², classification).

* :mod:`.config` — typed dataclass configs from TOML, presets, ``--set`` overrides, and the
  shared sections (data, optimiser, schedule, run, EMA).
* :mod:`.distributed` — DDP from torchrun's environment, one DALI shard per rank.
* :mod:`.data` — the local loader or the gRPC ``RemoteLoader``, categories, moving targets.
* :mod:`.optim` — SGD/AdamW with the linear LR scaling rule; warmup + step/cosine/poly schedule.
* :mod:`.loop` — :class:`TrainLoop`: AMP, clipping, EMA, progress, metrics, checkpoints, resume.
* :mod:`.evaluation` — :class:`EvalHook`: evaluate every N epochs and at the end, log, keep history.
* :mod:`.metrics` — JSONL log (+ TensorBoard when importable).
* :mod:`.checkpoint` — atomic checkpoint files and resume lookup.
* :mod:`.ema` — weight EMA (timm ``ModelEmaV2`` semantics).
"""

from .checkpoint import Checkpointer, load_checkpoint
from .config import (
    ConfigError,
    DataConfig,
    EmaConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from .distributed import DistInfo, init_distributed, resolve_device, unwrap_model, wrap_model
from .ema import ModelEma
from .evaluation import EvalHook
from .loop import Hook, StepOutput, TrainLoop
from .metrics import MetricLogger, read_jsonl
from .optim import build_optimizer, build_scheduler, lr_factor, scaled_lr

__all__ = [
    "Checkpointer",
    "load_checkpoint",
    "ConfigError",
    "DataConfig",
    "EmaConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
    "DistInfo",
    "init_distributed",
    "resolve_device",
    "unwrap_model",
    "wrap_model",
    "ModelEma",
    "EvalHook",
    "Hook",
    "StepOutput",
    "TrainLoop",
    "MetricLogger",
    "read_jsonl",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "scaled_lr",
]
