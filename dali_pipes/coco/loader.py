"""What every loader over a COCO/LVIS json shares (copy-paste and its variants, mosaic): its
dataset part, its statistics and its categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

from ..core.epoch_source import EpochBatchSource
from ..core.loader_base import PipelineLoader
from ..core.step_io import DESCRIPTOR_COLUMNS
from .reader import CocoDataset

__all__ = ["CocoPipelineLoader", "coco_dataset", "coco_stats"]


def coco_dataset(
    annotation_file: str | Path, image_dir: str | Path, dataset: CocoDataset | None = None
) -> Callable[[Any], CocoDataset]:
    """The dataset part of an instance loader: ``config ↦`` the :class:`CocoDataset` of
    ``annotation_file`` read with the config's ``on_error`` (segmentations required unless
    ``paste_by_box``) from its cached, memory-mapped index (:meth:`CocoDataset.open`), or
    ``dataset`` when one was parsed already (its ``on_error`` must be the config's)."""

    def read(config: Any) -> CocoDataset:
        if dataset is None:
            return CocoDataset.open(
                annotation_file, image_dir, on_error=config.on_error, require_segmentation=not config.paste_by_box
            )
        if dataset.on_error != config.on_error:
            raise ValueError(
                f"dataset was loaded with on_error={dataset.on_error!r} but the loader has on_error={config.on_error!r}"
            )
        return dataset

    return read


def coco_stats(dataset: CocoDataset, source: EpochBatchSource) -> dict[str, Any]:
    """What was skipped or dropped so far: the reader's counts and the source's skips."""
    reader = dataset.stats
    return {
        "skipped_images": {**reader.skipped_images, **source.skipped},
        "dropped_instances": dict(reader.dropped_instances),
        "clipped_instances": reader.clipped_instances,
    }


class CocoPipelineLoader(PipelineLoader):
    """A :class:`PipelineLoader` over a :class:`CocoDataset`: adds its categories."""

    dataset: CocoDataset

    @property
    def categories(self) -> dict[int, dict]:
        """Category id → the json category entry."""
        return self.dataset.categories

    @property
    def mask_source(self) -> Literal["host", "descriptors"]:
        """Where this loader's masks are made, as its family resolved it: ``"descriptors"``
        when its source sends mask descriptions that the step rasterises at the output size,
        ``"host"`` when it sends host mask stacks."""
        return "descriptors" if set(DESCRIPTOR_COLUMNS) <= set(self.source.column_names) else "host"
