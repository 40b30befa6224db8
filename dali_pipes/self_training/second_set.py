"""The second set of self-training Copy-Paste: a pseudo-labelled COCO json or a directory of
unlabelled images (:class:`ImageDirectoryDataset`), and its epoch order (a stream read
alongside the labelled epochs, :class:`SecondOrder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..coco.reader import CocoDataset, ImageRecord
from ..core.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "SECOND_ORDER_STREAM", "ImageDirectoryDataset", "SecondOrder", "second_dataset"]

#: Stream of the second set's epoch order (the labelled sampler uses ``[seed, epoch]``).
SECOND_ORDER_STREAM = 11
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ImageDirectoryDataset(CocoDataset):
    """Unlabelled images: every JPEG/PNG file under a directory (sorted by relative path),
    as a :class:`CocoDataset` without categories or annotations.

    Image ids are 1.. in file order; sizes come from the file headers (read once, at load).
    An unreadable file raises a :class:`DatasetError`, or is left out and counted in
    ``stats.skipped_images`` with ``on_error="skip"``.
    """

    def __init__(self, image_dir: str | Path, *, on_error: Literal["raise", "skip"] = "raise") -> None:
        super().__init__(image_dir, image_dir, on_error=on_error)

    def _load(self) -> None:
        root = self.image_dir
        if not root.is_dir():
            raise DatasetError(root, "not a directory of images")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        next_id = 1
        for path in files:
            try:
                with Image.open(path) as img:
                    width, height = img.size
                if self.max_image_pixels is not None and width * height > self.max_image_pixels:
                    raise DatasetError(
                        path, f"too many pixels: {width}x{height} = {width * height} > max_image_pixels "
                        f"{self.max_image_pixels}", field="width",
                    )
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError, DatasetError) as error:
                if isinstance(error, Image.DecompressionBombError):
                    error = DatasetError(path, f"too many pixels for Pillow to open: {error}", field="width")
                elif not isinstance(error, DatasetError):
                    error = DatasetError(path, f"not a readable image: {error}", field="file_name")
                if self.on_error == "raise":
                    raise error
                reason = "too_many_pixels" if error.field == "width" else "unreadable_file"
                self.stats.skipped_images[reason] = self.stats.skipped_images.get(reason, 0) + 1
                continue
            name = path.relative_to(root).as_posix()
            self.records.append(ImageRecord(next_id, name, path, int(width), int(height), ()))
            next_id += 1
        if not self.records:
            raise DatasetError(root, "no readable JPEG or PNG image found")


class SecondOrder:
    """The second set's epoch order: a permutation from ``[seed, epoch, SECOND_ORDER_STREAM]``."""

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, SECOND_ORDER_STREAM])
        return rng.permutation(self.num_items).astype(np.int64)


def second_dataset(
    second_images: str | Path, second_annotations: str | Path | None, config: Any, labelled: CocoDataset
) -> CocoDataset:
    """The second set (``config`` a
    :class:`~decal.dali_pipes.self_training.loader.SelfTrainingLoaderConfig`): a pseudo-labelled COCO json over ``second_images`` when
    ``second_annotations`` is given (its category ids must be ``labelled``'s), else the
    unlabelled images of the directory ``second_images``."""
    if second_annotations is not None:
        second = CocoDataset.open(
            second_annotations, second_images, on_error=config.on_error, require_segmentation=not config.paste_by_box
        )
        unknown = set(np.unique(second.index.labels).tolist()) - set(labelled.categories)
        if unknown:
            raise ValueError(
                f"{second_annotations}: the second set's annotations use category ids {sorted(unknown)} "
                "that the labelled json does not define"
            )
        return second
    return ImageDirectoryDataset(second_images, on_error=config.on_error)  # no annotations to check
