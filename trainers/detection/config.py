"""Configuration of the detection trainer (Mask R-CNN with Copy-Paste), with the papers' defaults.

References:
    [CP]     Ghiasi et al. 2021, "Simple Copy-Paste is a Strong Data Augmentation Method for
             Instance Segmentation", CVPR (§4.1 training details: 1024×1024 input with LSJ,
             global batch 256, SGD momentum 0.9, lr 0.32, weight decay 4e-5, linear warmup
             for 1000 steps, lr ×0.1 at 0.9/0.95/0.975 of training, synchronised BN, models
             trained from scratch). mmdetection's port (``configs/simple_copy_paste``,
             ``configs/common/ssj_270k_coco-instance.py``) uses the same decay points, warmup
             start factor 0.001, and 270k iterations at batch 64 ≈ 144 COCO epochs.
    [TV]     torchvision ``maskrcnn_resnet50_fpn`` (He et al. 2017 Mask R-CNN; Lin et al. 2017
             FPN): RPN 256 anchors/image, 512 RoIs/image with 25 % positives, score threshold
             0.05, NMS 0.5, 100 detections/image, anchor sizes 32–512.
    [LVIS]   Gupta et al. 2019, LVIS: frequency groups r/c/f, 300 detections per image and a
             score threshold of 1e-4 at evaluation (mmdetection's LVIS configs).
    [SEESAW] Wang et al. 2021, "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR;
             mmdetection ``SeesawLoss`` and its LVIS config (p 0.8, q 2.0, NormedLinear with
             temperature 20).
    [FASA]   Zang, Huang & Loy 2021, "FASA: Feature Augmentation and Sampling Adaptation for
             Long-Tailed Instance Segmentation", ICCV; github.com/yuhangzang/FASA.
    [ST]     Zoph et al. 2020, "Rethinking Pre-training and Self-training", NeurIPS (hard
             pseudo-labels above a score of 0.5), used with Copy-Paste in [CP] §4.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from decal.dali_pipes.copy_paste.loader import CopyPasteLoaderConfig

from ..common.config import DataConfig, EmaConfig, OptimConfig, RunConfig, ScheduleConfig

__all__ = [
    "ModelConfig",
    "SeesawConfig",
    "FasaConfig",
    "EvalConfig",
    "SelfTrainingConfig",
    "DetectionConfig",
    "PRESETS",
]


@dataclass
class ModelConfig:
    """torchvision Mask R-CNN with a ResNet-FPN backbone ([TV]).

    The defaults build exactly torchvision's ``maskrcnn_resnet50_fpn(weights=None,
    weights_backbone=None)`` (same parameter names, so its checkpoints load), with
    ``min_size = max_size =`` the loader's output size: decal's batches are already S×S
    after scale jitter, so torchvision's internal resize must be the identity (its default
    800/1333 would rescale every batch). At evaluation the same setting resizes the longer
    side of each original image to S, the scale of an un-jittered training image.

    Attributes:
        backbone: torchvision ResNet depth (``resnet50`` in [CP]/[TV]; ``resnet18`` for the
            tiny CPU configuration).
        variant: ``"v1"``: torchvision's original heads (2-fc box head, no norm);
            ``"v2"``: heads with BatchNorm (4 conv + 1 fc box head, 2-conv RPN head, BN in
            the FPN), as ``maskrcnn_resnet50_fpn_v2`` and closer to [CP]'s setup.
        weights: a local full Mask R-CNN checkpoint (torchvision's or this trainer's); layers
            whose shapes differ (the class-specific ones) are skipped. Never downloaded.
        backbone_weights: a local ImageNet ResNet state dict for the backbone (``fc.*`` ignored).
        trainable_backbone_layers: 0–5 ResNet stages to train; None = torchvision's rule
            (5 from scratch, 3 with backbone weights).
        frozen_bn: FrozenBatchNorm in the backbone; None = torchvision's v1 rule (frozen
            exactly when backbone weights are given).
        sync_bn: convert BatchNorm to SyncBatchNorm under DDP on CUDA ([CP]: synchronised BN).
        fpn_channels: FPN width (256).
        representation_size: box-head feature size (1024).
        mask_head_channels: mask-head conv width (256).
        anchor_sizes: one anchor size per FPN level, px (32, 64, 128, 256, 512).
        min_size, max_size: torchvision's transform sizes; 0 = the loader's output size.
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss (256).
        box_batch_size_per_image: RoIs sampled per image for the box head (512).
        box_positive_fraction: positive share of those RoIs (0.25).
        box_score_thresh: detection score threshold at inference (0.05).
        box_nms_thresh: per-class NMS IoU at inference (0.5).
        box_detections_per_img: detections kept per image (100).
    """

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] = "resnet50"
    variant: Literal["v1", "v2"] = "v1"
    weights: str = ""
    backbone_weights: str = ""
    trainable_backbone_layers: int | None = None
    frozen_bn: bool | None = None
    sync_bn: bool = True
    fpn_channels: int = 256
    representation_size: int = 1024
    mask_head_channels: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    min_size: int = 0
    max_size: int = 0
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100


@dataclass
class SeesawConfig:
    """Seesaw loss for the box classifier ([SEESAW]); off by default.

    Attributes:
        enabled: replace the classifier's cross-entropy by Seesaw loss (+ objectness).
        p: mitigation exponent (0.8).
        q: compensation exponent (2.0).
        eps: probability floor of the compensation ratio (1e-2).
        loss_weight: weight of both Seesaw terms (1.0).
        normed_classifier: cosine (NormedLinear) classifier, as mmdetection's Seesaw config.
        temperature: its temperature (20).
    """

    enabled: bool = False
    p: float = 0.8
    q: float = 2.0
    eps: float = 1e-2
    loss_weight: float = 1.0
    normed_classifier: bool = True
    temperature: float = 20.0


@dataclass
class FasaConfig:
    """FASA ([FASA]); off by default. See :mod:`decal.trainers.detection.fasa`.

    Attributes:
        enabled: class-wise feature statistics + virtual features + sampling adaptation.
        momentum: running mean/variance momentum (0.1).
        loss_weight: weight of the virtual features' classification loss (0.1).
        prob_power, prob_scale: initial p_c = scale · (inverse frequency, normalised) ** power (1, 1).
        up, down: p_c factors when a group's validation loss share fell / rose (1.1, 0.9).
        start_epoch: first epoch with virtual features (1 = after one epoch of statistics).
        grouping: ``"none"`` (each class adapts alone) or ``"frequency"`` (LVIS r/c/f groups,
            from the json's ``frequency`` tags or from training image counts).
        adapt: run the per-epoch validation pass and adapt p_c (needs validation data).
        val_annotations, val_images: data of the validation pass; "" = ``data.val_*``.
        val_max_batches: limit the validation pass (0 = the whole set).
    """

    enabled: bool = False
    momentum: float = 0.1
    loss_weight: float = 0.1
    prob_power: float = 1.0
    prob_scale: float = 1.0
    up: float = 1.1
    down: float = 0.9
    start_epoch: int = 1
    grouping: Literal["none", "frequency"] = "none"
    adapt: bool = True
    val_annotations: str = ""
    val_images: str = ""
    val_max_batches: int = 0


@dataclass
class EvalConfig:
    """Evaluation: pycocotools COCOeval box and mask AP; on an LVIS json, LVIS's federated
    evaluation (APr/APc/APf) through the LVIS API (trainers/detection/lvis_eval.py).

    Attributes:
        enabled: evaluate on ``data.val_annotations`` (at the end, and every ``every_epochs``).
        every_epochs: evaluate after every N epochs (0 = only at the end of training).
        batch_size: images per inference batch.
        max_images: evaluate only the first N images of the json (0 = all).
        max_dets: detections per image (COCO 100; LVIS 300 [LVIS]).
        score_thresh: inference score threshold during evaluation; None = the model's
            (LVIS uses 1e-4 [LVIS]).
        mask_threshold: binarisation threshold of the predicted masks (0.5).
        iou_types: ``"bbox"`` and/or ``"segm"``.
    """

    enabled: bool = True
    every_epochs: int = 0
    batch_size: int = 2
    max_images: int = 0
    max_dets: int = 100
    score_thresh: float | None = None
    mask_threshold: float = 0.5
    iou_types: tuple[str, ...] = ("bbox", "segm")


@dataclass
class SelfTrainingConfig:
    """Self-training Copy-Paste ([CP] §4.4, [ST]); off by default.

    With ``enabled``, before training the teacher checkpoint labels every image of
    ``unlabeled_images``; detections scoring at least ``score_threshold`` become instances
    (masks as RLE) of a pseudo-labelled json, which is merged with the labelled training json
    (distinct image and annotation ids) into the json the loader trains on, so copy-paste
    mixes ground-truth and pseudo-labelled instances in both directions. Under DDP every rank
    labels its share of the folder. A resumed run (``run.resume``) reuses the merged json it
    started with.

    Attributes:
        enabled: pseudo-label, merge, and train on the mix.
        teacher_checkpoint: a checkpoint of this trainer (its EMA weights are used when present).
        unlabeled_images: folder of images (searched recursively; .jpg/.jpeg/.png).
        score_threshold: hard pseudo-label threshold (0.5 [ST]).
        mask_threshold: binarisation threshold of the teacher's masks (0.5).
        max_images: label at most N images (0 = all).
        batch_size: teacher inference batch.
        output_dir: where the pseudo-labelled and merged jsons go; "" = ``<out_dir>/self_training``.
    """

    enabled: bool = False
    teacher_checkpoint: str = ""
    unlabeled_images: str = ""
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_images: int = 0
    batch_size: int = 2
    output_dir: str = ""


def _default_loader() -> CopyPasteLoaderConfig:
    """decal's copy-paste loader with [CP]'s LSJ at 1024; ``batch_size`` is per rank
    (global batch = batch_size × world size; [CP] uses 256)."""
    return CopyPasteLoaderConfig(batch_size=8, output_size=1024, jitter="lsj", copy_paste=True)


def _default_optim() -> OptimConfig:
    """[CP] §4.1: SGD momentum 0.9, lr 0.32 for a global batch of 256, weight decay 4e-5."""
    return OptimConfig(name="sgd", lr=0.32, base_batch_size=256, scale_lr=True, momentum=0.9, weight_decay=4e-5)


def _default_schedule() -> ScheduleConfig:
    """[CP] §4.1: linear warmup over 1000 steps (from 0.001×, mmdetection's port), then
    ×0.1 at 0.9, 0.95 and 0.975 of training."""
    return ScheduleConfig(name="step", warmup_iters=1000, warmup_factor=0.001, milestones=(0.9, 0.95, 0.975), gamma=0.1)


def _default_run() -> RunConfig:
    """144 epochs ≈ mmdetection's 270k iterations at batch 64 (its port of [CP])."""
    return RunConfig(out_dir="runs/detection", epochs=144)


@dataclass
class DetectionConfig:
    """Everything the detection trainer reads (``decal train detection --config x.toml``)."""

    data: DataConfig = field(default_factory=DataConfig)
    loader: CopyPasteLoaderConfig = field(default_factory=_default_loader)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=_default_optim)
    schedule: ScheduleConfig = field(default_factory=_default_schedule)
    run: RunConfig = field(default_factory=_default_run)
    ema: EmaConfig = field(default_factory=EmaConfig)
    seesaw: SeesawConfig = field(default_factory=SeesawConfig)
    fasa: FasaConfig = field(default_factory=FasaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)


#: Named starting points (applied before the TOML file). ``tiny``: a CPU configuration that
#: trains in about a minute on two cores on the embedded two-photo sample: 128 px images,
#: a ResNet-18 FPN with narrow heads (64-channel FPN and mask head, 256-d box features),
#: anchors scaled down to the small image (8–128 px), fewer sampled anchors/RoIs, AdamW.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"use_sample": True},
        "loader": {
            "batch_size": 2,
            "output_size": 128,
            "jitter": "ssj",
            "device": "cpu",
            "num_threads": 1,
            "prefetch_queue_depth": 1,
        },
        "model": {
            "backbone": "resnet18",
            "fpn_channels": 64,
            "representation_size": 256,
            "mask_head_channels": 64,
            "anchor_sizes": [8, 16, 32, 64, 128],
            "rpn_batch_size_per_image": 64,
            "box_batch_size_per_image": 64,
        },
        "optim": {"name": "adamw", "lr": 1e-3, "base_batch_size": 2, "weight_decay": 1e-4, "grad_clip_norm": 10.0},
        "schedule": {"name": "cosine", "warmup_iters": 5, "warmup_factor": 0.1},
        "run": {
            "out_dir": "runs/detection-tiny",
            "epochs": 0,
            "max_iters": 60,
            "log_every": 5,
            "checkpoint_every": 0,
            "checkpoint_every_epochs": 0,
            "device": "cpu",
            "torch_threads": 2,
        },
        "eval": {"batch_size": 2, "max_images": 2},
    },
}
