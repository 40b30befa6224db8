"""The detections an IoU type evaluates, shared by COCOeval (evaluate.py) and the LVIS API
(lvis_eval.py)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["IOU_TYPES", "results_for_iou_type"]

#: the IoU types both evaluators know
IOU_TYPES = ("bbox", "segm")


def results_for_iou_type(results: Sequence[Mapping[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """Copies of the COCO-format ``results`` that ``iou_type`` evaluates: for ``"segm"`` those
    with a ``segmentation``, without their ``bbox`` (so that pycocotools and the LVIS API take
    the mask area, not the box area, for the small/medium/large split, as detectron2 does); for
    ``"bbox"`` every result, without its ``segmentation``. ValueError for another type."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou type must be 'bbox' or 'segm', got {iou_type!r}")
    if iou_type == "segm":
        return [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
    return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
