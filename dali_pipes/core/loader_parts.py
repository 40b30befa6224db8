"""The parts a loader builds from its config the same way in every family: the epoch
sampler and the keyword options of its :class:`~decal.dali_pipes.core.epoch_source.EpochBatchSource`
(instance families: copy-paste, balanced, self-training, mosaic), the run options of any
source (image-folder families too: CutMix, CP²), and the device options of its DALI graph.
"""

from __future__ import annotations

from typing import Any

from .samplers import RepeatFactorSampler, UniformSampler
from .scale_jitter import ScaleJitter

#: The config fields every source takes (:class:`~decal.dali_pipes.core.epoch_source.EpochBatchSource`).
RUN_FIELDS = ("batch_size", "seed", "shard_id", "num_shards", "drop_last", "on_error")

__all__ = ["epoch_sampler", "source_options", "run_options", "pipeline_device_options", "folder_options", "output_options"]


def epoch_sampler(dataset: Any, cfg: Any) -> RepeatFactorSampler | UniformSampler:
    """LVIS repeat-factor sampling when ``cfg.repeat_factor_threshold`` is set, else the
    uniform sampler (shuffled with ``cfg.shuffle``); both seeded with ``cfg.seed``."""
    if cfg.repeat_factor_threshold is not None:
        return RepeatFactorSampler.from_dataset(dataset, seed=cfg.seed, threshold=cfg.repeat_factor_threshold)
    return UniformSampler(len(dataset), seed=cfg.seed, shuffle=cfg.shuffle)


def run_options(cfg: Any) -> dict[str, Any]:
    """The source keyword options of the run (``dali_pipes/core/common_options.py``) plus the
    batch size: ``batch_size``, ``seed``, ``shard_id``, ``num_shards``, ``drop_last``,
    ``on_error``."""
    return {name: getattr(cfg, name) for name in RUN_FIELDS}


def source_options(cfg: Any) -> dict[str, Any]:
    """The source keyword options an instance loader's config sets: :func:`run_options` plus
    ``jitter`` (parsed to a :class:`ScaleJitter`), ``flip_prob`` and ``paste_by_box``."""
    return dict(
        run_options(cfg),
        jitter=ScaleJitter.parse(cfg.jitter),
        flip_prob=cfg.flip_prob,
        paste_by_box=cfg.paste_by_box,
    )


def pipeline_device_options(cfg: Any, backend: str) -> dict[str, Any]:
    """The graph builder's device options: ``device`` (the resolved ``backend``, ``"cpu"`` or
    ``"gpu"``), ``device_id``, ``num_threads``, ``prefetch_queue_depth``."""
    return dict(
        device=backend,
        device_id=cfg.device_id,
        num_threads=cfg.num_threads,
        prefetch_queue_depth=cfg.prefetch_queue_depth,
    )


def folder_options(cfg: Any) -> dict[str, Any]:
    """The source keyword options of an image-folder loader (CutMix, CP²): :func:`run_options`
    plus ``shuffle`` (its source orders the epoch itself)."""
    return dict(run_options(cfg), shuffle=cfg.shuffle)


def output_options(cfg: Any) -> dict[str, Any]:
    """The image-output options of an image-folder graph (CutMix, CP²): ``normalize``,
    ``mean`` and ``std`` (tuples, per channel in [0, 1] units)."""
    return dict(normalize=cfg.normalize, mean=tuple(cfg.mean), std=tuple(cfg.std))
