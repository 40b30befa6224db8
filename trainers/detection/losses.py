"""Box-head losses: the classification term (cross-entropy or Seesaw) and box regression.

Labels follow torchvision: 0 is the background, 1..K the classes. A classification loss
object knows how many logits the classifier must produce (:meth:`num_logits`), returns its
loss terms as a dict, and turns raw logits into the (N, K+1) "background-first" logits that
torchvision's ``postprocess_detections`` soft-maxes (:meth:`detection_logits`).

Seesaw loss (Wang et al. 2021, "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR;
semantics of mmdetection's ``SeesawLoss``): the classifier has K class logits plus two
objectness logits (foreground, background). For a positive RoI of class i, the
cross-entropy over the K classes sees each other class j's logit re-weighted by
``S_ij = M_ij * C_ij``:

* mitigation ``M_ij = (N_j / N_i) ** p`` if ``N_j < N_i`` else 1, with ``N`` the
  cumulative number of training RoIs per class seen so far (rare classes are not punished
  for every frequent-class sample);
* compensation ``C_ij = (σ_j / σ_i) ** q`` if ``σ_j > σ_i`` else 1, with ``σ`` the
  (detached) softmax over the K classes (misclassifications are punished harder).

So ``L = -log(exp z_i / (exp z_i + Σ_{j≠i} S_ij exp z_j))``. The class term is summed over
positives and divided by the number of sampled RoIs; the objectness term is the mean
binary cross-entropy over all RoIs. At inference the score of class c is
``softmax(classes)_c · p(foreground)`` and the background's is ``p(background)``.
Defaults p = 0.8, q = 2.0, eps = 1e-2 (the paper's and mmdetection's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CrossEntropyClassification",
    "SeesawLoss",
    "seesaw_cross_entropy",
    "box_regression_loss",
]


class CrossEntropyClassification(nn.Module):
    """Softmax cross-entropy over K+1 logits: torchvision's ``fastrcnn_loss`` classification term."""

    loss_keys = ("loss_classifier",)

    def num_logits(self, num_classes: int) -> int:
        """Classifier outputs for ``num_classes`` = K + 1 (background included)."""
        return num_classes

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, *, update_stats: bool = True
    ) -> dict[str, torch.Tensor]:
        return {"loss_classifier": F.cross_entropy(logits.float(), labels)}

    def detection_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K+1) logits whose softmax is the class distribution, background at 0."""
        return logits


def seesaw_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    cum_samples: torch.Tensor,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> torch.Tensor:
    """Per-sample Seesaw cross-entropy.

    Args:
        logits: (N, C) class logits (no background column).
        targets: (N,) int64 in [0, C).
        cum_samples: (C,) samples seen per class so far.
        p, q: mitigation and compensation exponents (0 switches a factor off).
        eps: lower bound of the true class's probability in the compensation ratio.

    Returns:
        (N,) losses.
    """
    num = logits.shape[1]
    logits = logits.float()
    onehot = F.one_hot(targets, num).to(logits.dtype)
    weights = torch.ones_like(logits)
    if p > 0:
        counts = cum_samples.to(logits.dtype).clamp(min=1)
        ratio = counts[None, :] / counts[:, None]  # [i, j] = N_j / N_i
        mitigation = torch.where(ratio < 1.0, ratio.pow(p), torch.ones_like(ratio))
        weights = weights * mitigation[targets]
    if q > 0:
        scores = torch.softmax(logits.detach(), dim=1)
        self_scores = scores.gather(1, targets[:, None]).clamp(min=eps)
        ratio = scores / self_scores
        compensation = torch.where(ratio > 1.0, ratio.pow(q), torch.ones_like(ratio))
        weights = weights * compensation
    adjusted = logits + weights.log() * (1.0 - onehot)
    return F.cross_entropy(adjusted, targets, reduction="none")


class SeesawLoss(nn.Module):
    """Seesaw loss with an objectness branch (mmdetection ``SeesawLoss`` semantics).

    Args:
        num_classes: K + 1 (torchvision's count, background included).
        p: mitigation exponent (0.8).
        q: compensation exponent (2.0).
        eps: probability floor in the compensation ratio (1e-2).
        loss_weight: multiplies both terms.

    The classifier must output ``K + 2`` logits: K classes, then (foreground, background).
    ``cum_samples`` (a buffer, saved in checkpoints) counts the sampled RoIs per label,
    background at 0. Under DDP each rank keeps its own counts, like mmdetection.
    """

    loss_keys = ("loss_cls_classes", "loss_cls_objectness")

    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, eps: float = 1e-2, loss_weight: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("SeesawLoss needs at least one foreground class")
        self.num_classes = num_classes
        self.p, self.q, self.eps, self.loss_weight = p, q, eps, loss_weight
        self.register_buffer("cum_samples", torch.zeros(num_classes, dtype=torch.float64))

    def num_logits(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ValueError(f"SeesawLoss was built for {self.num_classes} classes, not {num_classes}")
        return num_classes + 1  # K classes + 2 objectness = (K + 1) + 1

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (N, K), objectness logits (N, 2) = [foreground, background])."""
        k = self.num_classes - 1
        if logits.shape[-1] != k + 2:
            raise ValueError(f"Seesaw classifier must output {k + 2} logits, got {logits.shape[-1]}")
        return logits[..., :k], logits[..., k:]

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, *, update_stats: bool = True
    ) -> dict[str, torch.Tensor]:
        """Loss terms for (N, K+2) ``logits`` and (N,) ``labels`` (0 = background)."""
        if update_stats and labels.numel():
            self.cum_samples += torch.bincount(labels, minlength=self.num_classes).to(self.cum_samples)
        class_logits, objectness = self.split(logits.float())
        num = max(labels.numel(), 1)
        positive = labels > 0
        loss_objectness = F.cross_entropy(objectness, (labels == 0).long(), reduction="sum") / num
        if bool(positive.any()):
            per_sample = seesaw_cross_entropy(
                class_logits[positive], labels[positive] - 1, self.cum_samples[1:], self.p, self.q, self.eps
            )
            loss_classes = per_sample.sum() / num
        else:
            loss_classes = class_logits.sum() * 0.0
        return {
            "loss_cls_classes": self.loss_weight * loss_classes,
            "loss_cls_objectness": self.loss_weight * loss_objectness,
        }

    def detection_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [log p(bg), log p(fg) + log softmax(classes)]: (N, K+1)."""
        class_logits, objectness = self.split(logits.float())
        log_obj = torch.log_softmax(objectness, dim=-1)
        return torch.cat([log_obj[..., 1:2], log_obj[..., 0:1] + torch.log_softmax(class_logits, dim=-1)], dim=-1)


def box_regression_loss(
    box_regression: torch.Tensor, labels: torch.Tensor, regression_targets: torch.Tensor
) -> torch.Tensor:
    """torchvision's Fast R-CNN box loss: smooth-L1 (beta 1/9) of the class-specific deltas of
    the positive RoIs, summed and divided by the number of sampled RoIs."""
    positive = torch.where(labels > 0)[0]
    num = labels.numel()
    deltas = box_regression.reshape(num, box_regression.size(-1) // 4, 4)
    loss = F.smooth_l1_loss(
        deltas[positive, labels[positive]].float(), regression_targets[positive].float(), beta=1 / 9, reduction="sum"
    )
    return loss / max(num, 1)
