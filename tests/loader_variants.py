"""Loaders the tests assemble from a family's parts with one part changed (the way a variant
family is made, ``dali_pipes/core/assembly.py``), and the draws of a delivered batch."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from decal.dali_pipes.coco.loader import CocoPipelineLoader, coco_dataset
from decal.dali_pipes.copy_paste.loader import COPY_PASTE, copy_paste_source
from decal.dali_pipes.core.assembly import assemble


def copy_paste_with_step(
    annotation_file: str | Path, image_dir: str | Path, make_step: Callable[[Any], Any], **options: Any
) -> CocoPipelineLoader:
    """A copy-paste loader whose every pipeline runs ``make_step(config)`` as its step; its
    source keeps every instance, as for any step but the default one."""
    family = replace(
        COPY_PASTE,
        source=partial(copy_paste_source, prune_window=False),
        steps=lambda config, dataset: lambda: make_step(config),
    )
    return CocoPipelineLoader(assemble(family, options, coco_dataset(annotation_file, image_dir)))


def batch_generator(loader: Any, batch: Any, stream: int) -> np.random.Generator:
    """The generator a loader's source drew ``stream`` of ``batch`` from, recomputed from the
    loader's config and the batch's position: ``[seed, epoch, shard, batch index, stream]``
    (``dali_pipes/core/epoch_source.py``)."""
    cfg, position = loader.config, batch.position
    return np.random.default_rng([cfg.seed, position.epoch, cfg.shard_id, position.batch_index - 1, stream])
