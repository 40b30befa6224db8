"""Configuration of the CP² trainers (pretraining and segmentation fine-tuning), with the papers' defaults.

References:
    [CP2]    Wang, Wang, Wei, Yuille & Shen 2022, "CP2: Copy-Paste Contrastive Pretraining for
             Semantic Segmentation", ECCV; code github.com/wangf3014/CP2: ``builder.py``
             (``CP2_MOCO(dim=128, K=65536, m=0.999, T=0.2)``, the losses' logits),
             ``main.py`` (dense loss, weight 0.2, SGD momentum 0.9, weight decay 1e-4,
             cosine schedule, 200 epochs), ``README.md`` (lr 0.015 for a batch of 256; Quick
             Tuning: 20 epochs from a MoCo v2 backbone), ``configs/config_pretrain.py``
             (DeepLab v3: ResNet-50 with strides (1, 2, 2, 1) and dilations (1, 1, 1, 2), i.e.
             output stride 16; ASPP head with 512 channels, dilations (1, 6, 12, 18), and the
             projection ``Conv1x1(512, 512) - ReLU - Conv1x1(512, 128)``),
             ``configs/config_finetune.py`` (fine-tuning on PASCAL VOC: SyncBN, 512 × 512
             crops of images rescaled to (2048, 512) × [0.5, 2], flip, SGD lr 0.003 momentum 0.9
             no weight decay, poly schedule power 0.9 to 1e-4, 40k iterations, 4 images per
             GPU, dropout 0.1 before the classifier, mIoU every 4k iterations).
    [MOCO]   He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
             Learning", CVPR; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
             Learning" (MoCo v2); github.com/facebookresearch/moco ``moco/builder.py``: the
             momentum key encoder, the queue, shuffling BN across GPUs.
    [DLV3]   Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution for
             Semantic Image Segmentation" (DeepLab v3): ASPP rates (6, 12, 18) at output
             stride 16, image pooling, "poly" learning rate; torchvision's
             ``torchvision.models.segmentation.deeplabv3`` (``ASPP``, ``DeepLabHead``).
    [MMSEG]  mmsegmentation (the base of [CP2]'s fine-tuning): ``RandomCrop(cat_max_ratio=0.75)``,
             seg pad value 255 = ignored, ``PolyLrUpdaterHook``, mIoU over the classes present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from decal.dali_pipes.cp2.loader import CP2LoaderConfig

from ..common.config import DataConfig, OptimConfig, RunConfig, ScheduleConfig

__all__ = [
    "EncoderConfig",
    "ModelConfig",
    "ContrastConfig",
    "CP2Config",
    "SegLoaderConfig",
    "SegModelConfig",
    "SegEvalConfig",
    "CP2FinetuneConfig",
    "PRESETS",
    "FINETUNE_PRESETS",
]

ResNetDepth = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@dataclass
class EncoderConfig:
    """The DeepLab v3 encoder ([CP2] ``config_pretrain.py``, [DLV3]), shared by pretraining and
    fine-tuning.

    The encoder is torchvision's: a ResNet whose last stage (output stride 16) or last two
    stages (8) trade their stride for dilation (``replace_stride_with_dilation``), then
    torchvision's ``ASPP`` (a 1×1 branch, one 3×3 branch per rate, image pooling, a 1×1
    projection) and a 3×3 conv + BN + ReLU: torchvision's ``DeepLabHead`` without its
    classifier, with [CP2]'s rates and width.

    Attributes:
        backbone: ResNet depth ([CP2]: ``resnet50``; ``resnet18`` for the tiny CPU config;
            BasicBlock ResNets are dilated by the same rule as torchvision's Bottleneck ones).
        output_stride: 16 ([CP2]) or 8; must equal the loader's ``stride`` (the feature masks
            are sampled at that stride).
        aspp_rates: atrous rates of the 3×3 ASPP branches ((6, 12, 18) at stride 16, [DLV3];
            [CP2]'s ``dilations=(1, 6, 12, 18)`` where the 1 is the 1×1 branch).
        aspp_channels: ASPP/head width (512 in [CP2]; torchvision uses 256).
        aspp_dropout: dropout after the ASPP projection (torchvision 0.5; 0 in [CP2]'s
            ``ASPPHead``, which has none there).
        backbone_weights: Quick Tuning ([CP2] §3.3): a local checkpoint whose ResNet weights
            initialise the backbone (torchvision ImageNet, MoCo ``module.encoder_q.*``, CP2
            ``encoder_q.*`` keys; the prefix is found automatically, ``fc.*`` ignored). Never
            downloaded.
        zero_init_residual: torchvision's option (zero-init the last BN of each block).
    """

    backbone: ResNetDepth = "resnet50"
    output_stride: Literal[8, 16] = 16
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_channels: int = 512
    aspp_dropout: float = 0.0
    backbone_weights: str = ""
    zero_init_residual: bool = False


@dataclass
class ModelConfig(EncoderConfig):
    """The pretraining model: the encoder + [CP2]'s projection ``contrast_conv``
    (``Conv1x1(C, C) - ReLU - Conv1x1(C, 128)``), L2-normalised per pixel.

    Attributes (besides :class:`EncoderConfig`'s):
        projection_dim: output of the projection (128, [CP2]/[MOCO]).
        projection_hidden: width of the projection's first 1×1 conv (0 = ``aspp_channels``, [CP2]).
    """

    projection_dim: int = 128
    projection_hidden: int = 0


@dataclass
class ContrastConfig:
    """The contrastive objective ([CP2] ``builder.py`` and ``main.py``; [MOCO]).

    Attributes:
        queue_size: K negatives in the queue (65,536).
        momentum: m of the key encoder update ``k = m k + (1 - m) q`` (0.999).
        temperature: τ of the instance loss (0.2).
        dense_temperature: τ of the dense loss (1: [CP2]'s dense logits are not scaled).
        dense_weight: α, ``loss = instance + α dense`` (0.2).
        shuffle_bn: under DDP, shuffle the key batch across ranks before the key encoder and
            unshuffle after ([MOCO] "shuffling BN"). No effect in a single process (BN
            statistics are invariant to a permutation within one batch). Under DDP the keys
            of all ranks are gathered, so ``loader.drop_last`` must be true (equal batches).
    """

    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    dense_temperature: float = 1.0
    dense_weight: float = 0.2
    shuffle_bn: bool = True


def _default_loader() -> CP2LoaderConfig:
    """decal's CP² loader with [CP2]'s augmentation; ``batch_size`` per rank (8 × 32 = 256),
    ``drop_last`` as [CP2]'s loaders (and needed under DDP)."""
    return CP2LoaderConfig(batch_size=32, output_size=224, stride=16, drop_last=True)


def _default_optim() -> OptimConfig:
    """[CP2] README: SGD, lr 0.015 for a batch of 256, momentum 0.9, weight decay 1e-4 (biases
    and BN included, as ``model.parameters()`` there)."""
    return OptimConfig(name="sgd", lr=0.015, base_batch_size=256, scale_lr=True, momentum=0.9, weight_decay=1e-4)


def _default_schedule() -> ScheduleConfig:
    """[CP2] ``adjust_learning_rate``: half cosine to 0, no warmup (applied per epoch there,
    per iteration here)."""
    return ScheduleConfig(name="cosine", warmup_iters=0, min_lr_factor=0.0)


def _default_run() -> RunConfig:
    """[CP2]: 200 epochs from scratch (Quick Tuning: 20)."""
    return RunConfig(out_dir="runs/cp2", epochs=200)


@dataclass
class CP2Config:
    """Everything CP² pretraining reads (``decal train cp2 --config x.toml``).

    ``data.train_images`` is the image folder (any tree of images; labels unused);
    ``data.use_sample`` uses decal's six-image demo folder.
    """

    data: DataConfig = field(default_factory=DataConfig)
    loader: CP2LoaderConfig = field(default_factory=_default_loader)
    model: ModelConfig = field(default_factory=ModelConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    optim: OptimConfig = field(default_factory=_default_optim)
    schedule: ScheduleConfig = field(default_factory=_default_schedule)
    run: RunConfig = field(default_factory=_default_run)


# --------------------------------------------------------------------------- fine-tuning


@dataclass
class SegLoaderConfig:
    """Training batches of the segmentation fine-tuning ([CP2] ``config_finetune.py``, mmseg).

    A host-side reader of a COCO-style json (semantic masks rasterised from the instance
    masks: label = 1 + the category's index, 0 = background, crowd regions = ignored):
    rescale so that the short side is ``base_size × r`` (long side at most
    ``4 × base_size × r``, mmseg's ``img_scale=(2048, 512)``), r ~ U(``scale_range``); a random
    ``output_size`` crop (retried up to 10 times while one class covers more than
    ``cat_max_ratio`` of it); horizontal flip; ImageNet normalisation; padding with 0 (image)
    and ``ignore_index`` (label). Not reproduced: mmseg's ``PhotoMetricDistortion``.

    Attributes:
        batch_size: images per rank (4 per GPU in [CP2]).
        output_size: crop side (512).
        base_size: the short side before the random scale (512).
        scale_range: r's range ((0.5, 2.0)).
        flip_prob: 0.5.
        cat_max_ratio: 0.75 (1 = off).
        ignore_index: label of ignored pixels (255).
        seed: fixes the shuffle and every augmentation draw (a function of seed, epoch, rank,
            position: resumable).
        shuffle: shuffle each epoch.
        drop_last: drop the last incomplete batch (BatchNorm needs two images or more).
        num_workers: torch ``DataLoader`` worker processes (0 = in the training process).
        device: unused (the batches are moved to the training device); accepted so that the
            common ``--device`` flag applies.
    """

    batch_size: int = 4
    output_size: int = 512
    base_size: int = 512
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    cat_max_ratio: float = 0.75
    ignore_index: int = 255
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 4
    device: str | None = None


@dataclass
class SegModelConfig(EncoderConfig):
    """The fine-tuned segmenter: the CP² encoder with a classifier instead of the projection.

    Attributes (besides :class:`EncoderConfig`'s):
        pretrained: a CP² pretraining checkpoint of this trainer (its query encoder's
            backbone + ASPP head are loaded), or "" (then ``backbone_weights`` alone, or
            nothing, initialises the model).
        num_classes: classes including background; 0 = 1 + the categories of the training json.
        classifier_dropout: ``Dropout2d`` before the 1×1 classifier (0.1, mmseg ``dropout_ratio``).
        sync_bn: SyncBatchNorm under DDP on CUDA ([CP2] fine-tunes with SyncBN).
    """

    pretrained: str = ""
    num_classes: int = 0
    classifier_dropout: float = 0.1
    sync_bn: bool = True


@dataclass
class SegEvalConfig:
    """mIoU evaluation (mmseg semantics: whole-image inference at the training scale,
    logits resized to the original image, IoU per class over the dataset, the mean over the
    classes that occur in the labels or the predictions).

    Attributes:
        enabled: evaluate on ``data.val_*`` (at the end, and every ``every_epochs``).
        every_epochs: 0 = only at the end of training.
        base_size: inference scale: short side (long side at most 4×; [CP2]: (2048, 512));
            0 = the loader's ``base_size``.
        max_images: evaluate the first N images (0 = all).
    """

    enabled: bool = True
    every_epochs: int = 0
    base_size: int = 0
    max_images: int = 0


def _finetune_optim() -> OptimConfig:
    """[CP2] ``config_finetune.py``: SGD lr 0.003, momentum 0.9, weight decay 0 (lr not scaled)."""
    return OptimConfig(name="sgd", lr=0.003, base_batch_size=16, scale_lr=False, momentum=0.9, weight_decay=0.0)


def _finetune_schedule() -> ScheduleConfig:
    """[CP2] ``config_finetune.py``: poly, power 0.9, min lr 1e-4 (= 1/30 of 0.003), by iteration."""
    return ScheduleConfig(name="poly", warmup_iters=0, power=0.9, min_lr_factor=1e-4 / 0.003)


def _finetune_run() -> RunConfig:
    """[CP2] ``config_finetune.py``: 40k iterations, a checkpoint every 4k."""
    return RunConfig(out_dir="runs/cp2-finetune", epochs=0, max_iters=40000, checkpoint_every=4000, checkpoint_every_epochs=0)


def _finetune_model() -> SegModelConfig:
    """[CP2] ``config_finetune.py``: the pretraining encoder, 21 VOC classes (0 = from the json)."""
    return SegModelConfig()


@dataclass
class CP2FinetuneConfig:
    """Everything the fine-tuning job reads (``decal train cp2 --finetune --config x.toml``).

    ``data.train_annotations``/``train_images`` and ``val_*``: COCO-style jsons with instance
    masks (``data.use_sample``: decal's two-photo sample for both).
    """

    data: DataConfig = field(default_factory=DataConfig)
    loader: SegLoaderConfig = field(default_factory=SegLoaderConfig)
    model: SegModelConfig = field(default_factory=_finetune_model)
    optim: OptimConfig = field(default_factory=_finetune_optim)
    schedule: ScheduleConfig = field(default_factory=_finetune_schedule)
    run: RunConfig = field(default_factory=_finetune_run)
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)


_TINY_ENCODER = {"backbone": "resnet18", "aspp_channels": 64}

_TINY_RUN = {
    "epochs": 0,
    "log_every": 5,
    "checkpoint_every": 0,
    "checkpoint_every_epochs": 0,
    "device": "cpu",
    "torch_threads": 1,  # one torch thread + one DALI thread: robust to a busy machine
}

#: Named starting points of pretraining. ``tiny``: a CPU configuration for CI (about 0.2 s
#: per iteration on two cores): 64 px compositions (4 × 4 features at stride 16) of the demo
#: folder's six images, a dilated ResNet-18 with a 64-channel ASPP, AdamW, and a queue of 16
#: keys with m = 0.99 (a queue larger than the data would hold mostly copies of the current
#: images, and 0.999 barely moves the key encoder in a few dozen iterations).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"use_sample": True},
        "loader": {"batch_size": 4, "output_size": 64, "device": "cpu", "num_threads": 1, "prefetch_queue_depth": 1},
        "model": dict(_TINY_ENCODER),
        "contrast": {"queue_size": 16, "momentum": 0.99},
        "optim": {"name": "adamw", "lr": 1e-3, "base_batch_size": 4, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_iters": 0},
        "run": {"out_dir": "runs/cp2-tiny", "max_iters": 40, **_TINY_RUN},
    },
}

#: Named starting points of fine-tuning. ``tiny``: the tiny encoder on the two-photo sample at 64 px.
FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"use_sample": True},
        "loader": {"batch_size": 2, "output_size": 64, "base_size": 64, "num_workers": 0},
        "model": dict(_TINY_ENCODER),
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
        "run": {"out_dir": "runs/cp2-finetune-tiny", "max_iters": 30, **_TINY_RUN},
    },
}
