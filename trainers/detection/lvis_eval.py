"""LVIS evaluation through the official LVIS API (``pip install lvis``; the ``lvis`` extra).

LVIS is federated (Gupta et al. 2019, LVIS §4): each image lists the categories verified
absent (``neg_category_ids``) and those whose instances are not all annotated
(``not_exhaustive_category_ids``). ``lvis.LVISEval`` therefore

* drops the detections of a category that is neither annotated in the image nor in its
  ``neg_category_ids`` (nothing is known about it there);
* counts the unmatched detections of a ``neg_category_ids`` category as false positives;
* ignores the unmatched detections of a ``not_exhaustive_category_ids`` category;
* reports APr/APc/APf over the categories tagged rare/common/frequent, 300 detections per
  image by default (``max_dets``).

COCOeval does none of the first three, so its numbers on LVIS are not comparable with the
papers (see trainers/detection/evaluate.py for the fallback when ``lvis`` is not importable).
As detectron2's LVIS evaluator does, mask AP is computed from results without their boxes
(:func:`~.iou_types.results_for_iou_type`), so that the LVIS API takes the mask area (not the
box area) for the small/medium/large split.

The ground truth is given as a dict (the json, possibly restricted to the evaluated images);
images without ``neg_category_ids``/``not_exhaustive_category_ids`` get empty lists, and a
category without ``frequency`` gets the tag of its ``image_count`` (or of the number of images
annotated with it in this json; :func:`~.labels.lvis_frequency`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .iou_types import results_for_iou_type
from .labels import FREQUENCY_GROUPS, lvis_frequency

__all__ = ["is_lvis_json", "import_lvis", "lvis_evaluate"]

#: image fields and the category field that only LVIS jsons carry
LVIS_IMAGE_FIELDS = ("neg_category_ids", "not_exhaustive_category_ids")


def is_lvis_json(data: Mapping[str, Any]) -> bool:
    """True when a COCO-format dict is an LVIS one: a category with ``frequency`` or an image
    with ``neg_category_ids`` / ``not_exhaustive_category_ids``."""
    if any("frequency" in c for c in data.get("categories", [])):
        return True
    return any(field in image for image in data.get("images", []) for field in LVIS_IMAGE_FIELDS)


def import_lvis() -> Any:
    """The ``lvis`` package; ImportError (with the reason and the install line) when it does
    not import. (lvis 0.5.3 imports matplotlib and OpenCV at package level, for its
    visualiser only.)"""
    try:
        import lvis
    except ImportError as error:
        raise ImportError(f"the LVIS API does not import ({error}); install it with pip install 'decal[lvis]'") from error
    return lvis


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3, the latest release, calls ``np.float`` (``LVISEval.accumulate``), which
    NumPy removed in 1.24: alias it to ``float`` (what it always meant) while the LVIS API runs."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


@contextlib.contextmanager
def _quiet_lvis_logs() -> Iterator[None]:
    """Silence the LVIS API's info/warning chatter ("Assuming user provided the results in
    correct format." on every call, through the deprecated ``Logger.warn``) and its prints."""
    loggers = [logging.getLogger(name) for name in ("lvis", "lvis.lvis", "lvis.results", "lvis.eval")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lvis\.")  # Logger.warn
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _complete_lvis_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with the fields ``LVISEval`` needs filled in (see the module docstring)."""
    data = copy.deepcopy(data)
    for image in data.get("images", []):
        for field in LVIS_IMAGE_FIELDS:
            image.setdefault(field, [])
    images_of: dict[int, set[int]] = defaultdict(set)
    for ann in data.get("annotations", []):
        images_of[int(ann["category_id"])].add(int(ann["image_id"]))
    for category in data.get("categories", []):
        if category.get("frequency") not in FREQUENCY_GROUPS:
            count = category.get("image_count", len(images_of[int(category["id"])]))
            category["frequency"] = lvis_frequency(int(count))
    return data


def _metric_names(max_dets: int) -> dict[str, str]:
    """LVIS API result key → decal's metric name (as COCOeval's in evaluate.py)."""
    names = {k: k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")}
    names[f"AR@{max_dets}"] = f"AR{max_dets}"
    for area in "sml":
        names[f"AR{area}@{max_dets}"] = f"AR{area}"
    return names


def _no_detection_metrics(data: Mapping[str, Any], max_dets: int) -> dict[str, float]:
    """Every metric with no detection at all: 0 where there is ground truth, -1 for a
    frequency group without annotated categories."""
    annotated = {int(a["category_id"]) for a in data.get("annotations", [])}
    groups = {c["frequency"] for c in data.get("categories", []) if int(c["id"]) in annotated}
    metrics = {name: 0.0 for name in _metric_names(max_dets).values()}
    for group in FREQUENCY_GROUPS:
        if group not in groups:
            metrics[f"AP{group}"] = -1.0
    return metrics


def lvis_evaluate(
    ground_truth: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
    max_dets: int = 300,
) -> dict[str, float]:
    """LVIS federated metrics of COCO-format ``results`` against an LVIS json dict.

    Args:
        ground_truth: the LVIS json (``images``, ``annotations``, ``categories``); every
            image is evaluated.
        results: ``{"image_id", "category_id", "bbox" (xywh, pixels), "score",
            "segmentation" (compressed RLE, for ``segm``)}``.
        iou_types: ``"bbox"`` and/or ``"segm"``.
        max_dets: detections kept per image (the highest scores; LVIS: 300).

    Returns:
        ``<iou_type>/<name>`` for ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``,
        ``APr``, ``APc``, ``APf``, ``AR<max_dets>``, ``ARs``, ``ARm``, ``ARl``: fractions in
        [0, 1], -1 where undefined (the LVIS API's convention).

    Raises:
        ImportError: the LVIS API does not import (:func:`import_lvis`).
    """
    lvis = import_lvis()
    data = _complete_lvis_fields(dict(ground_truth))
    names = _metric_names(max_dets)
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="decal-lvis-") as tmp:
        path = Path(tmp) / "ground_truth.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        with _quiet_lvis_logs():
            gt = lvis.LVIS(str(path))
        for iou_type in iou_types:
            dets = results_for_iou_type(results, iou_type)
            if not dets:
                metrics.update({f"{iou_type}/{n}": v for n, v in _no_detection_metrics(data, max_dets).items()})
                continue
            with _quiet_lvis_logs(), _numpy_float_alias():
                detections = lvis.LVISResults(gt, copy.deepcopy(dets), max_dets=max_dets)
                evaluator = lvis.LVISEval(gt, detections, iou_type=iou_type)
                evaluator.params.max_dets = max_dets
                evaluator.run()
            found = evaluator.get_results()
            metrics.update({f"{iou_type}/{names[key]}": float(value) for key, value in found.items() if key in names})
    return metrics
