"""The classification trainer: a torchvision ResNet on decal's CutMix batches (``decal train classify``).

:func:`train` runs a job from a :class:`~.config.ClassificationConfig`:

1. join the DDP group when started by ``torchrun`` (one DALI shard per rank);
2. build decal's :class:`~decal.dali_pipes.cutmix.loader.CutMixLoader` over the
   training ImageFolder, or, with ``data.remote``, a ``RemoteLoader`` of the server's
   ``"cutmix"`` pipeline over its registered folder ``data.remote_dataset`` (the same
   batches; the class names come from the stream);
3. build the ResNet, the optional weight EMA, DDP, the optimiser and schedule;
4. run :class:`~decal.trainers.common.loop.TrainLoop` with soft-target cross-entropy
   ([CUTMIX]'s area-weighted loss) and top-1/top-5 evaluation on ``data.val_images``
   (every ``eval.every_epochs`` and at the end), resuming from a checkpoint when asked.

:func:`evaluate_checkpoint` evaluates a saved checkpoint; :func:`main` is the CLI entry.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..common.checkpoint import load_checkpoint
from ..common.config import DataConfig, config_from_args, from_dict
from ..common.data import close_loader, loader_options, remote_loader
from ..common.distributed import DistInfo, cleanup, in_process_group, init_distributed, resolve_device, wrap_model
from ..common.ema import ModelEma
from ..common.evaluation import EvalHook
from ..common.loop import Hook, StepOutput, TrainLoop
from ..common.job import run_command, run_job, setup_run, start_logger, with_evaluation
from .config import PRESETS, ClassificationConfig, ModelConfig
from .evaluate import EvalFolder, evaluate_classifier
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
    """(training folder or "" when ``data.remote`` streams the training set, evaluation
    folder or ""): the configured ones, else the demo folder with ``data.use_sample``."""
    train_root, val_root = ("" if data.remote else data.train_images), data.val_images
    if data.use_sample and (not train_root or not val_root):
        from decal.dali_pipes.folder.image_folder import ensure_demo_image_folder

        demo = str(ensure_demo_image_folder())
        train_root, val_root = train_root or ("" if data.remote else demo), val_root or demo
    if not train_root and not data.remote:
        raise ValueError("no training images: set data.train_images (--images DIR, an ImageFolder) or data.use_sample (--sample)")
    return train_root, val_root


def train(cfg: ClassificationConfig, *, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Run the classification job described by ``cfg`` (see the module docstring).

    Returns:
        ``{"step", "epoch", "metrics" (last training window), "eval" (last evaluation),
        "eval_history", "out_dir", "checkpoint" (latest), "resumed_from", "loop"}``.
    """
    return in_process_group(cfg.run, lambda info: _train(cfg, info, list(hooks or [])))


def _train(cfg: ClassificationConfig, info: DistInfo, extra_hooks: list[Hook]) -> dict[str, Any]:
    train_root, val_root = _folders(cfg.data)
    device = setup_run(cfg.run, info)
    from decal.dali_pipes.cutmix.loader import CutMixLoader

    options = loader_options(cfg.loader, info, device)
    if cfg.model.num_classes:
        options["num_classes"] = cfg.model.num_classes
    if cfg.data.remote:
        loader = remote_loader(cfg.data, options, pipeline="cutmix", device=device)
        class_names = [category["name"] for _, category in sorted(loader.categories.items())]
        num_classes = options.get("num_classes") or len(class_names)
    else:
        loader = CutMixLoader(train_root, **options)
        num_classes, class_names = loader.num_classes, loader.classes
    try:
        return _train_with(cfg, info, extra_hooks, device, loader, num_classes, class_names, val_root)
    finally:
        close_loader(loader)


def _train_with(
    cfg: ClassificationConfig,
    info: DistInfo,
    extra_hooks: list[Hook],
    device: torch.device,
    loader: Any,
    num_classes: int,
    class_names: list[str],
    val_root: str,
) -> dict[str, Any]:
    model = build_classifier(cfg.model, num_classes).to(device)
    if info.distributed and device.type == "cuda" and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEma(model, cfg.ema.decay, warmup=cfg.ema.warmup) if cfg.ema.enabled else None
    ddp_model = wrap_model(model, info, device)
    out_dir = Path(cfg.run.out_dir)
    logger = start_logger(cfg, info)

    hooks: list[Hook] = []
    eval_hook = None
    if cfg.eval.enabled and val_root:

        def evaluate(loop: TrainLoop) -> dict[str, float]:
            model = loop.eval_model if (cfg.ema.enabled and cfg.ema.evaluate_ema) else loop.model_without_ddp
            return _evaluate(cfg, model, val_root, class_names, loop.device, loop.info)

        eval_hook = EvalHook(evaluate, logger=logger, out_dir=out_dir, every_epochs=cfg.eval.every_epochs)
        hooks.append(eval_hook)
    hooks.extend(extra_hooks)
    result = run_job(
        cfg, info=info, device=device, model=model, ddp_model=ddp_model, loader=loader, step_fn=classification_step(device),
        hooks=hooks, logger=logger, ema=ema,
        extra_state={"classes": class_names, "num_classes": num_classes, "trainer": "classification"},
    )  # fmt: skip
    return with_evaluation(result, eval_hook)


def _evaluate(
    cfg: ClassificationConfig, model: nn.Module, val_root: str, class_names: list[str], device: torch.device, info: DistInfo
) -> dict[str, float]:
    """Top-1/top-5 of ``model`` on the folder ``val_root`` with ``cfg.eval``'s centre crop at
    the training size and normalisation."""
    folder = EvalFolder(
        val_root, class_names, image_size=cfg.loader.output_size, crop_pct=cfg.eval.crop_pct,
        mean=cfg.loader.mean, std=cfg.loader.std,
    )  # fmt: skip
    return evaluate_classifier(
        model, folder, batch_size=cfg.eval.batch_size, num_workers=cfg.eval.num_workers,
        max_images=cfg.eval.max_images, device=device, info=info, amp=cfg.run.amp,
    )  # fmt: skip


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
        return _evaluate(cfg, model, val_root, state["classes"], device, info)
    finally:
        cleanup(info)


# --------------------------------------------------------------------------- CLI


def load_classification_config(args: argparse.Namespace) -> ClassificationConfig:
    """The config of ``decal train classify`` from its parsed arguments."""
    return config_from_args(ClassificationConfig, PRESETS, args, {"model": {"depth": "depth", "weights": "weights"}})


def main(args: argparse.Namespace) -> int:
    """``decal train classify ...``: train (default) or ``--eval-only`` a checkpoint."""
    return run_command("classify", args, load_classification_config(args), train, evaluate_checkpoint)
