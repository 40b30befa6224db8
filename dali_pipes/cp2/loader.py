"""``CP2Loader``: CP² copy-paste contrastive pretraining batches from an image folder.

Example::

    loader = CP2Loader("train/", batch_size=64, seed=0)        # unlabelled: any tree of images
    for batch in loader:
        q = encoder_q(batch.image_q)                            # (B, 3, 224, 224) float32
        k = encoder_k(batch.image_k)
        m_q, m_k = batch.mask_q_feat.float(), batch.mask_k_feat.float()   # (B, 14, 14)

Each sample: one foreground image, two MoCo v2 views of it, two background images with the
same augmentation, each view pasted onto its background through an independent rectangle of
50–80 % of the area (aspect 0.8–1.25). Semantics and references in
:mod:`decal.dali_pipes.cp2.twin`; epochs, resume and sharding as in ``CopyPasteLoader``.
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
from ..folder.batches import CP2Batch
from .options import CP2_OPTIONS
from .pipeline import VIEW_NAMES, CP2Outputs, CP2Source, build_cp2_pipeline
from .twin import CP2MaskConfig, CP2ViewConfig, feature_size


__all__ = ["CP2", "CP2LoaderConfig", "CP2Batch", "CP2Loader", "cp2_source", "cp2_graph", "cp2_batch"]


@dataclass(frozen=True)
@with_options(CP2_OPTIONS)
class CP2LoaderConfig:
    """Every parameter of :class:`CP2Loader`, with its default (CP2's).

    Attributes:
        batch_size: foreground images per batch.
        output_size: S (224 in CP2).
        stride: the encoder's output stride s; the feature masks are (S/s) × (S/s).
        scale, ratio: ``RandomResizedCrop`` of every view ((0.2, 1), torchvision's ratio).
        brightness, contrast, saturation, hue, jitter_prob: ``ColorJitter`` (0.4, 0.4, 0.4,
            0.1) applied with p 0.8.
        grayscale_prob: 0.2. blur_prob, blur_sigma: 0.5, (0.1, 2.0). flip_prob: 0.5.
        mask_area, mask_ratio: the rectangle's area fraction (0.5, 0.8) and aspect h/w
            (0.8, 1.25).
        labelled: read ``root`` as a class-per-directory ImageFolder (labels unused) rather
            than as any tree of images.
        background_root: a second folder for the backgrounds (default: ``root``).
        normalize, mean, std: float32 normalised output (ImageNet), or uint8 when False.
        seed, shuffle, shard_id, num_shards, drop_last, on_error, verify, device, device_id,
            num_threads, prefetch_queue_depth: as in ``CutMixLoader``.
        return_views: also yield the four augmented views (uint8 HWC) before compositing.
    """

    def __post_init__(self) -> None:
        check_loader_config(self)
        self.view_config(), self.mask_config()  # their own checks
        if feature_size(self.output_size, self.stride) < 1:
            raise ValueError(f"output_size {self.output_size} is smaller than half the stride {self.stride}")

    def view_config(self) -> CP2ViewConfig:
        return fields_from(self, CP2ViewConfig)

    def mask_config(self) -> CP2MaskConfig:
        return CP2MaskConfig(area=tuple(self.mask_area), ratio=tuple(self.mask_ratio), stride=self.stride)


def cp2_source(config: CP2LoaderConfig, dataset: ImageFolder, sampler: Any, backend: Backend) -> CP2Source:
    """The family's source: foregrounds from ``dataset``, backgrounds from
    ``config.background_root`` (the same folder when None)."""
    backgrounds = (
        ImageFolder(config.background_root, labelled=False, on_error=config.on_error, verify=config.verify)
        if config.background_root is not None
        else dataset
    )
    return CP2Source(
        dataset,
        view=config.view_config(),
        mask=config.mask_config(),
        backgrounds=backgrounds,
        **folder_options(config),
    )


def cp2_graph(source: CP2Source, config: CP2LoaderConfig, backend: Backend, step: Any) -> Any:
    """The CP² graph over ``source`` (its step is built in)."""
    return build_cp2_pipeline(
        source, return_views=config.return_views, **output_options(config), **pipeline_device_options(config, backend)
    )


def cp2_batch(outputs: tuple[Any, ...], config: Any = None) -> CP2Batch:
    """The :class:`CP2Batch` of one run of the CP² graph."""
    named = CP2Outputs(*outputs)
    views = {k: dense(getattr(named, k)) for k in VIEW_NAMES} if named.fg_q is not None else None
    return CP2Batch(
        image_q=dense(named.image_q),
        image_k=dense(named.image_k),
        mask_q=dense(named.mask_q),
        mask_k=dense(named.mask_k),
        mask_q_feat=dense(named.mask_q_feat),
        mask_k_feat=dense(named.mask_k_feat),
        position=position_after(named.position),
        views=views,
    )


#: The CP² family: an image folder (no sampler: the source shuffles), :func:`cp2_source`,
#: :func:`cp2_graph`, :func:`cp2_batch`.
CP2 = Family("CP2Loader", CP2LoaderConfig, cp2_source, cp2_graph, cp2_batch, folder_stats)


class CP2Loader(PipelineLoader):
    """Iterate over CP² batches of an image folder. Keyword arguments are the fields of
    :class:`CP2LoaderConfig`."""

    dataset: ImageFolder
    source: CP2Source

    def __init__(self, root: str | Path, **options: Any) -> None:
        super().__init__(assemble(CP2, options, folder_dataset(root)))

    @property
    def backgrounds(self) -> ImageFolder:
        """The background images (the foreground folder unless ``background_root``)."""
        return self.source.backgrounds

    @property
    def feature_size(self) -> int:
        """S' = the side of the feature-stride masks."""
        return feature_size(self.config.output_size, self.config.stride)
