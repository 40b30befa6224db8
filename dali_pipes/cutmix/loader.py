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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.assembly import Family, assemble
from ..core.backend import Backend
from ..core.loader_base import PipelineLoader, dense, position_after
from ..core.loader_config import check_loader_config
from ..core.loader_parts import folder_options, output_options, pipeline_device_options
from ..core.option_schema import with_options
from ..core.options import fields_from
from ..folder.image_folder import ImageFolder
from ..folder.loader import folder_dataset, folder_stats
from ..folder.batches import ClassificationBatch
from .options import CUTMIX_OPTIONS
from .pipeline import CutMixOutputs, CutMixSource, build_cutmix_pipeline
from .twin import MixConfig

__all__ = ["CUTMIX", "CutMixLoaderConfig", "ClassificationBatch", "CutMixLoader", "cutmix_source", "cutmix_graph", "cutmix_batch"]


@dataclass(frozen=True)
@with_options(CUTMIX_OPTIONS)
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

    def __post_init__(self) -> None:
        check_loader_config(self)

    def mix_config(self, num_classes: int) -> MixConfig | None:
        if not self.mix:
            return None
        return fields_from(self, MixConfig, num_classes=num_classes)


def num_classes_of(config: CutMixLoaderConfig, dataset: ImageFolder) -> int:
    """The targets' width: ``config.num_classes``, or the folder's classes when None (never
    fewer than the folder has)."""
    num_classes = config.num_classes if config.num_classes is not None else dataset.num_classes
    if num_classes < dataset.num_classes:
        raise ValueError(f"num_classes={num_classes} but the folder has {dataset.num_classes} classes")
    return num_classes


def cutmix_source(config: CutMixLoaderConfig, dataset: ImageFolder, sampler: Any, backend: Backend) -> CutMixSource:
    """The family's source: the folder's images in its own epoch order, with the batch's
    CutMix/MixUp draws (:meth:`CutMixLoaderConfig.mix_config`)."""
    return CutMixSource(
        dataset,
        mix=config.mix_config(num_classes_of(config, dataset)),
        output_size=config.output_size,
        scale=tuple(config.scale),
        ratio=tuple(config.ratio),
        flip_prob=config.flip_prob,
        label_smoothing=config.label_smoothing,
        **folder_options(config),
    )


def cutmix_graph(source: CutMixSource, config: CutMixLoaderConfig, backend: Backend, step: Any) -> Any:
    """The CutMix graph over ``source`` (its step is built in)."""
    return build_cutmix_pipeline(
        source, return_unmixed=config.return_unmixed, **output_options(config), **pipeline_device_options(config, backend)
    )


def cutmix_batch(outputs: tuple[Any, ...], config: Any = None) -> ClassificationBatch:
    """The :class:`ClassificationBatch` of one run of the CutMix graph."""
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


#: The CutMix family: a labelled image folder (no sampler: the source shuffles),
#: :func:`cutmix_source`, :func:`cutmix_graph`, :func:`cutmix_batch`.
CUTMIX = Family("CutMixLoader", CutMixLoaderConfig, cutmix_source, cutmix_graph, cutmix_batch, folder_stats)


class CutMixLoader(PipelineLoader):
    """Iterate over CutMix/MixUp batches of an ImageFolder tree (class = sub-directory).

    Keyword arguments are the fields of :class:`CutMixLoaderConfig`.
    """

    dataset: ImageFolder
    source: CutMixSource

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(assemble(CUTMIX, options, folder_dataset(root, labelled=True)))

    @property
    def num_classes(self) -> int:
        """Width of the targets."""
        return num_classes_of(self.config, self.dataset)

    @property
    def mix(self) -> MixConfig | None:
        """The CutMix/MixUp parameters (None without mixing)."""
        return self.source.mix

    @property
    def classes(self) -> list[str]:
        """Class names (sorted sub-directory names); index = class id."""
        return list(self.dataset.classes)

    @property
    def categories(self) -> dict[int, dict[str, Any]]:
        """Class id → ``{"id", "name"}`` (the folder's classes), as an instance loader's
        categories: what a server sends in a stream's header, so a remote client knows the
        class names (``RemoteLoader.categories``)."""
        return {k: {"id": k, "name": name} for k, name in enumerate(self.dataset.classes)}
