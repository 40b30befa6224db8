"""Model building, local weights, label mapping, batch preparation, COCO evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils

from decal.dali_pipes.core.batch import Batch
from decal.trainers.detection.config import DetectionConfig, FasaConfig, ModelConfig, SeesawConfig
from decal.trainers.detection.evaluate import coco_evaluate, detections_to_coco, load_ground_truth
from decal.trainers.detection.labels import LabelMap, image_counts, instance_counts, lvis_frequency
from decal.trainers.detection.model import build_detector, build_maskrcnn, load_weights, prepare_batch


def test_default_model_is_torchvision_maskrcnn_resnet50_fpn(tmp_path: Path) -> None:
    ours = build_maskrcnn(ModelConfig(), 5, image_size=1024)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    ref_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert set(ours_shapes) == set(ref_shapes)
    differing = sorted(k for k in ours_shapes if ours_shapes[k] != ref_shapes[k])
    assert all(k.startswith(("roi_heads.box_predictor", "roi_heads.mask_predictor.mask_fcn_logits")) for k in differing)
    assert ours.transform.min_size == (1024,) and ours.transform.max_size == 1024
    # a torchvision COCO checkpoint (91 classes) loads into a 5-class model, skipping the class layers
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    report = load_weights(ours, path)
    assert sorted(report["skipped"]) == differing
    torch.testing.assert_close(ours.backbone.body.conv1.weight, reference.backbone.body.conv1.weight)
    with pytest.raises(ValueError, match="no tensor matches"):
        torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pth")
        load_weights(ours, tmp_path / "bad.pth")


def test_backbone_weights_and_freezing(tmp_path: Path) -> None:
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    cfg = ModelConfig(backbone="resnet18", backbone_weights=str(tmp_path / "r18.pth"), fpn_channels=32,
                      representation_size=64, mask_head_channels=16)
    model = build_maskrcnn(cfg, 3, image_size=64)
    body = model.backbone.body
    torch.testing.assert_close(body.layer4[0].conv1.weight, resnet.layer4[0].conv1.weight)
    assert isinstance(body.bn1, torchvision.ops.FrozenBatchNorm2d)  # torchvision's rule with pretrained weights
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad  # 3 trainable stages
    v2 = build_maskrcnn(ModelConfig(backbone="resnet18", variant="v2", fpn_channels=32, representation_size=64,
                                    mask_head_channels=16), 3, image_size=64)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in v2.roi_heads.box_head.modules())
    assert all(p.requires_grad for p in v2.backbone.parameters())


def test_config_sections_reach_maskrcnn_seesaw_and_fasa() -> None:
    """The config fields passed by name (model.MASKRCNN_FIELDS, SEESAW_FIELDS, FASA_FIELDS)
    arrive at non-default values, read back where the modules keep them."""
    cfg = DetectionConfig(
        model=ModelConfig(
            backbone="resnet18", fpn_channels=16, representation_size=32, mask_head_channels=8,
            rpn_batch_size_per_image=64, box_batch_size_per_image=128, box_positive_fraction=0.5,
            box_score_thresh=0.25, box_nms_thresh=0.6, box_detections_per_img=7,
        ),
        seesaw=SeesawConfig(enabled=True, p=0.7, q=1.5, eps=0.02, loss_weight=2.0),
        fasa=FasaConfig(enabled=True, momentum=0.2, loss_weight=0.3, up=1.2, down=0.8, start_epoch=3),
    )  # fmt: skip
    model = build_detector(cfg, LabelMap.from_categories({1: {"name": "a"}, 2: {"name": "b"}}))
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 64
    roi = model.roi_heads
    assert (roi.fg_bg_sampler.batch_size_per_image, roi.fg_bg_sampler.positive_fraction) == (128, 0.5)
    assert (roi.score_thresh, roi.nms_thresh, roi.detections_per_img) == (0.25, 0.6, 7)
    loss = roi.classification_loss
    assert (loss.p, loss.q, loss.eps, loss.loss_weight) == (0.7, 1.5, 0.02, 2.0)
    fasa = roi.fasa
    assert (fasa.momentum, fasa.loss_weight, fasa.up, fasa.down, fasa.start_epoch) == (0.2, 0.3, 1.2, 0.8, 3)


def test_label_map_round_trip_and_counts() -> None:
    categories = {101: {"name": "z", "frequency": "r"}, 3: {"name": "a"}, 7: {"name": "b", "instance_count": 40, "image_count": 200}}
    label_map = LabelMap.from_categories(categories)
    assert label_map.category_ids == (3, 7, 101) and label_map.num_classes == 4
    ids = torch.tensor([101, 3, 7, 3])
    labels = label_map.to_labels(ids)
    assert labels.tolist() == [3, 1, 2, 1]
    assert label_map.to_category_ids(labels).tolist() == ids.tolist()
    with pytest.raises(ValueError):
        label_map.to_labels(torch.tensor([4]))
    assert label_map.names() == ["__background__", "a", "b", "z"]
    assert LabelMap.from_state(label_map.state()) == label_map

    class Ann:
        def __init__(self, cid: int, crowd: bool = False) -> None:
            self.category_id, self.iscrowd = cid, crowd

    class Rec:
        def __init__(self, *anns: Ann) -> None:
            self.annotations = anns
            self.category_ids = frozenset(a.category_id for a in anns if not a.iscrowd)

    records = [Rec(Ann(3), Ann(3), Ann(101, crowd=True)), Rec(Ann(3), Ann(101))]
    assert instance_counts(label_map, records) == [0, 3, 40, 1]
    assert image_counts(label_map, records) == [0, 2, 200, 1]
    assert label_map.frequencies([0, 2, 200, 1]) == ["r", "f", "r"]
    assert [lvis_frequency(n) for n in (1, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]


def test_prepare_batch_drops_crowd_and_maps_labels() -> None:
    label_map = LabelMap.from_categories({3: {}, 7: {}})
    masks = torch.zeros(3, 8, 8, dtype=torch.uint8)
    batch = Batch(
        images=torch.full((1, 3, 8, 8), 255, dtype=torch.uint8),
        targets=[
            {
                "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 2.0, 6.0]]),
                "labels": torch.tensor([7, 3, 3]),
                "masks": masks,
                "area": torch.tensor([16, 16, 0]),
                "iscrowd": torch.tensor([0, 1, 0], dtype=torch.uint8),
                "pasted": torch.zeros(3, dtype=torch.uint8),
                "image_id": torch.tensor(5),
            }
        ],
    )
    images, targets = prepare_batch(batch, label_map, torch.device("cpu"))
    assert len(images) == 1 and images[0].dtype == torch.float32 and images[0].max() == 1.0
    assert targets[0]["labels"].tolist() == [2]  # crowd and empty box dropped; 7 → label 2
    assert targets[0]["boxes"].tolist() == [[0.0, 0.0, 4.0, 4.0]] and targets[0]["masks"].shape == (1, 8, 8)


def _gt(tmp_path: Path) -> tuple[dict, list[dict]]:
    """Two 20×20 images with square instances; results = the ground truth itself."""
    images = [{"id": 1, "width": 20, "height": 20, "file_name": "a.jpg"}, {"id": 2, "width": 20, "height": 20, "file_name": "b.jpg"}]
    categories = [{"id": 1, "name": "r", "frequency": "r"}, {"id": 5, "name": "f", "frequency": "f"}]
    annotations, results = [], []
    for i, (image_id, cid, x) in enumerate([(1, 1, 2), (1, 5, 10), (2, 5, 4)]):
        m = np.zeros((20, 20), np.uint8)
        m[x : x + 6, x : x + 6] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        annotations.append({"id": i + 1, "image_id": image_id, "category_id": cid, "segmentation": rle,
                            "area": 36.0, "bbox": [x, x, 6, 6]})  # no iscrowd: LVIS style
        results.append({"image_id": image_id, "category_id": cid, "bbox": [x, x, 6, 6], "segmentation": rle, "score": 0.9})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def test_coco_evaluate_perfect_and_empty(tmp_path: Path) -> None:
    data, results = _gt(tmp_path)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    gt = load_ground_truth(path)
    metrics = coco_evaluate(gt, results, frequencies={1: "r", 5: "f"}, max_dets=300)
    for iou_type in ("bbox", "segm"):
        assert metrics[f"{iou_type}/AP"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/APr"] == pytest.approx(1.0) and metrics[f"{iou_type}/APf"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/APc"] == -1.0  # no common category
        assert metrics[f"{iou_type}/AR300"] == pytest.approx(1.0)
    # one wrong class: the rare category loses its only instance
    wrong = [dict(r, category_id=5) if r["category_id"] == 1 else r for r in results]
    metrics = coco_evaluate(gt, wrong, frequencies={1: "r", 5: "f"})
    assert metrics["bbox/APr"] == 0.0 and metrics["bbox/APf"] < 1.0
    empty = coco_evaluate(gt, [])
    assert empty["bbox/AP"] == 0.0 and empty["segm/AP"] == 0.0
    only_image_2 = coco_evaluate(load_ground_truth(path, [2]), [r for r in results if r["image_id"] == 2])
    assert only_image_2["segm/AP"] == pytest.approx(1.0)


def test_detections_to_coco_format() -> None:
    label_map = LabelMap.from_categories({4: {}, 9: {}})
    masks = torch.zeros(1, 1, 10, 10)
    masks[0, 0, 2:5, 3:8] = 0.9
    out = {"boxes": torch.tensor([[3.0, 2.0, 8.0, 5.0]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([2]), "masks": masks}
    (entry,) = detections_to_coco(out, 12, label_map)
    assert entry["image_id"] == 12 and entry["category_id"] == 9 and entry["bbox"] == [3.0, 2.0, 5.0, 3.0]
    assert mask_utils.area(entry["segmentation"]) == 15 and isinstance(entry["segmentation"]["counts"], str)


@pytest.mark.parametrize("name", ["tiny.toml", "coco_r50_lsj_copy_paste.toml", "lvis_r50_rfs_seesaw_fasa.toml"])
def test_example_configs_load(name: str) -> None:
    from decal.trainers.common.config import load_config
    from decal.trainers.detection.config import PRESETS, DetectionConfig

    path = Path(__file__).resolve().parents[1] / "trainers" / "detection" / "configs" / name
    cfg = load_config(DetectionConfig, path, presets=PRESETS)
    if name == "tiny.toml":
        assert cfg.model.backbone == "resnet18" and cfg.data.use_sample
    else:
        assert cfg.optim.lr == 0.32 and cfg.optim.weight_decay == 4e-5 and cfg.loader.output_size == 1024


def test_paper_defaults() -> None:
    from decal.trainers.detection.config import DetectionConfig

    cfg = DetectionConfig()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.base_batch_size, cfg.optim.momentum) == ("sgd", 0.32, 256, 0.9)
    assert cfg.schedule.milestones == (0.9, 0.95, 0.975) and cfg.schedule.warmup_iters == 1000
    assert cfg.loader.jitter == "lsj" and cfg.loader.copy_paste and cfg.loader.output_size == 1024
    assert (cfg.seesaw.p, cfg.seesaw.q) == (0.8, 2.0) and not cfg.seesaw.enabled
    assert (cfg.fasa.momentum, cfg.fasa.loss_weight, cfg.fasa.up, cfg.fasa.down) == (0.1, 0.1, 1.1, 0.9) and not cfg.fasa.enabled
    assert not cfg.ema.enabled and not cfg.self_training.enabled and cfg.self_training.score_threshold == 0.5
    assert cfg.model.weights == "" and cfg.model.backbone_weights == ""  # never downloads
