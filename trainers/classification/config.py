"""Configuration of the classification trainer (ResNet with CutMix), with the paper's defaults.

References:
    [CUTMIX] Yun, Han, Oh, Chun, Choe & Yoo 2019, "CutMix: Regularization Strategy to Train
             Strong Classifiers with Localizable Features", ICCV; code
             github.com/clovaai/CutMix-PyTorch (``train.py``, ``README.md``). ImageNet
             ResNet-50: 300 epochs, global batch 256, SGD lr 0.1, momentum 0.9, Nesterov,
             weight decay 1e-4, lr ×0.1 every 75 epochs, CutMix with β = 1 on every batch
             (``--beta 1.0 --cutmix_prob 1.0``), label mixed by area
             (``lam · CE(y_a) + (1 - lam) · CE(y_b)``); evaluation ``Resize(256)`` +
             ``CenterCrop(224)``, top-1/top-5 error.
    [TV]     torchvision ResNets (He et al. 2016) and its ImageNet evaluation transform.
    [TIMM]   Wightman, pytorch-image-models: ``Mixup``/``SoftTargetCrossEntropy`` (the soft
             targets decal's CutMix loader emits), ``crop_pct`` 0.875 = 224/256.

Not reproduced from [CUTMIX]'s ImageNet recipe: its extra ColorJitter(0.4, 0.4, 0.4) and
PCA lighting noise (decal's CutMix loader does RandomResizedCrop + flip), and its partner
choice (a random permutation of the batch; decal pairs image i with B - 1 - i, timm's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from decal.dali_pipes.cutmix.loader import CutMixLoaderConfig

from ..common.config import DataConfig, EmaConfig, OptimConfig, RunConfig, ScheduleConfig

__all__ = ["ModelConfig", "EvalConfig", "ClassificationConfig", "PRESETS"]


@dataclass
class ModelConfig:
    """A torchvision ResNet ([TV]).

    Attributes:
        depth: 18, 34, 50 ([CUTMIX]'s ImageNet model), 101 or 152.
        num_classes: width of the classifier; 0 = the training folder's number of classes.
        zero_init_residual: zero-init the last BN of every block (torchvision option; off in
            [CUTMIX]).
        weights: a local file to start from: a torchvision ResNet state dict or a checkpoint
            of this trainer; ``fc.*`` is skipped when its shape differs (another number of
            classes). Never downloaded.
        sync_bn: SyncBatchNorm under DDP on CUDA ([CUTMIX] trains with per-GPU BN).
    """

    depth: Literal[18, 34, 50, 101, 152] = 50
    num_classes: int = 0
    zero_init_residual: bool = False
    weights: str = ""
    sync_bn: bool = False


@dataclass
class EvalConfig:
    """Top-1/top-5 evaluation on an ImageFolder (``data.val_images``), without mixing.

    A small host-side reader (PIL + torchvision transforms), the standard ImageNet protocol:
    resize the short side to ``round(S / crop_pct)`` (bilinear, antialiased), centre-crop S ×
    S (S = ``loader.output_size``), normalise with the loader's mean/std. Top-5 is top-min(5,
    C) when there are fewer than five classes.

    Attributes:
        enabled: evaluate (every ``every_epochs`` and at the end).
        every_epochs: [CUTMIX] evaluates after every epoch; 0 = only at the end.
        crop_pct: 0.875 (224 of 256, [CUTMIX]/[TV]).
        batch_size: images per evaluation batch (per rank).
        num_workers: torch ``DataLoader`` workers.
        max_images: evaluate the first N images (0 = all).
    """

    enabled: bool = True
    every_epochs: int = 1
    crop_pct: float = 0.875
    batch_size: int = 64
    num_workers: int = 4
    max_images: int = 0


def _default_loader() -> CutMixLoaderConfig:
    """[CUTMIX] ImageNet: 224 crops, CutMix with α = β = 1 on every batch (``cutmix_prob 1.0``),
    no MixUp, no label smoothing; 64 images per rank (4 GPUs × 64 = 256)."""
    return CutMixLoaderConfig(batch_size=64, output_size=224, mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0)


def _default_optim() -> OptimConfig:
    """[CUTMIX]: SGD lr 0.1 for a batch of 256, momentum 0.9, Nesterov, weight decay 1e-4 on
    every parameter."""
    return OptimConfig(name="sgd", lr=0.1, base_batch_size=256, scale_lr=True, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _default_schedule() -> ScheduleConfig:
    """[CUTMIX] ``adjust_learning_rate``: ×0.1 at epochs 75, 150, 225 of 300, no warmup."""
    return ScheduleConfig(name="step", warmup_iters=0, milestones=(0.25, 0.5, 0.75), gamma=0.1)


def _default_run() -> RunConfig:
    """[CUTMIX]: 300 epochs."""
    return RunConfig(out_dir="runs/classify", epochs=300)


@dataclass
class ClassificationConfig:
    """Everything the classification trainer reads (``decal train classify --config x.toml``).

    ``data.train_images`` / ``data.val_images`` are ImageFolder trees (one sub-directory per
    class); ``data.use_sample`` uses decal's two-class demo folder for both.
    """

    data: DataConfig = field(default_factory=DataConfig)
    loader: CutMixLoaderConfig = field(default_factory=_default_loader)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=_default_optim)
    schedule: ScheduleConfig = field(default_factory=_default_schedule)
    run: RunConfig = field(default_factory=_default_run)
    ema: EmaConfig = field(default_factory=EmaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: Named starting points. ``tiny``: a CPU configuration for CI: 64 px crops of the demo
#: folder (two classes × three photos), ResNet-18, AdamW, 40 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "data": {"use_sample": True},
        "loader": {"batch_size": 8, "output_size": 64, "device": "cpu", "num_threads": 1, "prefetch_queue_depth": 1},
        "model": {"depth": 18},
        "optim": {"name": "adamw", "lr": 1e-3, "base_batch_size": 8, "weight_decay": 1e-4, "nesterov": False},
        "schedule": {"name": "cosine", "warmup_iters": 0},
        "run": {
            "out_dir": "runs/classify-tiny",
            "epochs": 0,
            "max_iters": 40,
            "log_every": 5,
            "checkpoint_every": 0,
            "checkpoint_every_epochs": 0,
            "device": "cpu",
            "torch_threads": 1,  # one torch thread + one DALI thread: robust to a busy machine
        },
        "eval": {"every_epochs": 0, "batch_size": 8, "num_workers": 0},
    },
}
