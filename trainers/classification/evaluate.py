"""Top-1/top-5 evaluation on an ImageFolder, without mixing.

A small host-side reader rather than the training loader: the evaluation protocol of
[CUTMIX]/torchvision is deterministic (``Resize(round(S / crop_pct))`` + ``CenterCrop(S)``),
which the CutMix loader's random-resized-crop pipeline does not provide even with mixing off.
Files are listed by decal's :class:`~decal.dali_pipes.folder.image_folder.ImageFolder` (torchvision
``ImageFolder`` semantics) and decoded with PIL; rank r of W evaluates images r, r + W, ...
and the counts are summed over ranks, so every image is counted exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from decal.dali_pipes.folder.image_folder import ImageFolder

from ..common.distributed import DistInfo, all_reduce_sum
from .losses import topk_correct

__all__ = ["EvalFolder", "evaluate_classifier"]


class EvalFolder(torch.utils.data.Dataset):
    """``(image tensor, label)`` of an ImageFolder, labels mapped onto the training classes.

    Args:
        root: the folder (one sub-directory per class).
        class_names: the training classes (index = label); every class directory of ``root``
            must be one of them.
        image_size: S. crop_pct: S / resize side. mean, std: normalisation ([0, 1] units).
        indices: the subset of files to read (default: all).
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str],
        *,
        image_size: int,
        crop_pct: float = 0.875,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        indices: Sequence[int] | None = None,
    ) -> None:
        self.folder = ImageFolder(root, labelled=True)
        index_of = {name: i for i, name in enumerate(class_names)}
        unknown = [name for name in self.folder.classes if name not in index_of]
        if unknown:
            raise ValueError(f"{root}: classes {unknown[:5]} are not among the training classes")
        self.remap = [index_of[name] for name in self.folder.classes]
        self.indices = list(range(len(self.folder))) if indices is None else list(indices)
        self.transform = transforms.Compose(
            [
                transforms.Resize(int(round(image_size / crop_pct)), interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(list(mean), list(std)),
            ]
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.folder[self.indices[i]]
        with Image.open(item.path) as image:
            pixels = self.transform(image.convert("RGB"))
        return pixels, self.remap[item.label]


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    folder: EvalFolder,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    max_images: int = 0,
    device: torch.device | str = "cpu",
    info: DistInfo | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """``{"top1", "top5", "loss", "num_images"}`` of ``model`` on ``folder`` (fractions in
    [0, 1]; ``loss`` is the mean cross-entropy); ``max_images`` > 0: only its first images."""
    info = info or DistInfo()
    device = torch.device(device)
    count = len(folder) if max_images <= 0 else min(max_images, len(folder))
    dataset = torch.utils.data.Subset(folder, range(info.rank, count, info.world_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, loss sum, images
    was_training = model.training
    model.eval()
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
                logits = model(images)
            top1, top5 = topk_correct(logits.float(), labels, (1, 5))
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            sums += torch.tensor([top1, top5, float(loss), len(labels)], dtype=torch.float64, device=device)
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums, info)
    n = max(1.0, float(sums[3]))
    return {"top1": float(sums[0]) / n, "top5": float(sums[1]) / n, "loss": float(sums[2]) / n, "num_images": int(sums[3])}
