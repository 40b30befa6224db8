"""Optimiser and per-iteration learning-rate schedule from :class:`OptimConfig`/:class:`ScheduleConfig`.

The schedule is a ``LambdaLR`` stepped once per iteration: a linear warmup from
``warmup_factor`` to 1 over ``warmup_iters``, then either step decay (x ``gamma`` at each
milestone, given as fractions of the run), a half cosine to ``min_lr_factor``, or the "poly"
decay ``(1 - progress) ** power`` to ``min_lr_factor`` (DeepLab; mmseg's ``PolyLrUpdaterHook``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["scaled_lr", "build_optimizer", "lr_factor", "build_scheduler"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def scaled_lr(cfg: OptimConfig, global_batch_size: int) -> float:
    """``cfg.lr`` scaled linearly from ``cfg.base_batch_size`` to ``global_batch_size`` (if enabled)."""
    if not cfg.scale_lr:
        return cfg.lr
    return cfg.lr * global_batch_size / cfg.base_batch_size


def _param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    if decay_norm_and_bias:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES) or name.endswith("bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: OptimConfig, model: nn.Module, *, global_batch_size: int) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters of ``model``, at :func:`scaled_lr`."""
    lr = scaled_lr(cfg, global_batch_size)
    groups = _param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(cfg: ScheduleConfig, step: int, total_steps: int) -> float:
    """The multiplier of the base rate at iteration ``step`` (0-based) of ``total_steps``."""
    total = max(1, int(total_steps))
    factor = 1.0
    if cfg.name == "step":
        for milestone in sorted(cfg.milestones):
            if step >= int(round(milestone * total)):
                factor *= cfg.gamma
    elif cfg.name == "cosine":
        start = min(cfg.warmup_iters, total - 1)
        progress = min(1.0, max(0.0, (step - start) / max(1, total - start)))
        factor = cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif cfg.name == "poly":
        start = min(cfg.warmup_iters, total - 1)
        progress = min(1.0, max(0.0, (step - start) / max(1, total - start)))
        factor = cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * (1.0 - progress) ** cfg.power
    elif cfg.name != "constant":
        raise ValueError(f"unknown schedule {cfg.name!r}")
    if cfg.warmup_iters > 0 and step < cfg.warmup_iters:
        alpha = step / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1.0 - alpha) + alpha
    return factor


def build_scheduler(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` of :func:`lr_factor` (its state dict resumes it)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total_steps))


def trainable_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return (p for p in model.parameters() if p.requires_grad)
