"""The baseline people run today: a torch ``DataLoader`` (one worker process per core) over a
per-image NumPy pipeline in the style of mmdetection's LSJ + ``CopyPaste`` config.

Written here (mmdetection is not a dependency), following the semantics of mmdetection 3.x:

* ``LoadImageFromFile``: OpenCV ``imdecode`` (BGR, as mmcv), PIL when OpenCV is missing;
* ``LoadAnnotations(with_mask=True, poly2mask=True)``: one bitmap per instance at the original
  size with pycocotools (``frPyObjects`` + ``merge`` + ``decode``);
* ``RandomResize(scale=(S, S), ratio_range=(0.1, 2.0), keep_ratio=True)``: the image with
  bilinear interpolation, each mask with nearest neighbour, one ``cv2.resize`` per mask as
  ``BitmapMasks.rescale`` does;
* ``RandomCrop(crop_size=(S, S), allow_negative_crop=True, recompute_bbox=True)``, then
  ``Pad(size=(S, S), pad_val=114)``, ``RandomFlip(prob=0.5)``, boxes recomputed from masks and
  empty instances filtered;
* ``MultiImageMixDataset`` + ``CopyPaste(max_num_pasted=100, bbox_occluded_thr=10,
  mask_occluded_thr=300)``: every output image loads a second, random image through the same
  pipeline, pastes a random subset of its instances (``randint(0, min(N + 1, 100))`` of them),
  clears the pasted pixels from the destination masks and drops instances that keep neither
  more than 300 pixels nor a box within 10 px of the old one.

Everything is per image, in the worker processes; batches are collated in the main process
(images stacked into one uint8 tensor, targets as a list of dicts of tensors).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = ["MMDetStyleCopyPaste", "collate", "decoder_name", "make_loader"]

try:  # OpenCV, as mmcv uses it; the benchmark records which decoder ran
    import cv2

    cv2.setNumThreads(1)  # one worker per core: no nested threading
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None


def decoder_name() -> str:
    return f"opencv {cv2.__version__}" if cv2 is not None else "PIL (opencv-python-headless not installed)"


def _decode(data: np.ndarray) -> np.ndarray:
    if cv2 is not None:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))[:, :, ::-1].copy()


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    w, h = size
    if cv2 is not None:
        return cv2.resize(array, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize((w, h), Image.NEAREST if nearest else Image.BILINEAR))


def _boxes(masks: np.ndarray) -> np.ndarray:
    """mmdet ``BitmapMasks.get_bboxes``: xyxy, exclusive max, zeros for empty masks."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        ys = np.flatnonzero(masks[i].any(axis=1))
        xs = np.flatnonzero(masks[i].any(axis=0))
        if len(xs):
            boxes[i] = [xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]
    return boxes


class MMDetStyleCopyPaste(torch.utils.data.Dataset):
    """Per-image LSJ + Copy-Paste, mmdetection style (see the module docstring)."""

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        output_size: int = 1024,
        ratio_range: tuple[float, float] = (0.1, 2.0),
        max_num_pasted: int = 100,
        bbox_occluded_thr: float = 10.0,
        mask_occluded_thr: int = 300,
        pad_value: int = 114,
        seed: int = 0,
    ) -> None:
        coco = json.loads(Path(annotation_file).read_text())
        self.image_dir = Path(image_dir)
        self.images = coco["images"]
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self.annotations = [by_image[img["id"]] for img in self.images]
        self.output_size = output_size
        self.ratio_range = ratio_range
        self.max_num_pasted = max_num_pasted
        self.bbox_occluded_thr = bbox_occluded_thr
        self.mask_occluded_thr = mask_occluded_thr
        self.pad_value = pad_value
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    # -- one image through LoadImage, LoadAnnotations, RandomResize, RandomCrop, Pad, Flip ---
    def load(self, index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        info = self.images[index]
        img = _decode(np.fromfile(self.image_dir / info["file_name"], dtype=np.uint8))
        h, w = img.shape[:2]
        anns = [a for a in self.annotations[index] if not a.get("iscrowd", 0)]  # mmdet ignores crowds
        masks = np.zeros((len(anns), h, w), np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for i, ann in enumerate(anns):
                rle = mask_utils.frPyObjects(ann["segmentation"], h, w)
                masks[i] = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
        labels = np.array([a["category_id"] for a in anns], np.int64)

        s = self.output_size
        target = s * rng.uniform(*self.ratio_range)
        scale = min(target / h, target / w)
        nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        img = _resize(img, (nw, nh), nearest=False)
        masks = np.stack([_resize(m, (nw, nh), nearest=True) for m in masks]) if len(masks) else np.zeros((0, nh, nw), np.uint8)

        oy = int(rng.integers(0, max(nh - s, 0) + 1))
        ox = int(rng.integers(0, max(nw - s, 0) + 1))
        img = img[oy : oy + s, ox : ox + s]
        masks = masks[:, oy : oy + s, ox : ox + s]
        ch, cw = img.shape[:2]
        padded = np.full((s, s, 3), self.pad_value, np.uint8)
        padded[:ch, :cw] = img
        pmasks = np.zeros((len(masks), s, s), np.uint8)
        pmasks[:, :ch, :cw] = masks
        if rng.random() < 0.5:
            padded = padded[:, ::-1]
            pmasks = pmasks[:, :, ::-1]
        boxes = _boxes(pmasks)
        keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
        return {"img": np.ascontiguousarray(padded), "masks": np.ascontiguousarray(pmasks[keep]),
                "boxes": boxes[keep], "labels": labels[keep]}

    # -- mmdet CopyPaste._copy_paste -----------------------------------------------------
    def copy_paste(self, dst: dict[str, np.ndarray], src: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(src["masks"])
        num = int(rng.integers(0, min(n + 1, self.max_num_pasted)))
        selected = rng.choice(n, size=num, replace=False) if n else np.zeros(0, np.int64)
        if len(selected) == 0:
            return dst
        src_masks = src["masks"][selected]
        composed = np.any(src_masks, axis=0).astype(np.uint8)
        updated = dst["masks"] * (1 - composed)[None]
        updated_boxes = _boxes(updated)
        box_ok = np.all(np.abs(updated_boxes - dst["boxes"]) <= self.bbox_occluded_thr, axis=-1)
        mask_ok = updated.sum(axis=(1, 2)) > self.mask_occluded_thr
        valid = box_ok | mask_ok
        c = composed[..., None]
        img = dst["img"] * (1 - c) + src["img"] * c
        return {
            "img": img,
            "masks": np.concatenate([updated[valid], src_masks]),
            "boxes": np.concatenate([updated_boxes[valid], src["boxes"][selected]]),
            "labels": np.concatenate([dst["labels"][valid], src["labels"][selected]]),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        dst = self.load(index, rng)
        src = self.load(int(rng.integers(len(self))), rng)
        out = self.copy_paste(dst, src, rng)
        image = torch.from_numpy(np.ascontiguousarray(out["img"])).permute(2, 0, 1)
        target = {
            "masks": torch.from_numpy(out["masks"]),
            "boxes": torch.from_numpy(out["boxes"]),
            "labels": torch.from_numpy(out["labels"]),
        }
        return image, target


def collate(items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    return torch.stack([i for i, _ in items]), [t for _, t in items]


def make_loader(dataset: MMDetStyleCopyPaste, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """One worker process per core, as people configure it (shuffled, persistent workers)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        drop_last=True,
    )
