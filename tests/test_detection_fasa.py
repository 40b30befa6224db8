"""FASA (Zang et al. 2021; yuhangzang/FASA semantics): statistics, sampling, adaptation,
and its place in the RoI heads."""

from __future__ import annotations

import pytest
import torch

from decal.trainers.detection.config import DetectionConfig, ModelConfig
from decal.trainers.detection.fasa import FASA, inverse_frequency_probabilities
from decal.trainers.detection.heads import DecalRoIHeads
from decal.trainers.detection.labels import LabelMap
from decal.trainers.detection.losses import SeesawLoss
from decal.trainers.detection.model import build_detector, build_maskrcnn


def test_inverse_frequency_initial_probabilities() -> None:
    prob = inverse_frequency_probabilities([0, 10, 1, 100, 0])
    inv = torch.tensor([1 / 10, 1.0, 1 / 100], dtype=torch.float64)
    expected = inv / inv.sum()
    torch.testing.assert_close(prob[1:4].double(), expected, rtol=1e-6, atol=1e-7)
    assert prob[0] == 0 and prob[4] == 0  # background, and a class without instances
    scaled = inverse_frequency_probabilities([0, 10, 1, 100], power=0.5, scale=2.0)
    torch.testing.assert_close(scaled[1:].double(), (2.0 * expected.pow(0.5)).clamp(0, 1), rtol=1e-6, atol=1e-7)


def test_running_statistics_first_batch_then_momentum() -> None:
    fasa = FASA(4, 3, [0, 5, 5, 5], momentum=0.1)
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([1, 1, 0])  # the background RoI is ignored
    fasa.update(a, labels)
    torch.testing.assert_close(fasa.feature_mean[1], torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(fasa.feature_var[1], torch.tensor([2.0, 0.0, 2.0]))  # unbiased
    assert fasa.feature_used.tolist() == [False, True, False, False]
    b = torch.tensor([[4.0, 4.0, 4.0]])
    fasa.update(b, torch.tensor([1]))
    torch.testing.assert_close(fasa.feature_mean[1], 0.1 * b[0] + 0.9 * torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(fasa.feature_var[1], 0.9 * torch.tensor([2.0, 0.0, 2.0]))  # one sample: variance 0


def test_sampling_follows_probabilities_and_statistics() -> None:
    fasa = FASA(4, 2, [0, 1, 1, 1])
    fasa.prob.copy_(torch.tensor([1.0, 1.0, 0.0, 1.0]))
    fasa.update(torch.tensor([[1.0, 1.0], [3.0, 3.0], [7.0, 7.0]]), torch.tensor([1, 1, 2]))
    features, labels = fasa.sample()
    assert labels.tolist() == [1]  # class 2 has p = 0, class 3 has no statistics, background never
    assert features.shape == (1, 2)
    fasa.feature_var.zero_()
    features, _ = fasa.sample()
    torch.testing.assert_close(features[0], torch.tensor([2.0, 2.0]))


def test_virtual_loss_only_from_start_epoch_with_weight() -> None:
    fasa = FASA(3, 2, [0, 1, 1], loss_weight=0.1, start_epoch=1)
    fasa.prob.fill_(1.0)
    fasa.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 2]))
    fasa.feature_var.zero_()
    classifier = torch.nn.Linear(2, 3)
    like = torch.zeros(1, requires_grad=True)
    ce = lambda logits, labels, update_stats=True: {"ce": torch.nn.functional.cross_entropy(logits, labels)}  # noqa: E731
    assert fasa.virtual_loss(classifier, ce, like).item() == 0.0  # epoch 0
    fasa.set_epoch(1)
    loss = fasa.virtual_loss(classifier, ce, like)
    expected = 0.1 * torch.nn.functional.cross_entropy(classifier(torch.eye(2)), torch.tensor([1, 2]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert classifier.weight.grad is not None


def test_adaptation_up_down_and_groups() -> None:
    fasa = FASA(5, 2, [0, 1, 1, 1, 1], up=1.1, down=0.9)
    fasa.prob.copy_(torch.tensor([0.0, 0.5, 0.5, 0.5, 0.95]))
    count = torch.full((5,), 10.0, dtype=torch.float64)
    first = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    fasa.adapt(first, count)  # the first epoch only sets the reference
    torch.testing.assert_close(fasa.prob, torch.tensor([0.0, 0.5, 0.5, 0.5, 0.95]))
    second = torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0], dtype=torch.float64)  # up, down, same, down
    fasa.adapt(second, count)
    torch.testing.assert_close(fasa.prob, torch.tensor([0.0, 0.45, 0.55, 0.5, 1.0]))  # clipped at 1

    grouped = FASA(5, 2, [0, 1, 1, 1, 1], groups=[[1, 2], [3, 4]])
    grouped.prob.copy_(torch.tensor([0.0, 0.5, 0.5, 0.5, 0.5]))
    grouped.adapt(first, count)
    grouped.adapt(torch.tensor([1.0, 3.0, 1.5, 1.0, 2.0], dtype=torch.float64), count)  # group sums 4.5 > 4, 3 < 4
    torch.testing.assert_close(grouped.prob, torch.tensor([0.0, 0.45, 0.45, 0.55, 0.55]))
    with pytest.raises(ValueError):
        FASA(3, 2, [0, 1, 1], groups=[[0, 1]])


def test_record_validation_losses() -> None:
    fasa = FASA(3, 2, [0, 1, 1])
    fasa.begin_validation()
    assert not fasa.active
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    fasa.record(logits, labels)
    fasa.end_validation()
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none").double()
    torch.testing.assert_close(fasa.val_loss_sum, expected)
    torch.testing.assert_close(fasa.val_count, torch.ones(3, dtype=torch.float64))


def _tiny_model_cfg() -> ModelConfig:
    return ModelConfig(backbone="resnet18", fpn_channels=32, representation_size=64, mask_head_channels=16,
                       anchor_sizes=(8, 16, 32, 64, 128), rpn_batch_size_per_image=32, box_batch_size_per_image=32)


def _targets() -> tuple[list[torch.Tensor], list[dict]]:
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 5:30, 5:30] = 1
    masks[1, 30:60, 20:50] = 1
    target = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0], [20.0, 30.0, 50.0, 60.0]]), "labels": torch.tensor([1, 2]), "masks": masks}
    return images, [target, dict(target)]


def test_heads_feed_fasa_and_add_loss_fasa() -> None:
    cfg = DetectionConfig(model=_tiny_model_cfg())
    cfg.loader = type(cfg.loader)(output_size=64)
    cfg.fasa.enabled = True
    label_map = LabelMap.from_categories({4: {"name": "a"}, 9: {"name": "b"}})
    model = build_detector(cfg, label_map, instance_counts=[0, 3, 1])
    heads = model.roi_heads
    assert isinstance(heads, DecalRoIHeads) and heads.fasa is not None
    heads.fasa.prob.fill_(1.0)
    images, targets = _targets()
    model.train()
    losses = model(images, targets)
    assert losses["loss_fasa"].item() == 0.0  # epoch 0: statistics only
    assert heads.fasa.feature_used.tolist() == [False, True, True]
    heads.fasa.set_epoch(1)
    losses = model(images, targets)
    assert losses["loss_fasa"].item() > 0
    sum(losses.values()).backward()
    assert heads.box_predictor.cls_score.weight.grad is not None


def test_seesaw_model_inference_scores() -> None:
    model = build_maskrcnn(_tiny_model_cfg(), 3, image_size=64, classification_loss=SeesawLoss(3), normed_classifier=True)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    images, targets = _targets()
    model.train()
    losses = model(images, targets)
    assert {"loss_cls_classes", "loss_cls_objectness", "loss_box_reg", "loss_mask"} <= set(losses)
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model(images)
    assert out[0]["labels"].numel() > 0
    assert ((out[0]["labels"] >= 1) & (out[0]["labels"] <= 2)).all()
    assert ((out[0]["scores"] >= 0) & (out[0]["scores"] <= 1)).all()


def test_frequency_grouping_from_tags_or_image_counts() -> None:
    cfg = DetectionConfig(model=_tiny_model_cfg())
    cfg.fasa.enabled, cfg.fasa.grouping = True, "frequency"
    tagged = LabelMap.from_categories({1: {"frequency": "f"}, 2: {"frequency": "r"}, 3: {"frequency": "r"}, 4: {"frequency": "c"}})
    model = build_detector(cfg, tagged, instance_counts=[0, 9, 1, 1, 3])
    assert model.roi_heads.fasa.groups == [[2, 3], [4], [1]]  # r, c, f
    untagged = LabelMap.from_categories({1: {}, 2: {}, 3: {}})
    model = build_detector(cfg, untagged, instance_counts=[0, 5, 500, 50], image_counts=[0, 5, 500, 50])
    assert model.roi_heads.fasa.groups == [[1], [3], [2]]
