"""Semantic segmentation data and mIoU for CP² fine-tuning.

* :class:`SemanticCoco` — a COCO-style json with instance masks read as a semantic
  segmentation set: label = 1 + the index of the category (sorted ids), 0 = background,
  crowd regions = ignored; larger instances are painted first, so smaller ones stay visible.
* :class:`SegmentationLoader` — resumable, sharded training batches with mmseg's
  augmentation ([CP2] ``config_finetune.py``; see :class:`~.config.SegLoaderConfig`): the
  same ``len()``/``epoch``/``state_dict()``/``load_state_dict()`` contract as decal's loaders,
  so the training loop checkpoints its position. Every draw is a function of
  ``(seed, epoch, rank, position)``.
* :func:`confusion_matrix`, :func:`segmentation_metrics`, :func:`evaluate_segmenter` — mIoU
  as mmseg's ``mean_iou``: per-class IoU over the whole dataset, mean over the classes that
  occur (in the labels or the predictions), plus pixel accuracy (aAcc) and mean class
  accuracy (mAcc).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.core.normalization import IMAGENET_MEAN, IMAGENET_STD

from ..common.distributed import DistInfo, all_reduce_sum
from .config import SegLoaderConfig

__all__ = [
    "SemanticCoco",
    "SegmentationBatch",
    "SegmentationLoader",
    "resize_short_side",
    "confusion_matrix",
    "segmentation_metrics",
    "evaluate_segmenter",
]


class SemanticCoco:
    """Images and semantic label maps from a COCO-style instance json.

    Args:
        annotations: the json. images: its image directory.
        ignore_index: label of crowd regions (255).
    """

    def __init__(self, annotations: str | Path, images: str | Path, *, ignore_index: int = 255) -> None:
        self.coco = CocoDataset(annotations, images)
        self.category_ids = sorted(self.coco.categories)
        self.label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.ignore_index = ignore_index
        if self.num_classes > ignore_index:
            raise ValueError(f"{len(self.category_ids)} categories do not fit below ignore_index {ignore_index}")

    @property
    def num_classes(self) -> int:
        """Categories + background."""
        return len(self.category_ids) + 1

    @property
    def class_names(self) -> list[str]:
        return ["background"] + [str(self.coco.categories[c].get("name", c)) for c in self.category_ids]

    def __len__(self) -> int:
        return len(self.coco)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.coco[index].path) as image:
            return image.convert("RGB")

    def label(self, index: int) -> np.ndarray:
        """(H, W) uint8 label map of image ``index``."""
        record = self.coco[index]
        masks = self.coco.rasterize_masks(record)  # (H, W, N)
        out = np.zeros((record.height, record.width), np.uint8)
        areas = masks.reshape(-1, masks.shape[2]).sum(axis=0) if masks.shape[2] else np.zeros(0)
        for i in np.argsort(-areas, kind="stable"):
            ann = record.annotations[i]
            value = self.ignore_index if ann.iscrowd else self.label_of[ann.category_id]
            out[masks[:, :, i] > 0] = value
        return out


def resize_short_side(width: int, height: int, short: float, long_cap: float) -> tuple[int, int]:
    """mmseg ``Resize(keep_ratio=True)`` to the scale (long_cap, short): the largest size with
    the short side <= ``short`` and the long side <= ``long_cap``; returns (width, height)."""
    scale = min(short / min(width, height), long_cap / max(width, height))
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (array - mean) / std


@dataclass
class SegmentationBatch:
    """Images (B, 3, S, S) float32 normalised, labels (B, S, S) int64 (``ignore_index`` = ignored)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


class _TrainView(torch.utils.data.Dataset):
    """One epoch's remaining samples: ``(dataset index, seed sequence)`` pairs."""

    def __init__(self, data: SemanticCoco, cfg: SegLoaderConfig, items: Sequence[tuple[int, tuple[int, ...]]]) -> None:
        self.data, self.cfg, self.items = data, cfg, list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = self.items[i]
        cfg = self.cfg
        rng = np.random.default_rng(list(seed))
        image, label = self.data.image(index), self.data.label(index)
        # mmseg Resize(img_scale=(4 base, base), ratio_range) + RandomCrop(cat_max_ratio) + RandomFlip + Pad
        ratio = rng.uniform(*cfg.scale_range)
        w, h = resize_short_side(image.width, image.height, cfg.base_size * ratio, 4 * cfg.base_size * ratio)
        image = image.resize((w, h), Image.Resampling.BILINEAR)
        label_img = Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST)
        label = np.asarray(label_img)
        size = cfg.output_size
        ch, cw = min(size, h), min(size, w)
        top = left = 0
        for _ in range(10):
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            if cfg.cat_max_ratio >= 1.0:
                break
            crop = label[top : top + ch, left : left + cw]
            values, counts = np.unique(crop[crop != cfg.ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < cfg.cat_max_ratio:
                break
        image = image.crop((left, top, left + cw, top + ch))
        label = label[top : top + ch, left : left + cw]
        if rng.random() < cfg.flip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            label = label[:, ::-1]
        pixels = torch.zeros(3, size, size)
        pixels[:, :ch, :cw] = _to_tensor(image)  # pad value 0 after normalisation, as mmseg's Pad after Normalize
        target = torch.full((size, size), cfg.ignore_index, dtype=torch.int64)
        target[:ch, :cw] = torch.from_numpy(np.array(label, dtype=np.int64))
        return pixels, target


def _collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> SegmentationBatch:
    return SegmentationBatch(torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]))


class SegmentationLoader:
    """Resumable, sharded augmented batches of a :class:`SemanticCoco` (one epoch per ``iter()``).

    An epoch is a permutation of the images (``seed``, ``epoch``), padded by wrapping to a
    multiple of ``num_shards`` (``DistributedSampler``'s rule) and dealt to the shards; rank r
    takes positions ``r, r + num_shards, ...``. Sample p of an epoch is augmented with
    ``default_rng([seed, epoch, shard_id, p])``.
    """

    def __init__(self, data: SemanticCoco, cfg: SegLoaderConfig, *, shard_id: int = 0, num_shards: int = 1) -> None:
        if cfg.batch_size < 1:
            raise ValueError("loader.batch_size must be >= 1")
        self.data, self.cfg = data, cfg
        self.shard_id, self.num_shards = shard_id, num_shards
        self._epoch = 0
        self._batch_index = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def _shard_indices(self, epoch: int) -> list[int]:
        n = len(self.data)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n) if self.cfg.shuffle else np.arange(n)
        total = math.ceil(n / self.num_shards) * self.num_shards
        order = np.resize(order, total)  # wrap around
        return [int(i) for i in order[self.shard_id :: self.num_shards]]

    def _batches_in(self, count: int) -> int:
        return count // self.cfg.batch_size if self.cfg.drop_last else math.ceil(count / self.cfg.batch_size)

    def __len__(self) -> int:
        return self._batches_in(len(self._shard_indices(self._epoch)))

    def __iter__(self) -> Iterator[SegmentationBatch]:
        epoch, bs = self._epoch, self.cfg.batch_size
        indices = self._shard_indices(epoch)
        batches = self._batches_in(len(indices))
        start = self._batch_index * bs
        stop = min(len(indices), batches * bs)
        items = [(indices[p], (self.cfg.seed, epoch, self.shard_id, p)) for p in range(start, stop)]
        loader = torch.utils.data.DataLoader(
            _TrainView(self.data, self.cfg, items),
            batch_size=bs,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        for batch in loader:
            self._batch_index += 1
            yield batch
        self._epoch, self._batch_index = epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "batch_index": self._batch_index,
            "seed": self.cfg.seed,
            "shard_id": self.shard_id,
            "num_shards": self.num_shards,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (("seed", self.cfg.seed), ("shard_id", self.shard_id), ("num_shards", self.num_shards)):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"loader state: field '{key}' is {state[key]} but this loader has {mine}")
        self._epoch, self._batch_index = int(state["epoch"]), int(state["batch_index"])


# --------------------------------------------------------------------------- mIoU


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(C, C) int64 counts, rows = label, columns = prediction; ignored pixels left out."""
    keep = label != ignore_index
    index = label[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """mIoU, mAcc, aAcc (fractions in [0, 1]) and the per-class IoU of a confusion matrix.

    As mmseg: IoU_c = TP / (TP + FP + FN); a class that never occurs (no label, no
    prediction: union 0) is NaN and left out of the mean; Acc_c = TP / (labelled pixels of c),
    NaN without any.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    labelled = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    union = labelled + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(labelled > 0, tp / labelled.clamp(min=1), torch.full_like(tp, math.nan))
    metrics = {
        "mIoU": float(torch.nanmean(iou)) if bool((union > 0).any()) else math.nan,
        "mAcc": float(torch.nanmean(acc)) if bool((labelled > 0).any()) else math.nan,
        "aAcc": float(tp.sum() / labelled.sum().clamp(min=1)),
        "num_classes_present": int((union > 0).sum()),
    }
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    for name, value in zip(names, iou.tolist()):
        if not math.isnan(value):
            metrics[f"IoU/{name}"] = value
    return metrics


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    data: SemanticCoco,
    *,
    device: torch.device,
    base_size: int,
    max_images: int = 0,
    info: DistInfo | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """mIoU of ``model`` on ``data``: each image at short side ``base_size`` (long side at most
    4×), logits resized to the original size, argmax, one confusion matrix summed over ranks
    (rank r evaluates images r, r + world, ...)."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    count = len(data) if max_images <= 0 else min(max_images, len(data))
    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64, device=device)
    try:
        for index in range(info.rank, count, info.world_size):
            image, label = data.image(index), torch.from_numpy(data.label(index)).to(device)
            w, h = resize_short_side(image.width, image.height, base_size, 4 * base_size)
            pixels = _to_tensor(image.resize((w, h), Image.Resampling.BILINEAR))[None].to(device)
            with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
                logits = model(pixels)
            logits = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
            confusion += confusion_matrix(logits.argmax(dim=1)[0], label, data.num_classes, data.ignore_index)
    finally:
        model.train(was_training)
    confusion = all_reduce_sum(confusion, info)
    metrics = segmentation_metrics(confusion.cpu(), data.class_names)
    metrics["num_images"] = count
    return metrics
