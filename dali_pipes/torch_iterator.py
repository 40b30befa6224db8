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
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..kernels.copy_paste import CopyPasteParams
from .backend import resolve_backend
from .coco_reader import CocoDataset
from .copy_paste_pipeline import OUTPUT_NAMES, build_copy_paste_pipeline
from .batch import Batch
from .copy_paste_source import CopyPasteSource
from .loader_config import check_loader_config
from .loader_base import PipelineLoader, check_options, dense, position_after
from .parallel_source import check_workers, expect_worker_batches
from .samplers import RepeatFactorSampler, UniformSampler
from .scale_jitter import ScaleJitter


@dataclass(frozen=True)
class CopyPasteLoaderConfig:
    """Every parameter of :class:`CopyPasteLoader`, with its default.

    Attributes:
        batch_size: images per batch (the last batch of an epoch may be smaller unless
            ``drop_last``).
        output_size: S, the output images are S×S pixels.
        jitter: ``"lsj"`` (r in [0.1, 2.0]), ``"ssj"`` ([0.8, 1.25]), ``"none"``, a
            (min, max) pair, or a :class:`ScaleJitter`; r is the resized longer side over S.
        flip_prob: probability of a horizontal flip.
        pad_value: gray level of the padding.
        copy_paste: False for scale jitter and flip only.
        max_num_pasted, blend_sigma, mask_occluded_thr, bbox_occluded_thr, paste_by_box:
            see :class:`~decal.kernels.copy_paste.CopyPasteParams` (mmdetection defaults).
        seed: fixes every draw; a run is a function of (seed, epoch, shard, position).
        shuffle: shuffle each epoch (uniform sampler); ignored with repeat-factor sampling.
        repeat_factor_threshold: None for the uniform sampler; t for LVIS repeat-factor
            sampling (0.001 in the LVIS paper).
        shard_id, num_shards: this process's part of each epoch (DDP: rank, world size).
        drop_last: drop the last incomplete batch of each epoch.
        on_error: ``"raise"`` a :class:`DatasetError` on bad input, or ``"skip"`` the image
            and count it in :attr:`CopyPasteLoader.stats`.
        device: ``"gpu"``, ``"cpu"``, or None/``"auto"`` (the GPU when one is usable).
        device_id: CUDA device index.
        num_threads: DALI CPU threads.
        prefetch_queue_depth: batches prepared ahead.
        step_threads: threads of the copy-paste step on the CPU backend (per-sample chunks,
            the same batches bit for bit, :mod:`~decal.kernels.parallel_batch`); None: as
            many as ``num_threads``.
        source_workers: 0 calls the source in DALI's thread; N > 0 runs it (file reads and
            the mask raster) in N worker processes, DALI's parallel external source
            (:mod:`~decal.dali_pipes.parallel_source`): the same batches; needs
            ``on_error="raise"``.
        source_start_method: the workers' ``"fork"`` or ``"spawn"``; None: ``"fork"`` on the
            CPU backend, ``"spawn"`` on the GPU (a CUDA context forbids forking).
    """

    batch_size: int = 8
    output_size: int = 1024
    jitter: Any = "lsj"
    flip_prob: float = 0.5
    pad_value: int = 114
    copy_paste: bool = True
    max_num_pasted: int = 100
    blend_sigma: float = 0.0
    mask_occluded_thr: int = 300
    bbox_occluded_thr: float = 10.0
    paste_by_box: bool = False
    seed: int = 0
    shuffle: bool = True
    repeat_factor_threshold: float | None = None
    shard_id: int = 0
    num_shards: int = 1
    drop_last: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    device: str | None = None
    device_id: int = 0
    num_threads: int = 2
    prefetch_queue_depth: int = 2
    step_threads: int | None = None
    source_workers: int = 0
    source_start_method: str | None = None

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
    ragged = ("masks", "boxes", "areas", "labels", "iscrowd") + (("pasted",) if "pasted" in named else ()) + extra
    per_sample = {name: [torch.from_dlpack(named[name][i]) for i in range(batch_size)] for name in ragged}
    image_ids = np.array(named["image_id"].as_tensor()).reshape(-1)
    targets = []
    for i in range(batch_size):
        labels = per_sample["labels"][i]
        target = {
            "boxes": per_sample["boxes"][i],
            "labels": labels,
            "masks": per_sample["masks"][i],
            "area": per_sample["areas"][i],
            "iscrowd": per_sample["iscrowd"][i],
            "pasted": per_sample["pasted"][i]
            if "pasted" in per_sample
            else torch.zeros(labels.shape, dtype=torch.uint8, device=labels.device),
            "image_id": torch.tensor(int(image_ids[i])),
        }
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
            dataset = CocoDataset(annotation_file, image_dir, on_error=cfg.on_error, require_segmentation=not cfg.paste_by_box)
        elif dataset.on_error != cfg.on_error:
            raise ValueError(
                f"dataset was loaded with on_error={dataset.on_error!r} but the loader has on_error={cfg.on_error!r}"
            )
        self.dataset = dataset
        if cfg.repeat_factor_threshold is not None:
            sampler: Any = RepeatFactorSampler.from_dataset(
                self.dataset, seed=cfg.seed, threshold=cfg.repeat_factor_threshold
            )
        else:
            sampler = UniformSampler(len(self.dataset), seed=cfg.seed, shuffle=cfg.shuffle)
        self.sampler = sampler
        self.source = CopyPasteSource(
            self.dataset,
            sampler,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            jitter=ScaleJitter.parse(cfg.jitter),
            flip_prob=cfg.flip_prob,
            shard_id=cfg.shard_id,
            num_shards=cfg.num_shards,
            drop_last=cfg.drop_last,
            on_error=cfg.on_error,
            paste_by_box=cfg.paste_by_box,
        )
        self._copy_paste = cfg.copy_paste_params()
        check_workers(cfg.source_workers, cfg.source_start_method or "fork", cfg.on_error)

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
            device=self.backend,
            device_id=cfg.device_id,
            num_threads=cfg.num_threads,
            prefetch_queue_depth=cfg.prefetch_queue_depth,
            step=step,
            step_threads=cfg.step_threads or cfg.num_threads,
            source_workers=cfg.source_workers,
            source_start_method=cfg.source_start_method or ("spawn" if self.backend == "gpu" else "fork"),
        )

    def _recover(self, error: RuntimeError) -> None:
        """As :meth:`~decal.dali_pipes.loader_base.PipelineLoader._recover`; with source
        workers, the suspects are the batches they may have made since the last delivered one."""
        cfg = self.config
        if cfg.source_workers:
            expect_worker_batches(self.source, self._position, cfg.prefetch_queue_depth, cfg.source_workers)
        super()._recover(error)

    def _to_batch(self, outputs: tuple[Any, ...]) -> Batch:
        named = dict(zip(OUTPUT_NAMES, outputs))
        images = dense(named["images"])
        targets = instance_targets(named, images.shape[0])
        return Batch(images=images, targets=targets, position=position_after(named["position"]))
