"""Self-training Copy-Paste: pseudo-label a folder with a teacher, merge with the labelled json.

Ghiasi et al. 2021 (§4.4) combine Copy-Paste with self-training (Zoph et al. 2020): a
teacher trained on the labelled data predicts instances on unlabelled images; confident
predictions become hard pseudo-labels; the student trains on labelled + pseudo-labelled
images, and Copy-Paste pastes instances across both. Here:

1. :func:`load_detector` rebuilds a model from a checkpoint of this trainer (its config and
   categories are stored inside) with the EMA weights when present.
2. :func:`pseudo_label_folder` runs it over every image of a folder and writes a COCO json:
   detections with ``score >= score_threshold`` become annotations whose ``segmentation``
   is the thresholded mask as compressed RLE, with ``bbox``/``area`` from that mask (decal
   re-derives boxes from masks anyway) and the teacher's ``score`` kept as an extra field.
3. :func:`merge_coco` merges jsons that live in different image folders into one json (the
   loader takes one json and one image directory): image and annotation ids are renumbered
   to stay distinct, and every ``file_name`` is rewritten relative to the folders' common
   parent, which becomes the image directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from ...dali_pipes.coco.reader import lvis_file_name
from ..common.checkpoint import load_checkpoint
from ..common.config import from_dict
from ..common.distributed import DistInfo, all_gather_object
from .config import DetectionConfig
from .evaluate import iter_image_batches
from .labels import LabelMap
from .model import build_detector, extract_state_dict, predict

__all__ = ["IMAGE_EXTENSIONS", "list_images", "load_detector", "pseudo_label_folder", "merge_coco"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"unlabelled image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_detector(
    checkpoint: str | Path, *, device: torch.device | str = "cpu", prefer_ema: bool = True
) -> tuple[nn.Module, LabelMap, DetectionConfig]:
    """The model of a detection checkpoint (EMA weights when present and ``prefer_ema``),
    in eval mode on ``device``, with its :class:`LabelMap` and config."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    if "config" not in state or "categories" not in state:
        raise ValueError(f"{checkpoint} is not a checkpoint of decal's detection trainer (no config/categories)")
    cfg = from_dict(DetectionConfig, state["config"])
    cfg.model.weights = ""
    cfg.model.backbone_weights = ""
    label_map = LabelMap.from_state(state["categories"])
    model = build_detector(cfg, label_map)
    use_ema = prefer_ema and isinstance(state.get("ema"), dict)
    weights = extract_state_dict(state, prefer_ema=use_ema)
    if use_ema:
        weights.pop("num_updates", None)
    model.load_state_dict(weights)
    model.to(device).eval()
    return model, label_map, cfg


def pseudo_label_folder(
    model: nn.Module,
    image_dir: str | Path,
    label_map: LabelMap,
    out_json: str | Path,
    *,
    device: torch.device | str = "cpu",
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    batch_size: int = 2,
    max_images: int = 0,
    progress: bool = False,
    info: DistInfo = DistInfo(),
) -> dict[str, Any]:
    """Label every image of ``image_dir`` with ``model``; write a COCO json to ``out_json``.

    Image ids are 1..N in sorted path order. Under DDP (collective) each rank labels every
    ``world_size``-th image and the main rank writes the json.

    Returns:
        A summary: ``{"json": path, "images": n, "annotations": m}`` (on every rank).
    """
    from tqdm import tqdm

    device = torch.device(device)
    image_dir = Path(image_dir)
    paths = list_images(image_dir)
    if max_images > 0:
        paths = paths[:max_images]
    images: list[dict] = []
    annotations: list[dict] = []
    entries = list(range(len(paths)))[info.rank :: info.world_size]
    mine = [paths[i] for i in entries]
    total = -(-len(mine) // max(1, batch_size))
    show = progress and info.is_main
    for chunk, tensors in tqdm(iter_image_batches(entries, mine, batch_size), total=total, desc="pseudo-label", disable=not show, leave=False):
        outputs = predict(model, tensors, device)
        for index, tensor, output in zip(chunk, tensors, outputs):
            image_id = index + 1
            height, width = int(tensor.shape[1]), int(tensor.shape[2])
            images.append(
                {"id": image_id, "file_name": paths[index].relative_to(image_dir).as_posix(), "width": width, "height": height}
            )
            keep = output["scores"] >= score_threshold
            if not bool(keep.any()):
                continue
            masks = (output["masks"][keep][:, 0] >= mask_threshold).to(torch.uint8).cpu().numpy()
            scores = output["scores"][keep].cpu().tolist()
            categories = label_map.to_category_ids(output["labels"][keep].cpu()).tolist()
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
            for rle, score, category_id in zip(rles, scores, categories):
                area = float(mask_utils.area(rle))
                if area <= 0:
                    continue
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
                annotations.append(
                    {
                        "id": 0,  # numbered after gathering
                        "image_id": image_id,
                        "category_id": int(category_id),
                        "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                        "score": float(score),
                    }
                )
    parts = all_gather_object((images, annotations), info)
    images = sorted((im for part, _ in parts for im in part), key=lambda im: im["id"])
    annotations = sorted((a for _, part in parts for a in part), key=lambda a: (a["image_id"], -a["score"]))
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    out_json = Path(out_json)
    if info.is_main:
        coco = {
            "info": {"description": f"decal pseudo-labels of {image_dir} (score >= {score_threshold})"},
            "images": images,
            "annotations": annotations,
            "categories": label_map.state(),
        }
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(coco))
    return {"json": str(out_json), "images": len(images), "annotations": len(annotations)}


def _file_name(image: dict) -> str:
    """The image's file under its json's image folder: ``file_name``, or for LVIS the split
    folder and base name of ``coco_url``, as the reader resolves it."""
    name = image.get("file_name")
    if not name and isinstance(image.get("coco_url"), str):
        name = lvis_file_name(image["coco_url"])
    if not name:
        raise ValueError(f"image {image.get('id')} has neither file_name nor coco_url")
    return name


def merge_coco(sources: Sequence[tuple[str | Path, str | Path]], out_json: str | Path) -> tuple[Path, Path]:
    """Merge COCO jsons (each with its image folder) into one json and one image root.

    Categories come from the first json; every other json's categories must be a subset of
    them (same ids). Image ids become 1..N and annotation ids 1..M in source order; each
    image keeps an ``original_id`` and ``source`` index.

    Returns:
        ``(out_json, image_root)``: pass them to the loader.
    """
    if not sources:
        raise ValueError("merge_coco needs at least one source")
    loaded = []
    for json_path, image_dir in sources:
        with open(json_path, encoding="utf-8") as handle:
            loaded.append((json.load(handle), Path(image_dir).resolve()))
    root = Path(os.path.commonpath([str(d) for _, d in loaded]))
    categories = loaded[0][0]["categories"]
    known = {int(c["id"]) for c in categories}
    merged_images, merged_annotations = [], []
    for source_index, (data, image_dir) in enumerate(loaded):
        extra = {int(c["id"]) for c in data.get("categories", [])} - known
        if extra:
            raise ValueError(f"merge_coco: json {source_index} has categories {sorted(extra)} unknown to the first json")
        id_map = {}
        for image in data["images"]:
            new_id = len(merged_images) + 1
            id_map[image["id"]] = new_id
            entry = {k: v for k, v in image.items() if k not in ("coco_url",)}
            entry.update(
                id=new_id,
                file_name=Path(os.path.relpath(image_dir / _file_name(image), root)).as_posix(),
                original_id=image["id"],
                source=source_index,
            )
            merged_images.append(entry)
        for ann in data.get("annotations", []):
            if ann["image_id"] not in id_map:
                continue
            merged_annotations.append(dict(ann, id=len(merged_annotations) + 1, image_id=id_map[ann["image_id"]]))
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "info": {"description": "decal merged dataset", "sources": [str(s[0]) for s in sources]},
                "images": merged_images,
                "annotations": merged_annotations,
                "categories": categories,
            }
        )
    )
    return out_json, root
