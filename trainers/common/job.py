"""What every trainer's job does around its own model and step: set the run up on its
device, and build the optimiser, the schedule, the checkpointer and the
:class:`~.loop.TrainLoop`, then run it from its checkpoint (detection, CP², classification).

A trainer config has the sections ``run`` (:class:`~.config.RunConfig`), ``optim``,
``schedule`` and ``loader`` (its ``batch_size`` is the per-rank batch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import Checkpointer
from .config import RunConfig, save_config, to_dict
from .distributed import DistInfo, resolve_device
from .ema import ModelEma
from .evaluation import EvalHook
from .loop import Hook, StepOutput, TrainLoop, planned_steps, resume_and_run
from .metrics import MetricLogger
from .optim import build_optimizer, build_scheduler

__all__ = ["setup_run", "start_logger", "run_job", "with_evaluation", "run_command"]


def setup_run(run: RunConfig, info: DistInfo) -> torch.device:
    """This rank's device (``run.device``), its CPU thread count (``run.torch_threads``, CPU
    only) and its torch seed (``run.seed + rank``)."""
    device = resolve_device(run.device, info)
    if run.torch_threads > 0 and device.type == "cpu":
        torch.set_num_threads(run.torch_threads)
    torch.manual_seed(run.seed + info.rank)
    return device


def start_logger(cfg: Any, info: DistInfo) -> MetricLogger:
    """The run's metric log in ``cfg.run.out_dir`` (written by the main rank, which also
    saves the resolved config there as ``config.json``)."""
    out_dir = Path(cfg.run.out_dir)
    logger = MetricLogger(out_dir, enabled=info.is_main, tensorboard=cfg.run.tensorboard)
    if info.is_main:
        save_config(cfg, out_dir / "config.json")
    return logger


def run_job(
    cfg: Any,
    *,
    info: DistInfo,
    device: torch.device,
    model: nn.Module,
    ddp_model: nn.Module,
    loader: Any,
    step_fn: Callable[[nn.Module, Any], StepOutput],
    hooks: list[Hook],
    logger: MetricLogger,
    extra_state: dict[str, Any],
    ema: ModelEma | None = None,
) -> dict[str, Any]:
    """Train ``ddp_model`` (wrapping ``model``) on ``loader`` with ``step_fn`` to the end of
    ``cfg.run``, resuming from ``cfg.run.resume``; the optimiser scales its rates to the
    global batch (``cfg.loader.batch_size`` × world size), the schedule spans the planned
    steps, and every checkpoint holds ``{"config": cfg as a dict, **extra_state}``.

    Returns:
        :func:`~.loop.resume_and_run`'s summary.
    """
    out_dir = Path(cfg.run.out_dir)
    optimizer = build_optimizer(cfg.optim, model, global_batch_size=cfg.loader.batch_size * info.world_size)
    total_steps = planned_steps(cfg.run, loader)
    scheduler = build_scheduler(cfg.schedule, optimizer, total_steps)
    checkpointer = Checkpointer(out_dir / "checkpoints", keep_last=cfg.run.keep_checkpoints, enabled=info.is_main)
    loop = TrainLoop(
        model=ddp_model, optimizer=optimizer, scheduler=scheduler, loader=loader, step_fn=step_fn, run=cfg.run, info=info,
        device=device, total_steps=total_steps, grad_clip_norm=cfg.optim.grad_clip_norm, ema=ema, logger=logger,
        checkpointer=checkpointer, hooks=hooks, extra_state={"config": to_dict(cfg), **extra_state},
    )  # fmt: skip
    return resume_and_run(loop, checkpointer, logger, cfg.run, out_dir)


def with_evaluation(result: dict[str, Any], eval_hook: EvalHook | None) -> dict[str, Any]:
    """``result`` plus ``eval`` (the last evaluation's metrics) and ``eval_history``."""
    return {
        **result,
        "eval": eval_hook.last_metrics if eval_hook else {},
        "eval_history": eval_hook.history if eval_hook else [],
    }


def run_command(
    command: str, args: Any, cfg: Any, train: Callable[[Any], dict[str, Any]], evaluate: Callable[[str, Any], dict[str, float]] | None
) -> int:
    """A ``decal train`` command over a loaded config: ``--print-config`` prints it,
    ``--eval-only`` prints ``evaluate(checkpoint, cfg)`` (``evaluate`` None: the command
    cannot evaluate), otherwise ``train(cfg)`` runs and its last evaluation and run directory
    are printed. Returns the exit status.

    Raises:
        SystemExit: ``--eval-only`` without ``--checkpoint`` or where ``evaluate`` is None.
    """
    if getattr(args, "print_config", False):
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if getattr(args, "eval_only", False):
        if evaluate is None or not args.checkpoint:
            raise SystemExit(f"decal train {command} --eval-only needs {'--checkpoint' if evaluate else '--finetune and --checkpoint'}")
        print(json.dumps(evaluate(args.checkpoint, cfg), indent=2))
        return 0
    result = train(cfg)
    if result.get("eval"):
        print(json.dumps({"step": result["step"], "eval": result["eval"]}, indent=2))
    print(f"decal train {command}: {result['step']} iterations, run directory {result['out_dir']}")
    return 0
