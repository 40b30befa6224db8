"""Box-classification losses: Seesaw against a hand-written float64 reference, CE and box
regression against torchvision's ``fastrcnn_loss``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss

from decal.trainers.detection.losses import (
    CrossEntropyClassification,
    SeesawLoss,
    box_regression_loss,
    seesaw_cross_entropy,
)


def reference_seesaw(logits: np.ndarray, targets: np.ndarray, counts: np.ndarray, p: float, q: float, eps: float) -> np.ndarray:
    """Seesaw loss of Wang et al. 2021, eq. (1)–(4), one sample and one class at a time.

    L_i = -log( e^{z_y} / (e^{z_y} + Σ_{j≠y} S_yj e^{z_j}) ),  S_yj = M_yj · C_yj,
    M_yj = (N_j / N_y)^p if N_j < N_y else 1,  C_yj = (σ_j / σ_y)^q if σ_j > σ_y else 1,
    σ = softmax(z), σ_y floored at eps, N floored at 1.
    """
    out = []
    for z, y in zip(logits.astype(np.float64), targets):
        sigma = np.exp(z - z.max())
        sigma /= sigma.sum()
        denominator = math.exp(z[y])
        for j in range(len(z)):
            if j == y:
                continue
            n_j, n_y = max(counts[j], 1.0), max(counts[y], 1.0)
            m = (n_j / n_y) ** p if n_j < n_y else 1.0
            ratio = sigma[j] / max(sigma[y], eps)
            c = ratio ** q if ratio > 1.0 else 1.0
            denominator += m * c * math.exp(z[j])
        out.append(-math.log(math.exp(z[y]) / denominator))
    return np.array(out)


@pytest.mark.parametrize("p,q", [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (1.5, 1.0)])
def test_seesaw_cross_entropy_matches_float64_reference(p: float, q: float) -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        n, c = int(rng.integers(1, 12)), int(rng.integers(2, 9))
        logits = rng.normal(0, 2.0, size=(n, c))
        targets = rng.integers(0, c, size=n)
        counts = rng.integers(0, 50, size=c).astype(np.float64)
        got = seesaw_cross_entropy(
            torch.tensor(logits, dtype=torch.float64), torch.tensor(targets), torch.tensor(counts), p, q, 1e-2
        )
        expected = reference_seesaw(logits, targets, counts, p, q, 1e-2)
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_seesaw_without_factors_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(7, 5), torch.randint(0, 5, (7,))
    got = seesaw_cross_entropy(logits, targets, torch.ones(5), p=0.0, q=0.0)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, targets, reduction="none"))


def test_seesaw_loss_terms_counts_and_gradients() -> None:
    """K = 4 classes: logits (N, K+2); labels 0 = background, 1..K classes."""
    rng = np.random.default_rng(1)
    k = 4
    loss = SeesawLoss(num_classes=k + 1, p=0.8, q=2.0)
    assert loss.num_logits(k + 1) == k + 2
    labels = torch.tensor([0, 0, 1, 3, 3, 4, 0, 2])
    logits = torch.tensor(rng.normal(size=(8, k + 2)), dtype=torch.float32, requires_grad=True)
    terms = loss(logits, labels)
    counts = torch.bincount(labels, minlength=k + 1).double()
    torch.testing.assert_close(loss.cum_samples, counts)

    z = logits.detach().double().numpy()
    positive = labels.numpy() > 0
    classes = reference_seesaw(z[positive, :k], labels.numpy()[positive] - 1, counts.numpy()[1:], 0.8, 2.0, 1e-2)
    objectness = z[:, k:]
    obj_target = (labels.numpy() == 0).astype(int)  # 0 = foreground, 1 = background
    log_softmax = objectness - np.log(np.exp(objectness).sum(axis=1, keepdims=True))
    obj_loss = -log_softmax[np.arange(8), obj_target].mean()
    assert terms["loss_cls_classes"].item() == pytest.approx(classes.sum() / 8, rel=1e-5)
    assert terms["loss_cls_objectness"].item() == pytest.approx(obj_loss, rel=1e-5)
    sum(terms.values()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

    loss(logits.detach(), labels, update_stats=False)
    torch.testing.assert_close(loss.cum_samples, counts)  # unchanged
    background_only = loss(logits.detach()[:2], labels[:2])
    assert background_only["loss_cls_classes"].item() == 0.0


def test_seesaw_detection_logits_are_mmdetection_scores() -> None:
    torch.manual_seed(0)
    k = 3
    loss = SeesawLoss(num_classes=k + 1)
    logits = torch.randn(5, k + 2)
    probs = torch.softmax(loss.detection_logits(logits), dim=-1)
    classes = torch.softmax(logits[:, :k], dim=-1)
    objectness = torch.softmax(logits[:, k:], dim=-1)
    expected = torch.cat([objectness[:, 1:2], classes * objectness[:, 0:1]], dim=-1)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


def test_cross_entropy_and_box_loss_match_torchvision() -> None:
    torch.manual_seed(0)
    n, classes = 10, 4
    logits = torch.randn(n, classes)
    regression = torch.randn(n, classes * 4)
    labels = [torch.tensor([0, 1, 3, 0, 2]), torch.tensor([0, 0, 3, 1, 0])]
    targets = [torch.randn(5, 4), torch.randn(5, 4)]
    cls_ref, box_ref = fastrcnn_loss(logits, regression, labels, targets)
    ce = CrossEntropyClassification()(logits, torch.cat(labels))["loss_classifier"]
    torch.testing.assert_close(ce, cls_ref)
    torch.testing.assert_close(box_regression_loss(regression, torch.cat(labels), torch.cat(targets)), box_ref)
    assert CrossEntropyClassification().detection_logits(logits) is logits
