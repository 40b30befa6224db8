"""``MosaicLoader``: balanced-Mosaic batches of a COCO/LVIS instance dataset, and the mosaic
family's parts (:data:`MOSAIC`). The graph and its source: ``dali_pipes/mosaic/pipeline.py``;
the draws and the step's NumPy twin: ``dali_pipes/mosaic/twin.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..coco.loader import CocoPipelineLoader, coco_dataset, coco_stats
from ..coco.reader import CocoDataset
from ..copy_paste.loader import instance_targets, resolve_mask_source
from ..core.assembly import Family, assemble
from ..core.backend import Backend
from ..core.batch import Batch
from ..core.loader_base import dense, position_after
from ..core.loader_config import check_loader_config
from ..core.loader_parts import epoch_sampler, pipeline_device_options, source_options
from ..core.option_schema import with_options
from ..core.parallel_source import check_workers
from ..core.samplers import RepeatFactorSampler
from .descriptors import MosaicDescriptorSource
from .options import MOSAIC_OPTIONS
from .pipeline import MosaicOutputs, MosaicSource, build_mosaic_pipeline
from .twin import NUM_TILES

__all__ = ["MOSAIC", "MosaicLoader", "MosaicLoaderConfig", "mosaic_batch", "mosaic_graph", "mosaic_source"]


@dataclass(frozen=True)
@with_options(MOSAIC_OPTIONS)
class MosaicLoaderConfig:
    """Every parameter of :class:`MosaicLoader`, with its default.

    Attributes:
        batch_size, output_size, flip_prob, pad_value, paste_by_box, seed, shuffle,
        shard_id, num_shards, drop_last, on_error, device, device_id, num_threads,
        prefetch_queue_depth, mask_source, subpixel, source_workers, source_start_method: as
        :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoaderConfig` (``mask_source``
        None: descriptors on the GPU backend, host masks on the CPU; the same batches).
        jitter: range of r; a tile's longer side is r·S/2 in a mosaic, r·S alone
            (``"none"``, ``"ssj"``, ``"lsj"`` or a (min, max) pair).
        mosaic_prob: probability that a sample is a mosaic (0.5).
        center_range: the mosaic centre is uniform in this range times S, per axis.
        repeat_factor_threshold: t of repeat-factor sampling (0.001, LVIS), which draws
            the epoch order and weighs the three extra images by r(i); None for uniform.
    """

    def __post_init__(self) -> None:
        check_loader_config(self)


def mosaic_source(config: MosaicLoaderConfig, dataset: CocoDataset, sampler: Any, backend: Backend) -> MosaicSource:
    """The family's source; the three extra images of a mosaic are weighed by the sampler's
    repeat factors (uniformly under the uniform sampler). Its masks follow
    :func:`~decal.dali_pipes.copy_paste.loader.mask_source`: a :class:`MosaicDescriptorSource`
    (descriptors, the GPU default) or a :class:`MosaicSource` (host masks, the CPU default)."""
    check_workers(config.source_workers, config.source_start_method or "spawn", config.on_error)
    weights = sampler.repeat_factors if isinstance(sampler, RepeatFactorSampler) else np.ones(len(dataset))
    options = dict(
        output_size=config.output_size,
        prob=config.mosaic_prob,
        center_range=tuple(config.center_range),
        pad_value=config.pad_value,
        item_weights=weights,
        **source_options(config),
    )
    if resolve_mask_source(config, backend) == "host":
        return MosaicSource(dataset, sampler, **options)
    return MosaicDescriptorSource(dataset, sampler, subpixel=config.subpixel, **options)


def mosaic_graph(source: MosaicSource, config: MosaicLoaderConfig, backend: Backend, step: Any) -> Any:
    """The Mosaic graph over ``source``, whose masks and step follow the source: descriptors
    rasterised by :class:`~decal.dali_pipes.mosaic.descriptors.MosaicDescriptorStep` for a
    :class:`MosaicDescriptorSource`, host masks placed by
    :class:`~decal.dali_pipes.mosaic.twin.MosaicStep` for a :class:`MosaicSource`; the source
    in ``source_workers`` worker processes when > 0."""
    return build_mosaic_pipeline(
        source, **pipeline_device_options(config, backend), source_workers=config.source_workers,
        source_start_method=config.source_start_method or "spawn",
    )  # fmt: skip


def mosaic_batch(outputs: tuple[Any, ...], config: Any = None) -> Batch:
    """The :class:`Batch` of one run of the Mosaic graph: instance targets plus ``tile``,
    ``tiles`` and ``tile_image_ids``."""
    named = MosaicOutputs(*outputs[: len(MosaicOutputs._fields)])
    images = dense(named.images)
    batch_size = images.shape[0]
    targets = instance_targets(named._asdict(), batch_size, extra=("tile", "tiles"))
    tile_ids = np.array(named.tile_image_ids.as_tensor()).reshape(batch_size, NUM_TILES)
    for target, ids in zip(targets, tile_ids):
        target["tile_image_ids"] = torch.from_numpy(ids.copy())
    return Batch(images=images, targets=targets, position=position_after(named.position))


#: The mosaic family: COCO dataset, epoch sampler, :func:`mosaic_source`, :func:`mosaic_graph`,
#: :func:`mosaic_batch`.
MOSAIC = Family("MosaicLoader", MosaicLoaderConfig, mosaic_source, mosaic_graph, mosaic_batch, coco_stats, epoch_sampler)


class MosaicLoader(CocoPipelineLoader):
    """Iterate over balanced-Mosaic batches of a COCO/LVIS instance dataset.

    Yields :class:`~decal.dali_pipes.core.batch.Batch` objects; each target carries,
    besides ``boxes``, ``labels``, ``masks``, ``area``, ``iscrowd``, ``pasted`` (all zeros)
    and ``image_id`` (tile 0's): ``tile`` (N,) int64 the tile each instance came from,
    ``tiles`` (4, 4) int32 each tile's box on the canvas (zeros when unused) and
    ``tile_image_ids`` (4,) int64 (-1 when unused; only tile 0 is used when the sample is not
    a mosaic).

    On the GPU backend its masks are rasterised by the step from descriptors by default
    (``dali_pipes/mosaic/descriptors.py``, the same bits); ``mask_source="host"`` keeps the
    host-rasterised tile masks there.

    Keyword arguments are the fields of :class:`MosaicLoaderConfig`.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, **options: Any) -> None:
        super().__init__(assemble(MOSAIC, options, coco_dataset(annotation_file, image_dir)))
