"""What the image-folder loaders (``CutMixLoader``, ``CP2Loader``) share: their dataset part
and their statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..core.epoch_source import EpochBatchSource
from .image_folder import ImageFolder

__all__ = ["folder_dataset", "folder_stats"]


def folder_dataset(root: str | Path, labelled: bool | None = None) -> Callable[[Any], ImageFolder]:
    """The dataset part of a folder loader: ``config ↦`` the :class:`ImageFolder` at ``root``,
    read with the config's ``on_error`` and ``verify``; ``labelled`` (class = sub-directory)
    as given, or the config's ``labelled`` when None."""

    def read(config: Any) -> ImageFolder:
        classes = config.labelled if labelled is None else labelled
        return ImageFolder(root, labelled=classes, on_error=config.on_error, verify=config.verify)

    return read


def folder_stats(dataset: ImageFolder, source: EpochBatchSource) -> dict[str, Any]:
    """What was skipped: images by reason (``on_error="skip"``), ignored files, and empty
    class directories."""
    return {
        "skipped_images": {**dataset.stats.skipped_images, **source.skipped},
        "ignored_files": dataset.stats.ignored_files,
        "empty_classes": list(dataset.stats.empty_classes),
    }
