"""LVIS evaluation: the official LVIS API's federated protocol on a small synthetic LVIS json
whose answers are known, and the COCOeval fallback (with its warning) when ``lvis`` is absent.

The json: three 64×64 images, one instance per category, one category per frequency group:
image 1 holds category 1 (rare), image 2 category 2 (common; listed not exhaustive there) and
lists category 3 as absent, image 3 holds category 3 (frequent) and lists category 1 as absent.
With one ground-truth instance, a false positive scored above the true positive gives
AP = 0.5 at every IoU (precision 1/2 at recall 1), two give 1/3.
"""

from __future__ import annotations

import warnings

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from decal.trainers.detection import evaluate as evaluate_module
from decal.trainers.detection.evaluate import evaluate_results
from decal.trainers.detection.lvis_eval import is_lvis_json

SIZE = 64
#: image id -> (category id, box xywh) of its one instance
INSTANCES = {1: (1, [4, 4, 20, 16]), 2: (2, [8, 30, 30, 16]), 3: (3, [24, 10, 20, 28])}


def box_polygon(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def lvis_json() -> dict:
    images = [
        {"id": 1, "width": SIZE, "height": SIZE, "file_name": "a.jpg", "neg_category_ids": [], "not_exhaustive_category_ids": []},
        {"id": 2, "width": SIZE, "height": SIZE, "file_name": "b.jpg", "neg_category_ids": [3], "not_exhaustive_category_ids": [2]},
        {"id": 3, "width": SIZE, "height": SIZE, "file_name": "c.jpg", "neg_category_ids": [1], "not_exhaustive_category_ids": []},
    ]
    annotations = [
        {"id": image_id, "image_id": image_id, "category_id": cid, "bbox": box, "area": float(box[2] * box[3]),
         "segmentation": [box_polygon(box)]}
        for image_id, (cid, box) in INSTANCES.items()
    ]  # fmt: skip
    categories = [
        {"id": 1, "name": "rare", "frequency": "r"},
        {"id": 2, "name": "common", "frequency": "c"},
        {"id": 3, "name": "frequent", "frequency": "f"},
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects([box_polygon(box)], SIZE, SIZE))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": score, "segmentation": rle}


def perfect() -> list[dict]:
    return [detection(image_id, cid, box, 0.9) for image_id, (cid, box) in INSTANCES.items()]


ELSEWHERE = [40, 44, 12, 12]  # a box overlapping no instance


def test_perfect_predictions_give_one_in_every_frequency_group() -> None:
    pytest.importorskip("lvis")
    metrics = evaluate_results(lvis_json(), perfect(), max_dets=300)
    assert metrics["lvis_federated"] == 1.0
    assert "float" not in np.__dict__  # the np.float alias lvis 0.5.3 needs is gone again
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AR300"):
            assert metrics[f"{iou_type}/{name}"] == pytest.approx(1.0), name


def test_federated_rules_negative_not_exhaustive_and_unverified_categories() -> None:
    pytest.importorskip("lvis")
    extra = [
        detection(2, 3, ELSEWHERE, 0.95),  # category 3 is verified absent from image 2: false positive
        detection(2, 2, ELSEWHERE, 0.95),  # category 2 is not exhaustive in image 2: ignored
        detection(2, 1, ELSEWHERE, 0.95),  # category 1: neither annotated nor negative in image 2: dropped
    ]
    metrics = evaluate_results(lvis_json(), perfect() + extra, max_dets=300)
    for iou_type in ("bbox", "segm"):
        assert metrics[f"{iou_type}/APf"] == pytest.approx(0.5)
        assert metrics[f"{iou_type}/APc"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/APr"] == pytest.approx(1.0)
    # the same rare-category detection where category 1 is listed negative counts
    negative = evaluate_results(lvis_json(), perfect() + [detection(3, 1, ELSEWHERE, 0.95)], iou_types=("bbox",))
    assert negative["bbox/APr"] == pytest.approx(0.5) and negative["bbox/APf"] == pytest.approx(1.0)


def test_max_dets_keeps_the_best_scores_per_image() -> None:
    pytest.importorskip("lvis")
    # a false positive of a negative category scored below the true one and cut by max_dets = 1
    dets = perfect() + [detection(3, 1, ELSEWHERE, 0.5)]
    assert evaluate_results(lvis_json(), dets, iou_types=("bbox",), max_dets=1)["bbox/APr"] == pytest.approx(1.0)
    assert "bbox/AR1" in evaluate_results(lvis_json(), dets, iou_types=("bbox",), max_dets=1)


def test_no_detection_is_zero_where_there_is_ground_truth() -> None:
    pytest.importorskip("lvis")
    data = lvis_json()
    data["categories"].append({"id": 4, "name": "unused", "frequency": "r"})
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 1]  # no rare instance left
    metrics = evaluate_results(data, [], iou_types=("segm",))
    assert metrics["segm/AP"] == 0.0 and metrics["segm/APc"] == 0.0 and metrics["segm/APf"] == 0.0
    assert metrics["segm/APr"] == -1.0


def test_fallback_to_cocoeval_warns_and_counts_what_lvis_ignores(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("the LVIS API does not import (No module named 'lvis'); install it with pip install 'decal[lvis]'")

    monkeypatch.setattr(evaluate_module, "import_lvis", missing)
    extra = [detection(2, 2, ELSEWHERE, 0.95), detection(3, 1, ELSEWHERE, 0.95), detection(2, 1, ELSEWHERE, 0.96)]
    with pytest.warns(UserWarning, match=r"LVIS API does not import.*COCOeval.*not LVIS's federated"):
        metrics = evaluate_results(lvis_json(), perfect() + extra, iou_types=("bbox",))
    assert metrics["lvis_federated"] == 0.0
    assert metrics["bbox/APc"] == pytest.approx(0.5)  # the not-exhaustive detection counts in COCOeval
    assert metrics["bbox/APr"] == pytest.approx(1 / 3)  # so does the unverified one
    assert metrics["bbox/APf"] == pytest.approx(1.0)


def test_which_jsons_are_lvis() -> None:
    data = lvis_json()
    assert is_lvis_json(data)
    for category in data["categories"]:
        del category["frequency"]
    assert is_lvis_json(data)  # the image fields alone
    for image in data["images"]:
        del image["neg_category_ids"], image["not_exhaustive_category_ids"]
    assert not is_lvis_json(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a COCO json: COCOeval, no fallback warning
        metrics = evaluate_results(data, perfect(), iou_types=("bbox",))
    assert "lvis_federated" not in metrics and metrics["bbox/AP"] == pytest.approx(1.0)
    assert "bbox/APr" not in metrics


def test_categories_without_frequency_get_it_from_their_image_count() -> None:
    pytest.importorskip("lvis")
    data = lvis_json()
    for category in data["categories"]:
        del category["frequency"]
    data["categories"][2]["image_count"] = 500  # frequent by its training count
    metrics = evaluate_results(data, perfect(), iou_types=("bbox",))
    # categories 1 and 2: one image here -> rare; category 3: image_count 500 -> frequent
    assert metrics["bbox/APr"] == pytest.approx(1.0) and metrics["bbox/APf"] == pytest.approx(1.0)
    assert metrics["bbox/APc"] == -1.0
    assert np.isfinite(metrics["bbox/AP"])
