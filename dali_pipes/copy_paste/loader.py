"""``CopyPasteLoader`` (and ``GpuMaskCopyPasteLoader``): the torch iterator over the copy-paste
pipeline's ragged outputs, and the copy-paste family's parts (:data:`COPY_PASTE`).

A batch is what torchvision's detection models take: ``images`` as one (B, 3, S, S) uint8
tensor and ``targets`` as a list of B dicts (``boxes``, ``labels``, ``masks``, ``area``,
``iscrowd``, ``image_id``, plus ``pasted``). Tensors come out of DALI through DLPack without a
copy (DALI 2.x's dynamic executor lets outputs outlive the next iteration), on the GPU when
the pipeline runs there.

Epochs follow DALI's convention: iterating the loader yields one epoch; iterate again for the
next. ``len(loader)`` is the number of batches in the coming epoch. ``state_dict()`` after any
batch, and ``load_state_dict()`` on a fresh loader, continue exactly after that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from ...kernels.copy_paste import CopyPasteParams
from ..coco.index import CocoIndex
from ..coco.loader import CocoPipelineLoader, coco_dataset, coco_stats
from ..coco.reader import CocoDataset
from ..core.assembly import Family, assemble
from ..core.backend import Backend
from ..core.batch import TARGET_FIELDS, TARGET_OUTPUTS, Batch
from ..core.loader_base import dense, dlpack_stream, position_after, torch_samples
from ..core.loader_config import check_loader_config
from ..core.loader_parts import epoch_sampler, pipeline_device_options, source_options
from ..core.option_schema import with_options
from ..core.options import OptionError, fields_from
from ..core.parallel_source import check_workers
from ..core.step_io import FromDescriptors
from .gpu_masks import GpuMaskCopyPasteSource, build_gpu_mask_pipeline
from .options import COPY_PASTE_OPTIONS
from .pipeline import CopyPasteOutputs, build_copy_paste_pipeline
from .source import CopyPasteSource

__all__ = [
    "COPY_PASTE",
    "CopyPasteLoader",
    "CopyPasteLoaderConfig",
    "GpuMaskCopyPasteLoader",
    "SourceKinds",
    "copy_paste_graph",
    "copy_paste_source",
    "instance_batch",
    "instance_targets",
    "mask_source",
    "resolve_mask_source",
]


@dataclass(frozen=True)
@with_options(COPY_PASTE_OPTIONS)
class CopyPasteLoaderConfig:
    """Every parameter of :class:`CopyPasteLoader`, with its default: one field per option
    of :data:`~decal.dali_pipes.copy_paste.options.COPY_PASTE_OPTIONS`, in that order.

    ``jitter`` is ``"lsj"`` (r in [0.1, 2.0]), ``"ssj"`` ([0.8, 1.25]), ``"none"``, a
    (min, max) pair, or a :class:`~decal.dali_pipes.core.scale_jitter.ScaleJitter`; r is the resized longer side over S.
    ``max_num_pasted``, ``blend_sigma``, ``mask_occluded_thr``, ``bbox_occluded_thr`` and
    ``paste_by_box`` are those of :class:`~decal.kernels.copy_paste.CopyPasteParams`
    (mmdetection defaults). A run is a function of (seed, epoch, shard, position).
    """

    def __post_init__(self) -> None:
        check_loader_config(self)

    def copy_paste_params(self) -> CopyPasteParams | None:
        if not self.copy_paste:
            return None
        return fields_from(self, CopyPasteParams)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def instance_targets(named: dict[str, Any], batch_size: int, extra: tuple[str, ...] = ()) -> list[dict[str, torch.Tensor]]:
    """The B target dicts of an instance pipeline's named outputs (DLPack, no copy; the CUDA
    stream looked up once per output, not per sample: :func:`~decal.dali_pipes.core.loader_base.torch_samples`).

    Reads the ragged outputs ``masks``, ``boxes``, ``areas``, ``labels``, ``iscrowd`` (and
    ``pasted`` when the pipeline has it; zeros otherwise), ``image_id``, and any ``extra``
    ragged outputs under their own names.
    """
    sources = {field: TARGET_OUTPUTS.get(field, field) for field in TARGET_FIELDS}
    ragged = tuple(output for output in sources.values() if named.get(output) is not None) + extra
    per_sample = {name: torch_samples(named[name], batch_size, dlpack_stream(named[name])) for name in ragged}
    image_ids = np.array(named["image_id"].as_tensor()).reshape(-1)
    targets = []
    for i in range(batch_size):
        labels = per_sample["labels"][i]
        target = {
            field: per_sample[output][i]
            if output in per_sample
            else torch.zeros(labels.shape, dtype=torch.uint8, device=labels.device)
            for field, output in sources.items()
        }
        target["image_id"] = torch.tensor(int(image_ids[i]))
        target.update({name: per_sample[name][i] for name in extra})
        targets.append(target)
    return targets


def mask_source(config: Any, backend: Backend) -> Literal["host", "descriptors"]:
    """Where a copy-paste-family loader's masks are made (copy-paste, balanced,
    self-training): ``config.mask_source`` when given, else
    ``"descriptors"`` on the GPU backend (only mask descriptions cross PCIe; the step
    rasterises them on the device, the same bits as ``"host"`` unless ``subpixel``) and
    ``"host"`` on the CPU backend (the faster CPU path)."""
    chosen = getattr(config, "mask_source", None)
    if chosen is not None:
        return chosen
    return "descriptors" if backend == "gpu" else "host"


def resolve_mask_source(
    config: Any, backend: Backend, masks: Literal["host", "descriptors"] | None = None
) -> Literal["host", "descriptors"]:
    """The mask source a loader builds: ``masks`` when the loader forces one (a config asking
    for the other is an :class:`OptionError`), else :func:`mask_source`; ``subpixel`` with
    host masks is an :class:`OptionError` too. Errors name the loader and the option."""
    owner = type(config).__name__.removesuffix("Config")
    if masks is None:
        masks = mask_source(config, backend)
    elif config.mask_source not in (None, masks):
        raise OptionError(f"{owner}: option 'mask_source' must be {masks!r} for this loader, got {config.mask_source!r}")
    if masks == "host" and config.subpixel:
        raise OptionError(f"{owner}: option 'subpixel' needs mask_source='descriptors' (masks made by the step)")
    return masks


class SourceKinds(NamedTuple):
    """The source class of each mask source (:func:`copy_paste_source`)."""

    host: type[CopyPasteSource] = CopyPasteSource
    descriptors: type[GpuMaskCopyPasteSource] = GpuMaskCopyPasteSource


def copy_paste_source(
    config: CopyPasteLoaderConfig,
    dataset: CocoDataset,
    sampler: Any,
    backend: Backend,
    *,
    masks: Literal["host", "descriptors"] | None = None,
    prune_window: bool = True,
    index: CocoIndex | None = None,
    kinds: SourceKinds = SourceKinds(),
    **extra: Any,
) -> CopyPasteSource:
    """The source of a copy-paste-family loader: the one place that chooses it.

    ``masks`` forces the kind (a loader built for one kind; a config asking for the other is
    an :class:`OptionError`); None follows :func:`mask_source` (``config.mask_source``, else
    by backend).

    ``"host"``: a :class:`CopyPasteSource` (masks rasterised on the host, H×W×(N+1)
    uint8 per image); with ``prune_window`` (the default step only) it drops instances that
    cannot show in their output window (``dali_pipes/copy_paste/window_prune.py``).
    ``"descriptors"``: a :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource`
    (polygon and RLE descriptions, rasterised by the step; ``config.subpixel``; ``index``, the
    compiled index of ``dataset``, is compiled when None). :func:`copy_paste_graph` follows the
    source it is given; both sources serve both backends.

    ``kinds``: the two source classes (a variant's, e.g. self-training's two-set sources,
    built on these two), each given ``extra`` keyword arguments too.
    """
    check_workers(config.source_workers, config.source_start_method or "spawn", config.on_error)
    masks = resolve_mask_source(config, backend, masks)
    if masks == "host":
        source = kinds.host(dataset, sampler, **extra, **source_options(config))
        source.prune_window_size = config.output_size if prune_window else None
        return source
    return kinds.descriptors(
        dataset, sampler, output_size=config.output_size, subpixel=config.subpixel, index=index, **extra,
        **source_options(config),
    )


def copy_paste_graph(source: CopyPasteSource, config: CopyPasteLoaderConfig, backend: Backend, step: Any) -> Any:
    """The copy-paste DALI graph over ``source`` (not yet built): the GPU-mask graph for a
    :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource` (``step``'s core
    over the descriptor inputs, :class:`~decal.dali_pipes.core.step_io.FromDescriptors`; None:
    ``GpuMaskCopyPasteStep`` with the config's paste parameters), else
    :func:`~decal.dali_pipes.copy_paste.pipeline.build_copy_paste_pipeline` with ``step``
    (its host-mask ``__call__``; None: ``CopyPasteStep`` with the config's paste parameters).
    A family's step (balanced, self-training) thus serves both mask sources."""
    workers = dict(source_workers=config.source_workers, source_start_method=config.source_start_method or "spawn")
    if isinstance(source, GpuMaskCopyPasteSource):
        return build_gpu_mask_pipeline(
            source,
            copy_paste=config.copy_paste_params(),
            pad_value=config.pad_value,
            **pipeline_device_options(config, backend),
            step=None if step is None else FromDescriptors(step),
            **workers,
        )
    return build_copy_paste_pipeline(
        source,
        output_size=config.output_size,
        copy_paste=config.copy_paste_params(),
        pad_value=config.pad_value,
        **pipeline_device_options(config, backend),
        step=step,
        step_threads=config.step_threads or config.num_threads,
        **workers,
    )


def instance_batch(outputs: tuple[Any, ...], config: Any = None) -> Batch:
    """The :class:`Batch` of one run of a copy-paste graph (:class:`CopyPasteOutputs`)."""
    named = CopyPasteOutputs(*outputs)
    images = dense(named.images)
    targets = instance_targets(named._asdict(), images.shape[0])
    return Batch(images=images, targets=targets, position=position_after(named.position))


#: The copy-paste family: COCO dataset, epoch sampler, :func:`copy_paste_source`,
#: :func:`copy_paste_graph`, the graph's own step, :func:`instance_batch`.
COPY_PASTE = Family(
    "CopyPasteLoader", CopyPasteLoaderConfig, copy_paste_source, copy_paste_graph, instance_batch, coco_stats, epoch_sampler
)


class CopyPasteLoader(CocoPipelineLoader):
    """Iterate over Copy-Paste augmented batches of a COCO/LVIS instance dataset.

    Example::

        loader = CopyPasteLoader("instances.json", "images/", batch_size=8,
                                 output_size=1024, jitter="lsj", seed=0)
        for batch in loader:
            batch.images    # (B, 3, H, W) uint8 on the pipeline's device
            batch.targets   # B dicts: boxes, labels, masks, area, iscrowd, pasted, image_id

    Keyword arguments are the fields of :class:`CopyPasteLoaderConfig`, plus ``dataset``: an
    already parsed :class:`CocoDataset` of ``annotation_file`` to share between loaders (a
    server's streams, say) instead of parsing the json again. The loader is the
    :data:`COPY_PASTE` family's parts, put together by
    :func:`~decal.dali_pipes.core.assembly.assemble`.

    On the GPU backend its masks are made by the step from descriptors by default (the
    GPU-mask pipeline, the same bits; :func:`mask_source`); ``mask_source="host"`` keeps the
    host-rasterised masks there.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        dataset: CocoDataset | None = None,
        **options: Any,
    ) -> None:
        super().__init__(assemble(COPY_PASTE, options, coco_dataset(annotation_file, image_dir, dataset)))


class GpuMaskCopyPasteLoader(CocoPipelineLoader):
    """:class:`CopyPasteLoader` with ``mask_source="descriptors"`` on either backend (the
    GPU-mask pipeline, ``dali_pipes/copy_paste/gpu_masks.py``), which is what
    ``CopyPasteLoader(device="gpu")`` runs by default.

    Same options and batches (:class:`CopyPasteLoaderConfig`; ``mask_source`` other than
    ``"descriptors"`` is an error), plus ``index``
    (:class:`~decal.dali_pipes.coco.index.CocoIndex`, default None): the compiled index of this
    dataset, e.g. :func:`~decal.dali_pipes.coco.index.open_index`'s memory-mapped one;
    compiled from the dataset when None. ``source_workers`` runs the source in that many
    worker processes (DALI's parallel external source,
    :mod:`~decal.dali_pipes.core.parallel_source`): the same batches as with 0; it needs
    ``on_error="raise"``.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        index: CocoIndex | None = None,
        dataset: CocoDataset | None = None,
        **options: Any,
    ) -> None:
        # the worker options' own messages (the config's schema would phrase them otherwise)
        check_workers(
            options.get("source_workers", 0), options.get("source_start_method") or "spawn",
            options.get("on_error", "raise"),
        )  # fmt: skip
        if options.get("mask_source") not in (None, "descriptors"):
            raise OptionError(
                f"GpuMaskCopyPasteLoader: option 'mask_source' must be 'descriptors', got {options['mask_source']!r}; "
                "use CopyPasteLoader for host masks"
            )
        family = replace(
            COPY_PASTE, name="GpuMaskCopyPasteLoader", source=partial(copy_paste_source, masks="descriptors", index=index)
        )
        super().__init__(assemble(family, options, coco_dataset(annotation_file, image_dir, dataset)))
        self.subpixel: bool = self.config.subpixel
