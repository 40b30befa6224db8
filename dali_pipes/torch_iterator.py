"""``CopyPasteLoader``: the torch iterator over the copy-paste pipeline's ragged outputs.

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

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..kernels.copy_paste import CopyPasteParams
from .backend import resolve_backend
from .coco_reader import CocoDataset
from .copy_paste_pipeline import CopyPasteOutputs, build_copy_paste_pipeline
from .batch import TARGET_FIELDS, TARGET_OUTPUTS, Batch
from .copy_paste_options import COPY_PASTE_OPTIONS
from .copy_paste_source import CopyPasteSource
from .loader_config import check_loader_config
from .loader_parts import epoch_sampler, pipeline_device_options, source_options
from .option_schema import with_options
from .loader_base import PipelineLoader, check_options, dense, position_after
from .parallel_source import check_workers, expect_worker_batches


@dataclass(frozen=True)
@with_options(COPY_PASTE_OPTIONS)
class CopyPasteLoaderConfig:
    """Every parameter of :class:`CopyPasteLoader`, with its default: one field per option
    of :data:`~decal.dali_pipes.copy_paste_options.COPY_PASTE_OPTIONS`, in that order.

    ``jitter`` is ``"lsj"`` (r in [0.1, 2.0]), ``"ssj"`` ([0.8, 1.25]), ``"none"``, a
    (min, max) pair, or a :class:`~decal.dali_pipes.scale_jitter.ScaleJitter`; r is the resized longer side over S.
    ``max_num_pasted``, ``blend_sigma``, ``mask_occluded_thr``, ``bbox_occluded_thr`` and
    ``paste_by_box`` are those of :class:`~decal.kernels.copy_paste.CopyPasteParams`
    (mmdetection defaults). A run is a function of (seed, epoch, shard, position).
    """

    def __post_init__(self) -> None:
        check_loader_config(self)

    def copy_paste_params(self) -> CopyPasteParams | None:
        if not self.copy_paste:
            return None
        return CopyPasteParams(
            max_num_pasted=self.max_num_pasted,
            blend_sigma=self.blend_sigma,
            mask_occluded_thr=self.mask_occluded_thr,
            bbox_occluded_thr=self.bbox_occluded_thr,
            paste_by_box=self.paste_by_box,
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def instance_targets(named: dict[str, Any], batch_size: int, extra: tuple[str, ...] = ()) -> list[dict[str, torch.Tensor]]:
    """The B target dicts of an instance pipeline's named outputs (DLPack, no copy).

    Reads the ragged outputs ``masks``, ``boxes``, ``areas``, ``labels``, ``iscrowd`` (and
    ``pasted`` when the pipeline has it; zeros otherwise), ``image_id``, and any ``extra``
    ragged outputs under their own names.
    """
    sources = {field: TARGET_OUTPUTS.get(field, field) for field in TARGET_FIELDS}
    ragged = tuple(output for output in sources.values() if named.get(output) is not None) + extra
    per_sample = {name: [torch.from_dlpack(named[name][i]) for i in range(batch_size)] for name in ragged}
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


class CocoPipelineLoader(PipelineLoader):
    """A :class:`PipelineLoader` over a :class:`CocoDataset` (``self.dataset``): its skip and
    drop statistics and its categories."""

    dataset: CocoDataset

    @property
    def stats(self) -> dict[str, Any]:
        """What was skipped or dropped so far: the reader's counts and the loader's."""
        reader = self.dataset.stats
        return {
            "skipped_images": {**reader.skipped_images, **self.source.skipped},
            "dropped_instances": dict(reader.dropped_instances),
            "clipped_instances": reader.clipped_instances,
        }

    @property
    def categories(self) -> dict[int, dict]:
        """Category id → the json category entry."""
        return self.dataset.categories


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
    server's streams, say) instead of parsing the json again.

    A variant with more options (balanced Copy-Paste) names its config class in
    ``config_type``; the options are parsed once, into that class, before anything is built
    from them, so every part (source, paste parameters, step) sees the variant's defaults.
    """

    #: the config class the keyword options are parsed into (a :class:`CopyPasteLoaderConfig`)
    config_type: ClassVar[type[CopyPasteLoaderConfig]] = CopyPasteLoaderConfig

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        dataset: CocoDataset | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        check_options(type(self).__name__, options, self.config_type.field_names())
        self.config = self.config_type(**options)
        cfg = self.config
        self.backend = resolve_backend(cfg.device)
        if dataset is None:
            dataset = CocoDataset.open(annotation_file, image_dir, on_error=cfg.on_error, require_segmentation=not cfg.paste_by_box)
        elif dataset.on_error != cfg.on_error:
            raise ValueError(
                f"dataset was loaded with on_error={dataset.on_error!r} but the loader has on_error={cfg.on_error!r}"
            )
        self.dataset = dataset
        self.sampler = sampler = epoch_sampler(self.dataset, cfg)
        self.source = CopyPasteSource(
            self.dataset,
            sampler,
            **source_options(cfg),
        )
        self._copy_paste = cfg.copy_paste_params()
        check_workers(cfg.source_workers, cfg.source_start_method or "spawn", cfg.on_error)

    # -- internals ---------------------------------------------------------------------
    def _paste_step(self) -> Any:
        """The batch step of the next pipeline: None for ``CopyPasteStep(copy_paste)``;
        balanced and self-training Copy-Paste return their own."""
        return None

    def _build_pipeline(self) -> Any:
        cfg = self.config
        step = self._paste_step()
        # the default step drops instances left empty by the window: the source may drop them first
        self.source.prune_window_size = cfg.output_size if step is None else None
        return build_copy_paste_pipeline(
            self.source,
            output_size=cfg.output_size,
            copy_paste=self._copy_paste,
            pad_value=cfg.pad_value,
            **pipeline_device_options(cfg, self.backend),
            step=step,
            step_threads=cfg.step_threads or cfg.num_threads,
            source_workers=cfg.source_workers,
            source_start_method=cfg.source_start_method or "spawn",
        )

    def _recover(self, error: RuntimeError) -> None:
        """As :meth:`~decal.dali_pipes.loader_base.PipelineLoader._recover`; with source
        workers, the suspects are the batches they may have made since the last delivered one."""
        cfg = self.config
        if cfg.source_workers:
            expect_worker_batches(self.source, self._position, cfg.prefetch_queue_depth, cfg.source_workers)
        super()._recover(error)

    def _to_batch(self, outputs: tuple[Any, ...]) -> Batch:
        named = CopyPasteOutputs(*outputs)
        images = dense(named.images)
        targets = instance_targets(named._asdict(), images.shape[0])
        return Batch(images=images, targets=targets, position=position_after(named.position))
