"""The classification trainer: a torchvision ResNet on decal's CutMix batches (``decal train classify``).

:func:`train` runs a job from a :class:`~.config.ClassificationConfig`:

1. join the DDP group when started by ``torchrun`` (one DALI shard per rank);
2. build decal's :class:`~decal.dali_pipes.cutmix.loader.CutMixLoader` over the
   training ImageFolder (the server does not stream CutMix batches, so ``data.remote`` is
   refused with a clear error);
3. build the ResNet, the optional weight EMA, DDP, the optimiser and schedule;
4. run :class:`~decal.trainers.common.loop.TrainLoop` with soft-target cross-entropy
   ([CUTMIX]'s area-weighted loss) and top-1/top-5 evaluation on ``data.val_images``
   (every ``eval.every_epochs`` and at the end), resuming from a checkpoint when asked.

:func:`evaluate_checkpoint` evaluates a saved checkpoint; :func:`main` is the CLI entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..common.checkpoint import Checkpointer, load_checkpoint
from ..common.config import DataConfig, from_dict, load_config, save_config, to_dict
from ..common.data import loader_options, require_remote_pipeline
from ..common.distributed import DistInfo, cleanup, init_distributed, resolve_device, wrap_model
from ..common.ema import ModelEma
from ..common.evaluation import EvalHook
from ..common.loop import Hook, StepOutput, TrainLoop, planned_steps, resume_and_run
from ..common.metrics import MetricLogger
from ..common.optim import build_optimizer, build_scheduler
from .config import PRESETS, ClassificationConfig, ModelConfig
from .evaluate import evaluate_classifier
from .losses import soft_target_cross_entropy
from .model import build_classifier

__all__ = ["classification_step", "train", "evaluate_checkpoint", "load_classifier", "load_classification_config", "main"]


def classification_step(device: torch.device) -> Callable[[nn.Module, Any], StepOutput]:
    """Forward + soft-target cross-entropy of one ``ClassificationBatch``.

    Besides the loss it logs ``lam`` (the mean kept area) and ``target_entropy`` (the mean
    entropy of the soft targets: the loss's floor, so ``loss - target_entropy`` is the KL
    divergence still to learn, a less noisy view of progress under CutMix).
    """

    def step(model: nn.Module, batch: Any) -> StepOutput:
        logits = model(batch.images.to(device, non_blocking=True))
        targets = batch.targets.to(device, non_blocking=True).float()
        loss = soft_target_cross_entropy(logits.float(), targets)
        with torch.no_grad():
            entropy = -(targets * targets.clamp(min=1e-12).log()).sum(dim=1).mean()
        metrics = {"lam": float(batch.lam.float().mean()), "target_entropy": entropy}
        return StepOutput(loss=loss, metrics=metrics, batch_size=len(batch))

    return step


def _folders(data: DataConfig) -> tuple[str, str]:
    """(training folder, evaluation folder or ""): the configured ones, else the demo folder
    with ``data.use_sample``."""
    require_remote_pipeline(data, "cutmix", "classify")
    train_root, val_root = data.train_images, data.val_images
    if data.use_sample and (not train_root or not val_root):
        from decal.dali_pipes.folder.image_folder import ensure_demo_image_folder

        demo = str(ensure_demo_image_folder())
        train_root, val_root = train_root or demo, val_root or demo
    if not train_root:
        raise ValueError("no training images: set data.train_images (--images DIR, an ImageFolder) or data.use_sample (--sample)")
    return train_root, val_root


def train(cfg: ClassificationConfig, *, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Run the classification job described by ``cfg`` (see the module docstring).

    Returns:
        ``{"step", "epoch", "metrics" (last training window), "eval" (last evaluation),
        "eval_history", "out_dir", "checkpoint" (latest), "resumed_from", "loop"}``.
    """
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    try:
        return _train(cfg, info, list(hooks or []))
    finally:
        cleanup(info)


def _train(cfg: ClassificationConfig, info: DistInfo, extra_hooks: list[Hook]) -> dict[str, Any]:
    train_root, val_root = _folders(cfg.data)
    device = resolve_device(cfg.run.device, info)
    if cfg.run.torch_threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.run.torch_threads)
    torch.manual_seed(cfg.run.seed + info.rank)

    from decal.dali_pipes.cutmix.loader import CutMixLoader

    options = loader_options(cfg.loader, info, device)
    if options.get("device") is None and device.type == "cpu":
        options["device"] = "cpu"
    if cfg.model.num_classes:
        options["num_classes"] = cfg.model.num_classes
    loader = CutMixLoader(train_root, **options)
    num_classes, class_names = loader.num_classes, loader.classes
    model = build_classifier(cfg.model, num_classes).to(device)
    if info.distributed and device.type == "cuda" and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEma(model, cfg.ema.decay, warmup=cfg.ema.warmup) if cfg.ema.enabled else None
    ddp_model = wrap_model(model, info, device)
    optimizer = build_optimizer(cfg.optim, model, global_batch_size=cfg.loader.batch_size * info.world_size)
    total_steps = planned_steps(cfg.run, loader)
    scheduler = build_scheduler(cfg.schedule, optimizer, total_steps)
    out_dir = Path(cfg.run.out_dir)
    logger = MetricLogger(out_dir, enabled=info.is_main, tensorboard=cfg.run.tensorboard)
    if info.is_main:
        save_config(cfg, out_dir / "config.json")

    hooks: list[Hook] = []
    eval_hook = None
    if cfg.eval.enabled and val_root:

        def evaluate(loop: TrainLoop) -> dict[str, float]:
            model = loop.eval_model if (cfg.ema.enabled and cfg.ema.evaluate_ema) else loop.model_without_ddp
            return evaluate_classifier(
                model,
                val_root,
                class_names,
                image_size=cfg.loader.output_size,
                crop_pct=cfg.eval.crop_pct,
                mean=cfg.loader.mean,
                std=cfg.loader.std,
                batch_size=cfg.eval.batch_size,
                num_workers=cfg.eval.num_workers,
                max_images=cfg.eval.max_images,
                device=loop.device,
                info=loop.info,
                amp=cfg.run.amp,
            )

        eval_hook = EvalHook(evaluate, logger=logger, out_dir=out_dir, every_epochs=cfg.eval.every_epochs)
        hooks.append(eval_hook)
    hooks.extend(extra_hooks)
    checkpointer = Checkpointer(out_dir / "checkpoints", keep_last=cfg.run.keep_checkpoints, enabled=info.is_main)
    loop = TrainLoop(
        model=ddp_model,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        step_fn=classification_step(device),
        run=cfg.run,
        info=info,
        device=device,
        total_steps=total_steps,
        grad_clip_norm=cfg.optim.grad_clip_norm,
        ema=ema,
        logger=logger,
        checkpointer=checkpointer,
        hooks=hooks,
        extra_state={"config": to_dict(cfg), "classes": class_names, "num_classes": num_classes, "trainer": "classification"},
    )
    result = resume_and_run(loop, checkpointer, logger, cfg.run, out_dir)
    return {
        **result,
        "eval": eval_hook.last_metrics if eval_hook else {},
        "eval_history": eval_hook.history if eval_hook else [],
    }


def load_classifier(checkpoint: str | Path, *, prefer_ema: bool = True, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint of :func:`train` (its EMA weights when present and
    ``prefer_ema``); returns ``(model, state)``."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("trainer") != "classification":
        raise ValueError(f"{checkpoint} is not a classification checkpoint (trainer {state.get('trainer')!r})")
    model_cfg = from_dict(ModelConfig, {**state["config"]["model"], "weights": ""})
    model = build_classifier(model_cfg, int(state["num_classes"]))
    weights = state["model"]
    if prefer_ema and state.get("ema"):
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    model.load_state_dict(weights)
    return model.to(device).eval(), state


def evaluate_checkpoint(checkpoint: str | Path, cfg: ClassificationConfig, *, use_ema: bool = True) -> dict[str, float]:
    """Top-1/top-5 of a saved checkpoint on ``cfg.data.val_images`` (or the demo folder with ``use_sample``)."""
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    try:
        device = resolve_device(cfg.run.device, info)
        _, val_root = _folders(cfg.data)
        if not val_root:
            raise ValueError("evaluation needs data.val_images (--val-images)")
        model, state = load_classifier(checkpoint, prefer_ema=use_ema, device=device)
        return evaluate_classifier(
            model,
            val_root,
            state["classes"],
            image_size=cfg.loader.output_size,
            crop_pct=cfg.eval.crop_pct,
            mean=cfg.loader.mean,
            std=cfg.loader.std,
            batch_size=cfg.eval.batch_size,
            num_workers=cfg.eval.num_workers,
            max_images=cfg.eval.max_images,
            device=device,
            info=info,
            amp=cfg.run.amp,
        )
    finally:
        cleanup(info)


# --------------------------------------------------------------------------- CLI


def load_classification_config(args: argparse.Namespace) -> ClassificationConfig:
    """The config of ``decal train classify`` from its parsed arguments."""
    from ..common.config import common_updates

    updates = common_updates(args)
    model: dict[str, Any] = {}
    if getattr(args, "depth", None):
        model["depth"] = args.depth
    if getattr(args, "weights", None):
        model["weights"] = args.weights
    if model:
        updates["model"] = model
    return load_config(ClassificationConfig, args.config, presets=PRESETS, preset=args.preset, overrides=args.set or (), updates=updates)


def main(args: argparse.Namespace) -> int:
    """``decal train classify ...``: train (default) or ``--eval-only`` a checkpoint."""
    cfg = load_classification_config(args)
    if getattr(args, "print_config", False):
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if getattr(args, "eval_only", False):
        if not args.checkpoint:
            raise SystemExit("decal train classify --eval-only needs --checkpoint")
        print(json.dumps(evaluate_checkpoint(args.checkpoint, cfg), indent=2))
        return 0
    result = train(cfg)
    if result.get("eval"):
        print(json.dumps({"step": result["step"], "eval": result["eval"]}, indent=2))
    print(f"decal train classify: {result['step']} iterations, run directory {result['out_dir']}")
    return 0
