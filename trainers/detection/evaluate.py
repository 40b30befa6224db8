"""Evaluation of a Mask R-CNN: pycocotools COCOeval box and mask AP; LVIS's federated
evaluation (the official LVIS API, trainers/detection/lvis_eval.py) on LVIS jsons.

The evaluation reads the original images with PIL, in json order, with no augmentation,
and lets torchvision's transform resize them (longer side to the training output size, see
:class:`~.config.ModelConfig`); its outputs come back in each original image's pixels, so
no coordinate mapping is needed. (decal's loader is not used here: with ``jitter="none"``
it still places a non-square image at a random position of its square canvas, and the
offset is not part of its output.)

Which protocol (:func:`evaluate_results`): a json is LVIS when a category carries
``frequency`` or an image ``neg_category_ids``/``not_exhaustive_category_ids``. An LVIS json
is evaluated by ``lvis.LVISEval`` (federated: APr/APc/APf as the LVIS papers report them,
metric ``lvis_federated`` = 1); every other json, and an LVIS json when the ``lvis`` package
does not import (with a warning saying so), by COCOeval.

COCOeval metrics (``<iou_type>/<name>``, -1 where undefined): ``AP``, ``AP50``, ``AP75``,
``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100`` (``AR<max_dets>``); and, when the
categories carry LVIS ``frequency`` tags, ``APr``, ``APc``, ``APf``: the mean over the
rare/common/frequent categories of COCOeval's per-category AP (IoU 0.5:0.95, all areas,
``max_dets`` detections). These follow LVIS's definition of the groups, but COCOeval is not
LVIS's federated protocol (no ``neg_category_ids``/``not_exhaustive_category_ids``
handling), hence the LVIS API when it is there. LVIS metrics: see
:func:`~.lvis_eval.lvis_evaluate`.

Under DDP each rank predicts every ``world_size``-th image; rank 0 gathers and evaluates, and
every rank gets the metrics.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from ..common.distributed import DistInfo, all_gather_object, broadcast_object
from .iou_types import results_for_iou_type
from .labels import FREQUENCY_GROUPS, LabelMap
from .lvis_eval import import_lvis, is_lvis_json, lvis_evaluate
from .model import predict

__all__ = [
    "read_image",
    "iter_image_batches",
    "detections_to_coco",
    "predict_records",
    "read_ground_truth",
    "load_ground_truth",
    "coco_evaluate",
    "evaluate_results",
    "evaluate_detector",
]

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR{n}", "ARs", "ARm", "ARl")


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 tensor (RGB, stored orientation)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def iter_image_batches(items: Sequence[Any], paths: Sequence[Path], batch_size: int) -> Iterator[tuple[list[Any], list[torch.Tensor]]]:
    """(items, decoded images) in batches of ``batch_size``."""
    for start in range(0, len(items), max(1, batch_size)):
        chunk = list(range(start, min(start + batch_size, len(items))))
        yield [items[i] for i in chunk], [read_image(paths[i]) for i in chunk]


def _encode_masks(masks: torch.Tensor, threshold: float) -> list[dict]:
    """(N, 1, H, W) probabilities → compressed RLEs with str counts."""
    if masks.shape[0] == 0:
        return []
    binary = (masks[:, 0] >= threshold).to(torch.uint8).cpu().numpy()
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def detections_to_coco(
    output: Mapping[str, torch.Tensor], image_id: int, label_map: LabelMap, *, mask_threshold: float = 0.5
) -> list[dict]:
    """One image's torchvision output as COCO results (``bbox`` xywh, ``segmentation`` RLE)."""
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu()
    category_ids = label_map.to_category_ids(output["labels"].detach().cpu())
    rles = _encode_masks(output["masks"].detach().float(), mask_threshold) if "masks" in output else []
    results = []
    for i in range(boxes.shape[0]):
        x0, y0, x1, y1 = boxes[i].tolist()
        entry = {
            "image_id": int(image_id),
            "category_id": int(category_ids[i]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(scores[i]),
        }
        if rles:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


@contextlib.contextmanager
def _inference_settings(model: nn.Module, score_thresh: float | None, max_dets: int | None):
    heads = model.roi_heads
    saved = (heads.score_thresh, heads.detections_per_img)
    if score_thresh is not None:
        heads.score_thresh = score_thresh
    if max_dets is not None:
        heads.detections_per_img = max_dets
    try:
        yield
    finally:
        heads.score_thresh, heads.detections_per_img = saved


@torch.no_grad()
def predict_records(
    model: nn.Module,
    records: Sequence[Any],
    label_map: LabelMap,
    *,
    device: torch.device,
    batch_size: int = 2,
    mask_threshold: float = 0.5,
    score_thresh: float | None = None,
    max_dets: int | None = None,
    info: DistInfo = DistInfo(),
    progress: bool = False,
) -> list[dict]:
    """COCO results of ``model`` on ``records`` (``ImageRecord``s: ``image_id``, ``path``),
    gathered on every rank."""
    from tqdm import tqdm

    mine = list(records)[info.rank :: info.world_size]
    results: list[dict] = []
    with _inference_settings(model, score_thresh, max_dets):
        batches = iter_image_batches(mine, [r.path for r in mine], batch_size)
        total = -(-len(mine) // max(1, batch_size))
        for chunk, images in tqdm(batches, total=total, desc="eval", disable=not (progress and info.is_main), leave=False):
            outputs = predict(model, images, device)
            for record, output in zip(chunk, outputs):
                results.extend(detections_to_coco(output, record.image_id, label_map, mask_threshold=mask_threshold))
    gathered = all_gather_object(results, info)
    return [r for part in gathered for r in part]


def read_ground_truth(annotation_file: str | Path | dict, image_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """The json as a dict (a copy), with defaults COCOeval needs filled in (LVIS jsons have no
    ``iscrowd``); restricted to ``image_ids`` when given."""
    if isinstance(annotation_file, dict):
        data = copy.deepcopy(annotation_file)
    else:
        with open(annotation_file, encoding="utf-8") as handle:
            data = json.load(handle)
    if image_ids is not None:
        keep = set(int(i) for i in image_ids)
        data["images"] = [im for im in data["images"] if int(im["id"]) in keep]
        data["annotations"] = [a for a in data.get("annotations", []) if int(a["image_id"]) in keep]
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            bbox = ann.get("bbox") or [0, 0, 0, 0]
            ann["area"] = float(bbox[2] * bbox[3])
    return data


def load_ground_truth(annotation_file: str | Path | dict, image_ids: Iterable[int] | None = None) -> COCO:
    """A pycocotools ``COCO`` of :func:`read_ground_truth`'s dict, built quietly."""
    coco = COCO()
    coco.dataset = read_ground_truth(annotation_file, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _summary_stats(evaluator: COCOeval, max_dets: int) -> list[float]:
    """COCOeval's 12 summary numbers, computed for ``max_dets`` detections.

    (pycocotools' ``summarize`` hard-codes 100 detections for its first AP, which gives -1
    with LVIS's 300; this is the same arithmetic without that assumption.)"""
    params = evaluator.params

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    def ap(iou: float | None = None, area: str = "all", dets: int = max_dets) -> float:
        s = evaluator.eval["precision"]  # [T, R, K, A, M]
        if iou is not None:
            s = s[np.isclose(params.iouThrs, iou)]
        return mean(s[:, :, :, params.areaRngLbl.index(area), params.maxDets.index(dets)])

    def ar(area: str = "all", dets: int = max_dets) -> float:
        s = evaluator.eval["recall"]  # [T, K, A, M]
        return mean(s[:, :, params.areaRngLbl.index(area), params.maxDets.index(dets)])

    return [
        ap(), ap(0.5), ap(0.75), ap(area="small"), ap(area="medium"), ap(area="large"),
        ar(dets=params.maxDets[0]), ar(dets=params.maxDets[1]), ar(),
        ar("small"), ar("medium"), ar("large"),
    ]


def _frequency_ap(evaluator: COCOeval, frequencies: Mapping[int, str]) -> dict[str, float]:
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    per_category: dict[int, float] = {}
    for k, cid in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_category[int(cid)] = float(np.mean(p))
    out = {}
    for group in FREQUENCY_GROUPS:
        values = [ap for cid, ap in per_category.items() if frequencies.get(cid) == group]
        out[f"AP{group}"] = float(np.mean(values)) if values else -1.0
    return out


def coco_evaluate(
    ground_truth: COCO,
    results: list[dict],
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
    max_dets: int = 100,
    frequencies: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """COCOeval metrics of ``results`` against ``ground_truth`` (see the module docstring).

    ``frequencies`` (category id → r/c/f) adds APr/APc/APf.
    """
    image_ids = sorted(ground_truth.getImgIds())
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        dets = results_for_iou_type(results, iou_type)
        names = [n.replace("{n}", str(max_dets)) for n in _STAT_NAMES]
        if not dets:
            # no detection at all: every precision is 0 where there is ground truth
            metrics.update({f"{iou_type}/{n}": 0.0 for n in names})
            if frequencies:
                metrics.update({f"{iou_type}/AP{g}": 0.0 for g in FREQUENCY_GROUPS})
            continue
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detections = ground_truth.loadRes(copy.deepcopy(dets))
            evaluator = COCOeval(ground_truth, detections, iouType=iou_type)
            evaluator.params.imgIds = image_ids
            evaluator.params.maxDets = [1, 10, max_dets]
            evaluator.evaluate()
            evaluator.accumulate()
        metrics.update({f"{iou_type}/{n}": v for n, v in zip(names, _summary_stats(evaluator, max_dets))})
        if frequencies:
            metrics.update({f"{iou_type}/{k}": v for k, v in _frequency_ap(evaluator, frequencies).items()})
    return metrics


def evaluate_results(
    ground_truth: dict[str, Any],
    results: list[dict],
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
    max_dets: int = 100,
) -> dict[str, float]:
    """Metrics of COCO-format ``results`` against a ground-truth json dict (every image of it):
    LVIS's federated evaluation for an LVIS json when ``lvis`` imports, else COCOeval (see the
    module docstring). LVIS results carry ``lvis_federated`` = 1.0, COCOeval results on an
    LVIS json 0.0."""
    lvis_json = is_lvis_json(ground_truth)
    if lvis_json:
        try:
            import_lvis()
        except ImportError as error:
            warnings.warn(
                f"{error}. Falling back to COCOeval: its APr/APc/APf ignore neg_category_ids and "
                "not_exhaustive_category_ids, so they are not LVIS's federated numbers",
                stacklevel=2,
            )
        else:
            metrics = lvis_evaluate(ground_truth, results, iou_types=iou_types, max_dets=max_dets)
            return {**metrics, "lvis_federated": 1.0}
    frequencies = {int(c["id"]): c["frequency"] for c in ground_truth.get("categories", []) if c.get("frequency")}
    coco = load_ground_truth(ground_truth)
    metrics = coco_evaluate(coco, results, iou_types=iou_types, max_dets=max_dets, frequencies=frequencies or None)
    return {**metrics, "lvis_federated": 0.0} if lvis_json else metrics


def evaluate_detector(
    model: nn.Module,
    annotation_file: str | Path,
    image_dir: str | Path,
    label_map: LabelMap,
    *,
    device: torch.device,
    batch_size: int = 2,
    max_images: int = 0,
    max_dets: int = 100,
    score_thresh: float | None = None,
    mask_threshold: float = 0.5,
    iou_types: Sequence[str] = ("bbox", "segm"),
    info: DistInfo = DistInfo(),
    progress: bool = False,
    results_path: str | Path | None = None,
) -> dict[str, float]:
    """Predict on a COCO/LVIS json's images and evaluate (collective under DDP).

    An LVIS json gets LVIS's federated evaluation (:func:`evaluate_results`). With
    ``results_path`` the main rank also writes the detections (COCO results json).
    """
    from decal.dali_pipes.coco.reader import CocoDataset

    dataset = CocoDataset(annotation_file, image_dir)
    records = dataset.records[:max_images] if max_images > 0 else dataset.records
    results = predict_records(
        model,
        records,
        label_map,
        device=device,
        batch_size=batch_size,
        mask_threshold=mask_threshold,
        score_thresh=score_thresh,
        max_dets=max_dets,
        info=info,
        progress=progress,
    )
    metrics: dict[str, float] | None = None
    if info.is_main:
        ground_truth = read_ground_truth(annotation_file, [r.image_id for r in records])
        metrics = evaluate_results(ground_truth, results, iou_types=iou_types, max_dets=max_dets)
        metrics["num_images"] = float(len(records))
        metrics["num_detections"] = float(len(results))
        if results_path:
            Path(results_path).parent.mkdir(parents=True, exist_ok=True)
            Path(results_path).write_text(json.dumps(results))
    return broadcast_object(metrics, info)
