"""Per-channel image statistics the pipelines normalise with (``fn.crop_mirror_normalize``)
and the trainers undo for display.

ImageNet's RGB mean and standard deviation of pixel values scaled to [0, 1] (the values
torchvision's and timm's ImageNet models are trained with); a pipeline multiplies them by 255
for uint8 images.
"""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

#: (R, G, B) mean of [0, 1] pixel values.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: (R, G, B) standard deviation of [0, 1] pixel values.
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
