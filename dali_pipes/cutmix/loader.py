"""``CutMixLoader``: classification batches from an ImageFolder, with CutMix/MixUp soft targets.

Example::

    loader = CutMixLoader("train/", batch_size=128, output_size=224, cutmix_alpha=1.0,
                          mixup_alpha=0.8, switch_prob=0.5, label_smoothing=0.1, seed=0)
    for batch in loader:
        logits = model(batch.images)                       # (B, 3, S, S) float32
        loss = torch.sum(-batch.targets * logits.log_softmax(-1), -1).mean()

Per-image ops: torchvision ``RandomResizedCrop(S, scale, ratio)`` (bilinear, antialiased),
horizontal flip with ``flip_prob``, normalisation with ImageNet mean/std; then CutMix/MixUp on
the batch with timm 1.0.31 ``Mixup`` semantics (see :mod:`decal.dali_pipes.cutmix.twin`). Epochs, resume
and sharding as in ``CopyPasteLoader``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from ..core.backend import resolve_backend
from ..core.epoch_source import LoaderPosition
from .twin import MixConfig
from ..core.normalization import IMAGENET_MEAN, IMAGENET_STD
from .pipeline import CutMixOutputs, CutMixSource, build_cutmix_pipeline
from ..folder.loader import FolderLoaderBase
from ..core.common_options import DEVICE_OPTIONS, RUN_OPTIONS
from ..core.loader_config import check_loader_config
from ..core.loader_parts import pipeline_device_options, run_options
from ..core.option_schema import with_options
from ..core.loader_base import check_options, dense, position_after
from ..folder.image_folder import ImageFolder

__all__ = ["CutMixLoaderConfig", "ClassificationBatch", "CutMixLoader"]


@dataclass(frozen=True)
@with_options(RUN_OPTIONS + DEVICE_OPTIONS, first=False)
class CutMixLoaderConfig:
    """Every parameter of :class:`CutMixLoader`, with its default.

    Attributes:
        batch_size: images per batch (the last batch of an epoch may be smaller, and odd,
            unless ``drop_last``).
        output_size: S, images are S×S.
        scale, ratio: ``RandomResizedCrop`` area-fraction and aspect ranges (torchvision
            defaults).
        flip_prob: probability of a horizontal flip.
        normalize: float32 normalised output; False for uint8 (0..255) output.
        mean, std: normalisation, per channel in [0, 1] units (ImageNet's by default).
        mix: False for no CutMix/MixUp (the targets are then the smoothed one-hot labels).
        mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode, correct_lam,
            label_smoothing: timm ``Mixup`` arguments (:class:`~decal.dali_pipes.cutmix.twin.MixConfig`);
            the defaults are CutMix only, α = 1, every batch.
        num_classes: width of the targets; None = the folder's number of classes.
        seed: fixes every draw; a run is a function of (seed, epoch, shard, position).
        shuffle: shuffle each epoch.
        shard_id, num_shards: this process's part of each epoch (DDP: rank, world size).
        drop_last: drop the last incomplete batch of each epoch.
        on_error: ``"raise"`` a DatasetError naming a bad file, or ``"skip"`` it and count
            it in :attr:`CutMixLoader.stats`.
        verify: check every file's header when the loader is made.
        return_unmixed: also yield the crops before mixing (uint8, for tests and previews).
        device: ``"gpu"``, ``"cpu"``, or None/``"auto"``.
        device_id: CUDA device index.
        num_threads: DALI CPU threads.
        prefetch_queue_depth: batches prepared ahead.
    """

    batch_size: int = 32
    output_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    normalize: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    mix: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: Literal["batch", "elem", "pair"] = "batch"
    correct_lam: bool = True
    label_smoothing: float = 0.0
    num_classes: int | None = None
    verify: bool = False
    return_unmixed: bool = False

    def __post_init__(self) -> None:
        check_loader_config(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def mix_config(self, num_classes: int) -> MixConfig | None:
        if not self.mix:
            return None
        return MixConfig(
            num_classes=num_classes,
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            cutmix_minmax=None if self.cutmix_minmax is None else tuple(self.cutmix_minmax),
            prob=self.prob,
            switch_prob=self.switch_prob,
            mode=self.mode,
            correct_lam=self.correct_lam,
            label_smoothing=self.label_smoothing,
        )


@dataclass
class ClassificationBatch:
    """One batch.

    Attributes:
        images: (B, 3, S, S) float32 normalised (uint8 with ``normalize=False``), on the
            pipeline's device.
        targets: (B, C) float32 soft targets (rows sum to 1), on the images' device.
        labels: (B,) int64 class of each image before mixing (on the host).
        lam: (B,) float32 weight of each image's own label (1 = not mixed; on the host).
        position: where the loader stands after this batch.
        unmixed: (B, S, S, 3) uint8 crops before mixing (``return_unmixed`` only).
    """

    images: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    lam: torch.Tensor
    position: LoaderPosition = field(default_factory=LoaderPosition)
    unmixed: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def partner(self) -> torch.Tensor:
        """(B,) the sample mixed into each one: ``B - 1 - i`` (timm's flipped batch)."""
        return torch.arange(len(self) - 1, -1, -1)


class CutMixLoader(FolderLoaderBase):
    """Iterate over CutMix/MixUp batches of an ImageFolder tree (class = sub-directory).

    Keyword arguments are the fields of :class:`CutMixLoaderConfig`.
    """

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__()
        check_options("CutMixLoader", options, CutMixLoaderConfig.field_names())
        self.config = cfg = CutMixLoaderConfig(**options)
        if cfg.output_size < 1:
            raise ValueError(f"output_size must be >= 1, got {cfg.output_size}")
        self.backend = resolve_backend(cfg.device)
        self.dataset = ImageFolder(root, labelled=True, on_error=cfg.on_error, verify=cfg.verify)
        num_classes = cfg.num_classes if cfg.num_classes is not None else self.dataset.num_classes
        if num_classes < self.dataset.num_classes:
            raise ValueError(f"num_classes={num_classes} but the folder has {self.dataset.num_classes} classes")
        self.num_classes = num_classes
        self.mix = cfg.mix_config(num_classes)
        self.source = CutMixSource(
            self.dataset,
            mix=self.mix,
            output_size=cfg.output_size,
            scale=tuple(cfg.scale),
            ratio=tuple(cfg.ratio),
            flip_prob=cfg.flip_prob,
            label_smoothing=cfg.label_smoothing,
            shuffle=cfg.shuffle,
            **run_options(cfg),
        )

    @property
    def classes(self) -> list[str]:
        """Class names (sorted sub-directory names); index = class id."""
        return list(self.dataset.classes)

    def _build_pipeline(self) -> Any:
        cfg = self.config
        return build_cutmix_pipeline(
            self.source,
            normalize=cfg.normalize,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            return_unmixed=cfg.return_unmixed,
            **pipeline_device_options(cfg, self.backend),
        )

    def _to_batch(self, outputs: tuple[Any, ...]) -> ClassificationBatch:
        named = CutMixOutputs(*outputs)
        images = dense(named.images)
        return ClassificationBatch(
            images=images,
            targets=dense(named.targets, images.device),
            labels=dense(named.labels).reshape(-1),
            lam=dense(named.lam).reshape(-1),
            position=position_after(named.position),
            unmixed=dense(named.unmixed) if named.unmixed is not None else None,
        )
