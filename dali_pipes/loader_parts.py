"""The parts an instance-segmentation loader builds from its config the same way in every
family (copy-paste, balanced, self-training, mosaic): the epoch sampler and the keyword
options of its :class:`~decal.dali_pipes.epoch_source.EpochBatchSource`.
"""

from __future__ import annotations

from typing import Any

from .samplers import RepeatFactorSampler, UniformSampler
from .scale_jitter import ScaleJitter

__all__ = ["epoch_sampler", "source_options"]


def epoch_sampler(dataset: Any, cfg: Any) -> RepeatFactorSampler | UniformSampler:
    """LVIS repeat-factor sampling when ``cfg.repeat_factor_threshold`` is set, else the
    uniform sampler (shuffled with ``cfg.shuffle``); both seeded with ``cfg.seed``."""
    if cfg.repeat_factor_threshold is not None:
        return RepeatFactorSampler.from_dataset(dataset, seed=cfg.seed, threshold=cfg.repeat_factor_threshold)
    return UniformSampler(len(dataset), seed=cfg.seed, shuffle=cfg.shuffle)


def source_options(cfg: Any) -> dict[str, Any]:
    """The source keyword options an instance loader's config sets: ``batch_size``, ``seed``,
    ``jitter`` (parsed to a :class:`ScaleJitter`), ``flip_prob``, ``shard_id``,
    ``num_shards``, ``drop_last``, ``on_error``, ``paste_by_box``."""
    return dict(
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
