"""The detection trainer: Mask R-CNN on decal's Copy-Paste batches (``decal train detection``).

:func:`train` runs a whole job from a :class:`~.config.DetectionConfig`:

1. join the DDP group when started by ``torchrun`` (one DALI shard per rank);
2. optionally pseudo-label an unlabelled folder with a teacher and merge it into the
   training json (self-training Copy-Paste);
3. build the loader (local :class:`~decal.CopyPasteLoader`, or ``RemoteLoader`` with
   ``data.remote``), the label map, the model (+ Seesaw, FASA), the optional EMA, DDP, the
   optimiser and schedule;
4. run :class:`~decal.trainers.common.loop.TrainLoop` with the evaluation hook (COCOeval on
   ``data.val_*``) and FASA's per-epoch hook, resuming from a checkpoint when asked.

:func:`evaluate_checkpoint` evaluates a saved checkpoint; :func:`main` is the CLI entry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..common.config import DataConfig, config_from_args
from ..common.data import build_loader, close_loader, loader_options, read_categories, resolve_dataset_paths
from ..common.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    in_process_group,
    init_distributed,
    resolve_device,
    unwrap_model,
    wrap_model,
)
from ..common.ema import ModelEma
from ..common.evaluation import EvalHook as CommonEvalHook
from ..common.loop import Hook, TrainLoop
from ..common.job import run_command, run_job, setup_run, start_logger, with_evaluation
from ..common.metrics import MetricLogger
from .config import PRESETS, DetectionConfig
from .evaluate import evaluate_detector
from .labels import LabelMap, image_counts, instance_counts, records_from_json
from .model import build_detector, detection_step, prepare_batch
from .pseudo_label import load_detector, merge_coco, pseudo_label_folder

__all__ = ["train", "evaluate_checkpoint", "EvalHook", "FasaHook", "load_detection_config", "main"]


# --------------------------------------------------------------------------- hooks


class EvalHook(CommonEvalHook):
    """COCO evaluation every ``cfg.eval.every_epochs`` epochs and at the end of training
    (:class:`~decal.trainers.common.evaluation.EvalHook` with the detector's evaluation).

    Evaluates the EMA weights when the loop has an EMA and ``evaluate_ema``; logs the
    metrics (split ``"eval"``) and writes ``<out_dir>/eval/step_<n>.json`` (main rank).
    """

    def __init__(self, cfg: DetectionConfig, data: DataConfig, label_map: LabelMap, logger: MetricLogger) -> None:
        self.cfg = cfg
        self.data = data
        self.label_map = label_map
        super().__init__(self._coco_metrics, logger=logger, out_dir=cfg.run.out_dir, every_epochs=cfg.eval.every_epochs)

    def _coco_metrics(self, loop: TrainLoop) -> dict[str, float]:
        cfg = self.cfg
        model = loop.eval_model if (cfg.ema.enabled and cfg.ema.evaluate_ema) else loop.model_without_ddp
        return _evaluate(cfg, model, self.data, self.label_map, loop.device, loop.info)


def _evaluate(
    cfg: DetectionConfig, model: nn.Module, data: DataConfig, label_map: LabelMap, device: torch.device, info: DistInfo
) -> dict[str, float]:
    """COCO metrics of ``model`` on ``data.val_*`` with ``cfg.eval``'s settings."""
    return evaluate_detector(
        model, data.val_annotations, data.val_images, label_map, device=device, batch_size=cfg.eval.batch_size,
        max_images=cfg.eval.max_images, max_dets=cfg.eval.max_dets, score_thresh=cfg.eval.score_thresh,
        mask_threshold=cfg.eval.mask_threshold, iou_types=cfg.eval.iou_types, info=info, progress=cfg.run.progress,
    )  # fmt: skip


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """The model in training mode (so it computes losses) with BatchNorm frozen and no
    gradients: how FASA's validation pass measures per-class losses."""
    was_training = model.training
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class FasaHook(Hook):
    """FASA's epoch bookkeeping: tell the module the epoch; after each epoch, run the
    validation pass, sum the per-class losses over ranks, and adapt p_c."""

    name = "fasa"

    def __init__(self, cfg: DetectionConfig, data: DataConfig, label_map: LabelMap, logger: MetricLogger) -> None:
        self.cfg = cfg
        self.label_map = label_map
        self.logger = logger
        self.annotations = cfg.fasa.val_annotations or data.val_annotations
        self.images = cfg.fasa.val_images or data.val_images
        self._loader: Any = None
        self.history: list[dict[str, Any]] = []

    @staticmethod
    def fasa_of(loop: TrainLoop):
        return unwrap_model(loop.model).roi_heads.fasa

    def before_epoch(self, loop: TrainLoop, epoch: int) -> None:
        self.fasa_of(loop).set_epoch(epoch)

    def _val_loader(self, loop: TrainLoop) -> Any:
        if self._loader is None:
            from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

            loader_cfg = self.cfg.loader
            self._loader = CopyPasteLoader(
                self.annotations,
                self.images,
                batch_size=self.cfg.eval.batch_size,
                output_size=loader_cfg.output_size,
                jitter="none",
                flip_prob=0.0,
                copy_paste=False,
                shuffle=False,
                pad_value=loader_cfg.pad_value,
                seed=loader_cfg.seed,
                shard_id=loop.info.rank,
                num_shards=loop.info.world_size,
                device=loader_cfg.device or ("cpu" if loop.device.type == "cpu" else None),
                device_id=(loop.device.index or 0) if loop.device.type == "cuda" else 0,
                num_threads=loader_cfg.num_threads,
                prefetch_queue_depth=loader_cfg.prefetch_queue_depth,
            )
        return self._loader

    def after_epoch(self, loop: TrainLoop, epoch: int) -> None:
        if not (self.cfg.fasa.adapt and self.annotations and self.images):
            return
        model = unwrap_model(loop.model)
        fasa = model.roi_heads.fasa
        fasa.begin_validation()
        batches = 0
        try:
            with loss_mode(model):
                for batch in self._val_loader(loop):
                    images, targets = prepare_batch(batch, self.label_map, loop.device)
                    model(images, targets)
                    batches += 1
                    if 0 < self.cfg.fasa.val_max_batches <= batches:
                        break
        finally:
            fasa.end_validation()
        loss_sum = all_reduce_sum(fasa.val_loss_sum.clone(), loop.info)
        count = all_reduce_sum(fasa.val_count.clone(), loop.info)
        share = fasa.adapt(loss_sum, count)
        prob = fasa.prob[1:]
        record = {
            "fasa/prob_mean": float(prob.mean()),
            "fasa/prob_min": float(prob.min()),
            "fasa/prob_max": float(prob.max()),
            "fasa/val_loss": float(loss_sum.sum() / count.sum().clamp(min=1)),
            "fasa/val_rois": float(count.sum()),
        }
        self.history.append({"epoch": epoch, "prob": fasa.prob.tolist(), "share": share.tolist()})
        self.logger.log("fasa", loop.step, record, epoch=epoch)

    def after_train(self, loop: TrainLoop) -> None:
        """Close the validation loader (its DALI pipeline) with the run."""
        loader, self._loader = self._loader, None
        if loader is not None:
            close_loader(loader)


# --------------------------------------------------------------------------- the job


def _self_training_data(cfg: DetectionConfig, data: DataConfig, info: DistInfo, device: torch.device) -> DataConfig:
    """Pseudo-label the unlabelled folder (main rank), merge it with the labelled json, and
    return the data config that trains on the mix."""
    st = cfg.self_training
    if not st.teacher_checkpoint or not st.unlabeled_images:
        raise ValueError("self_training needs teacher_checkpoint and unlabeled_images")
    if data.remote:
        raise ValueError("self-training builds a local json; it cannot be combined with data.remote")
    if not data.train_annotations:
        raise ValueError("self-training needs the labelled training json (data.train_annotations)")
    out_dir = Path(st.output_dir or Path(cfg.run.out_dir) / "self_training")
    pseudo_json = out_dir / "pseudo_labels.json"
    mixed_json = out_dir / "train_mixed.json"
    root = os.path.commonpath([str(Path(data.train_images).resolve()), str(Path(st.unlabeled_images).resolve())])
    mixed = replace(data, train_annotations=str(mixed_json), train_images=root)
    if cfg.run.resume and mixed_json.is_file():
        return mixed  # a resumed run trains on the json it started with (loader positions refer to it)
    teacher, teacher_labels, _ = load_detector(st.teacher_checkpoint, device=device, prefer_ema=True)
    summary = pseudo_label_folder(  # every rank labels its share of the images
        teacher,
        st.unlabeled_images,
        teacher_labels,
        pseudo_json,
        device=device,
        score_threshold=st.score_threshold,
        mask_threshold=st.mask_threshold,
        batch_size=st.batch_size,
        max_images=st.max_images,
        progress=cfg.run.progress,
        info=info,
    )
    del teacher
    if info.is_main:
        merge_coco([(data.train_annotations, data.train_images), (pseudo_json, st.unlabeled_images)], mixed_json)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    barrier(info)
    return mixed


def train(cfg: DetectionConfig, *, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Run the detection training job described by ``cfg`` (see the module docstring).

    Args:
        cfg: the configuration.
        hooks: extra loop hooks (called after the trainer's own).

    Returns:
        ``{"step", "epoch", "metrics" (last training window), "eval" (last evaluation),
        "eval_history", "out_dir", "checkpoint" (latest), "resumed_from", "loop" (the
        :class:`TrainLoop`, for inspection)}``.
    """
    return in_process_group(cfg.run, lambda info: _train(cfg, info, list(hooks or [])))


def _train(cfg: DetectionConfig, info: DistInfo, extra_hooks: list[Hook]) -> dict[str, Any]:
    device = setup_run(cfg.run, info)
    data = resolve_dataset_paths(cfg.data)
    if cfg.self_training.enabled:
        data = _self_training_data(cfg, data, info, device)

    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    options = loader_options(cfg.loader, info, device)
    loader = build_loader(data, options, local_factory=CopyPasteLoader, device=device)
    try:
        return _train_with(cfg, info, extra_hooks, device, data, loader)
    finally:
        close_loader(loader)


def _train_with(
    cfg: DetectionConfig, info: DistInfo, extra_hooks: list[Hook], device: torch.device, data: DataConfig, loader: Any
) -> dict[str, Any]:
    out_dir = Path(cfg.run.out_dir)
    label_map = LabelMap.from_categories(read_categories(loader, data.train_annotations))
    records = getattr(getattr(loader, "dataset", None), "records", None)
    if records is None and data.train_annotations and cfg.fasa.enabled:
        records = records_from_json(data.train_annotations)  # remote: class counts from the local json
    model = build_detector(
        cfg,
        label_map,
        instance_counts=instance_counts(label_map, records),
        image_counts=image_counts(label_map, records),
    ).to(device)
    if info.distributed and device.type == "cuda" and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEma(model, cfg.ema.decay, warmup=cfg.ema.warmup) if cfg.ema.enabled else None
    ddp_model = wrap_model(model, info, device)
    logger = start_logger(cfg, info)
    if info.is_main:
        (out_dir / "categories.json").write_text(json.dumps(label_map.state(), indent=2))

    hooks: list[Hook] = []
    eval_hook = None
    if cfg.fasa.enabled:
        hooks.append(FasaHook(cfg, data, label_map, logger))
    if cfg.eval.enabled and data.val_annotations and data.val_images:
        eval_hook = EvalHook(cfg, data, label_map, logger)
        hooks.append(eval_hook)
    hooks.extend(extra_hooks)
    result = run_job(
        cfg, info=info, device=device, model=model, ddp_model=ddp_model, loader=loader,
        step_fn=detection_step(label_map, device), hooks=hooks, logger=logger, ema=ema,
        extra_state={"categories": label_map.state(), "trainer": "detection"},
    )  # fmt: skip
    return with_evaluation(result, eval_hook)


def evaluate_checkpoint(
    checkpoint: str | Path, cfg: DetectionConfig, *, use_ema: bool = True
) -> dict[str, float]:
    """COCO metrics of a saved checkpoint on ``cfg.data.val_*`` with ``cfg.eval`` settings."""
    info = init_distributed(cfg.run.dist_backend, cfg.run.device)
    try:
        device = resolve_device(cfg.run.device, info)
        data = resolve_dataset_paths(cfg.data)
        if not data.val_annotations:
            raise ValueError("evaluation needs data.val_annotations and data.val_images")
        model, label_map, _ = load_detector(checkpoint, device=device, prefer_ema=use_ema)
        return _evaluate(cfg, model, data, label_map, device, info)
    finally:
        cleanup(info)


# --------------------------------------------------------------------------- CLI


def load_detection_config(args: argparse.Namespace) -> DetectionConfig:
    """The config of ``decal train detection`` from its parsed arguments (see
    :func:`decal.trainers.cli.add_train_parser`)."""
    own = {"self_training": {"self_training": "enabled", "teacher": "teacher_checkpoint", "unlabeled": "unlabeled_images"}}
    return config_from_args(DetectionConfig, PRESETS, args, own)


def main(args: argparse.Namespace) -> int:
    """``decal train detection ...``: train (default) or ``--eval-only`` a checkpoint."""
    return run_command("detection", args, load_detection_config(args), train, evaluate_checkpoint)
