"""The CP² trainers: copy-paste contrastive pretraining and segmentation fine-tuning
(``decal train cp2`` and ``decal train cp2 --finetune``).

:func:`train` pretrains (:class:`~.config.CP2Config`):

1. join the DDP group when started by ``torchrun`` (one DALI shard per rank);
2. build decal's :class:`~decal.dali_pipes.cp2.loader.CP2Loader` over the image folder, or,
   with ``data.remote``, a ``RemoteLoader`` of the server's ``"cp2"`` pipeline over its
   registered folder ``data.remote_dataset`` (the same batches);
3. build :class:`~.model.CP2Model` (Quick Tuning: the backbone from ``model.backbone_weights``),
   DDP (buffers not broadcast: every rank enqueues the same all-gathered keys), the optimiser
   and schedule;
4. run :class:`~decal.trainers.common.loop.TrainLoop` (AMP on CUDA, progress, JSONL metrics,
   checkpoints with the key encoder, the queue and the loader position).

:func:`finetune` fine-tunes (:class:`~.config.CP2FinetuneConfig`): the pretrained query
encoder (backbone + ASPP) with a classifier instead of the projection, trained with
per-pixel cross-entropy on a COCO-style segmentation set and evaluated with mIoU.
:func:`evaluate_checkpoint` gives the mIoU of a fine-tuned checkpoint; :func:`main` is the CLI.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..common.checkpoint import load_checkpoint
from ..common.config import ConfigError, DataConfig, config_from_args, from_dict
from ..common.data import close_loader, loader_options, remote_loader, require_remote_pipeline, resolve_dataset_paths
from ..common.distributed import DistInfo, cleanup, init_distributed, resolve_device, wrap_model
from ..common.evaluation import EvalHook
from ..common.loop import Hook, StepOutput, TrainLoop
from ..common.job import run_command, run_job, setup_run, start_logger, with_evaluation
from .config import FINETUNE_PRESETS, PRESETS, CP2Config, CP2FinetuneConfig, SegModelConfig
from .model import CP2Model, build_cp2_model, build_segmenter
from .segmentation import SegmentationBatch, SegmentationLoader, SemanticCoco, evaluate_segmenter

__all__ = [
    "cp2_step",
    "segmentation_step",
    "train",
    "finetune",
    "evaluate_checkpoint",
    "load_segmenter",
    "load_cp2_config",
    "load_finetune_config",
    "main",
]


# --------------------------------------------------------------------------- steps


def cp2_step(device: torch.device) -> Callable[[nn.Module, Any], StepOutput]:
    """Forward of one :class:`~decal.dali_pipes.cp2.loader.CP2Batch` (``batch_size`` counts
    compositions: each is two views of a foreground pasted on two backgrounds)."""

    def step(model: nn.Module, batch: Any) -> StepOutput:
        out = model(
            batch.image_q.to(device, non_blocking=True),
            batch.image_k.to(device, non_blocking=True),
            batch.mask_q_feat.to(device, non_blocking=True),
            batch.mask_k_feat.to(device, non_blocking=True),
        )
        metrics = {k: v.detach() for k, v in out.items() if k != "loss"}
        return StepOutput(loss=out["loss"], metrics=metrics, batch_size=len(batch))

    return step


def segmentation_step(device: torch.device, ignore_index: int) -> Callable[[nn.Module, SegmentationBatch], StepOutput]:
    """Per-pixel cross-entropy, ignored pixels left out (mmseg ``CrossEntropyLoss``)."""

    def step(model: nn.Module, batch: SegmentationBatch) -> StepOutput:
        logits = model(batch.images.to(device, non_blocking=True))
        labels = batch.labels.to(device, non_blocking=True)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
        return StepOutput(loss=loss, batch_size=len(batch))

    return step


# --------------------------------------------------------------------------- shared setup


# --------------------------------------------------------------------------- pretraining


def pretraining_images(data: DataConfig) -> str:
    """The image folder of pretraining: ``data.train_images``, else decal's demo folder
    with ``data.use_sample``; "" when ``data.remote`` streams the pretraining set."""
    if data.remote:
        return ""
    if data.train_images:
        return data.train_images
    if data.use_sample:
        from decal.dali_pipes.folder.image_folder import ensure_demo_image_folder

        return str(ensure_demo_image_folder())
    raise ValueError("no training images: set data.train_images (--images DIR, any tree of images) or data.use_sample (--sample)")


def check_config(cfg: CP2Config, info: DistInfo) -> None:
    """Refuse configurations that cannot train correctly."""
    if cfg.loader.stride != cfg.model.output_stride:
        raise ConfigError(
            f"loader.stride ({cfg.loader.stride}) must equal model.output_stride ({cfg.model.output_stride}): "
            "the feature masks are sampled at the encoder's stride"
        )
    if info.distributed and not cfg.loader.drop_last:
        raise ConfigError(
            "CP² under DDP needs loader.drop_last = true: every rank's keys are gathered into the queue "
            "(and shuffled across ranks for BN), which needs the same batch size on every rank"
        )


def train(cfg: CP2Config, *, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Run CP² pretraining (see the module docstring).

    Returns:
        ``{"step", "epoch", "metrics" (last training window), "out_dir", "checkpoint"
        (latest), "resumed_from", "loop"}``.
    """
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    loader = None
    try:
        check_config(cfg, info)
        images = pretraining_images(cfg.data)
        device = setup_run(cfg.run, info)
        from decal.dali_pipes.cp2.loader import CP2Loader

        options = loader_options(cfg.loader, info, device)
        loader = remote_loader(cfg.data, options, pipeline="cp2", device=device) if cfg.data.remote else CP2Loader(images, **options)
        model: CP2Model = build_cp2_model(cfg.model, cfg.contrast).to(device)
        ddp_model = wrap_model(model, info, device, broadcast_buffers=False)
        logger = start_logger(cfg, info)
        return run_job(
            cfg, info=info, device=device, model=model, ddp_model=ddp_model, loader=loader, step_fn=cp2_step(device),
            hooks=list(hooks or []), logger=logger, extra_state={"trainer": "cp2", "images": images},
        )  # fmt: skip
    finally:
        close_loader(loader)
        cleanup(info)


# --------------------------------------------------------------------------- fine-tuning


def _segmentation_sets(cfg: CP2FinetuneConfig) -> tuple[DataConfig, SemanticCoco, SemanticCoco | None]:
    data = resolve_dataset_paths(cfg.data)
    require_remote_pipeline(data, "segmentation", "cp2 --finetune")
    if not data.train_annotations or not data.train_images:
        raise ValueError(
            "no training data: set data.train_annotations and data.train_images (--annotations/--images, "
            "a COCO-style json with instance masks) or data.use_sample (--sample)"
        )
    train_set = SemanticCoco(data.train_annotations, data.train_images, ignore_index=cfg.loader.ignore_index)
    val_set = None
    if cfg.eval.enabled and data.val_annotations and data.val_images:
        val_set = SemanticCoco(data.val_annotations, data.val_images, ignore_index=cfg.loader.ignore_index)
        if val_set.category_ids != train_set.category_ids:
            raise ValueError("the validation json must have the same categories as the training json")
    return data, train_set, val_set


def finetune(cfg: CP2FinetuneConfig, *, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Fine-tune a CP² encoder for semantic segmentation and report mIoU.

    Returns:
        as :func:`train`, plus ``"eval"`` (the last mIoU metrics) and ``"eval_history"``.
    """
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    try:
        device = setup_run(cfg.run, info)
        _, train_set, val_set = _segmentation_sets(cfg)
        num_classes = cfg.model.num_classes or train_set.num_classes
        if num_classes < train_set.num_classes:
            raise ConfigError(f"model.num_classes = {num_classes} but the training json has {train_set.num_classes} (with background)")
        loader = SegmentationLoader(train_set, cfg.loader, shard_id=info.rank, num_shards=info.world_size)
        model = build_segmenter(cfg.model, num_classes).to(device)
        if info.distributed and device.type == "cuda" and cfg.model.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp_model = wrap_model(model, info, device)
        out_dir = Path(cfg.run.out_dir)
        logger = start_logger(cfg, info)
        eval_hook = None
        all_hooks: list[Hook] = []
        if val_set is not None:
            base = cfg.eval.base_size or cfg.loader.base_size

            def evaluate(loop: TrainLoop) -> dict[str, float]:
                return evaluate_segmenter(
                    loop.model_without_ddp,
                    val_set,
                    device=loop.device,
                    base_size=base,
                    max_images=cfg.eval.max_images,
                    info=loop.info,
                    amp=cfg.run.amp,
                )

            eval_hook = EvalHook(evaluate, logger=logger, out_dir=out_dir, every_epochs=cfg.eval.every_epochs)
            all_hooks.append(eval_hook)
        all_hooks.extend(hooks or [])
        result = run_job(
            cfg, info=info, device=device, model=model, ddp_model=ddp_model, loader=loader,
            step_fn=segmentation_step(device, cfg.loader.ignore_index), hooks=all_hooks, logger=logger,
            extra_state={"trainer": "cp2-finetune", "num_classes": num_classes, "class_names": train_set.class_names},
        )  # fmt: skip
        return with_evaluation(result, eval_hook)
    finally:
        cleanup(info)


def load_segmenter(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A fine-tuned segmenter from a checkpoint of :func:`finetune`; returns ``(model, state)``."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if state.get("trainer") != "cp2-finetune":
        raise ValueError(f"{checkpoint} is not a fine-tuning checkpoint (trainer {state.get('trainer')!r})")
    model_cfg = from_dict(SegModelConfig, state["config"]["model"])
    model_cfg = replace(model_cfg, pretrained="", backbone_weights="")  # the checkpoint holds every weight
    model = build_segmenter(model_cfg, int(state["num_classes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def evaluate_checkpoint(checkpoint: str | Path, cfg: CP2FinetuneConfig) -> dict[str, float]:
    """mIoU of a fine-tuned checkpoint on ``cfg.data.val_*``."""
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    try:
        device = resolve_device(cfg.run.device, info)
        data = resolve_dataset_paths(cfg.data)
        if not data.val_annotations or not data.val_images:
            raise ValueError("evaluation needs data.val_annotations and data.val_images")
        model, state = load_segmenter(checkpoint, device)
        val_set = SemanticCoco(data.val_annotations, data.val_images, ignore_index=cfg.loader.ignore_index)
        if val_set.num_classes > int(state["num_classes"]):
            raise ValueError(f"the validation json has {val_set.num_classes} classes, the model {state['num_classes']}")
        return evaluate_segmenter(
            model,
            val_set,
            device=device,
            base_size=cfg.eval.base_size or cfg.loader.base_size,
            max_images=cfg.eval.max_images,
            info=info,
            amp=cfg.run.amp,
        )
    finally:
        cleanup(info)


# --------------------------------------------------------------------------- CLI


#: ``decal train cp2``'s own flags → config keys.
_MODEL_FLAGS = {"model": {"backbone_weights": "backbone_weights", "pretrained": "pretrained"}}


def load_cp2_config(args: argparse.Namespace) -> CP2Config:
    """The pretraining config from the parsed CLI arguments."""
    if getattr(args, "pretrained", None):
        raise SystemExit("decal train cp2: --pretrained is a fine-tuning flag (add --finetune)")
    return config_from_args(CP2Config, PRESETS, args, _MODEL_FLAGS)


def load_finetune_config(args: argparse.Namespace) -> CP2FinetuneConfig:
    """The fine-tuning config from the parsed CLI arguments."""
    return config_from_args(CP2FinetuneConfig, FINETUNE_PRESETS, args, _MODEL_FLAGS)


def main(args: argparse.Namespace) -> int:
    """``decal train cp2 [--finetune] ...``: pretrain, or fine-tune (and ``--eval-only`` a
    fine-tuned checkpoint)."""
    if getattr(args, "finetune", False):
        return run_command("cp2 --finetune", args, load_finetune_config(args), finetune, evaluate_checkpoint)
    return run_command("cp2", args, load_cp2_config(args), train, None)
