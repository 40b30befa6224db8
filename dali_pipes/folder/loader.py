"""What the image-folder loaders (``CutMixLoader``, ``CP2Loader``) add to
:class:`~decal.dali_pipes.core.loader_base.PipelineLoader`: their skip statistics."""

from __future__ import annotations

from typing import Any

from ..core.loader_base import PipelineLoader

__all__ = ["FolderLoaderBase"]


class FolderLoaderBase(PipelineLoader):
    """A :class:`PipelineLoader` over an :class:`~decal.dali_pipes.folder.image_folder.ImageFolder`."""

    @property
    def stats(self) -> dict[str, Any]:
        """What was skipped: images by reason (``on_error="skip"``), ignored files, and
        empty class directories."""
        return {
            "skipped_images": {**self.source.dataset.stats.skipped_images, **self.source.skipped},
            "ignored_files": self.source.dataset.stats.ignored_files,
            "empty_classes": list(self.source.dataset.stats.empty_classes),
        }
