"""FASA: Feature Augmentation and Sampling Adaptation (Zang, Huang & Loy, ICCV 2021).

Semantics of the authors' code (github.com/yuhangzang/FASA, ``ConvFCFASABBoxHead``),
re-implemented for torchvision's RoI heads:

* **Feature statistics.** For every class, a running mean and variance of the features of
  its positive RoIs, taken where they enter the box classifier (the box head's output). A
  class's first batch sets them; later batches update them with momentum 0.1:
  ``mean = 0.1 · batch_mean + 0.9 · mean`` (the same for the unbiased batch variance).
* **Feature augmentation.** From the second epoch on (``start_epoch`` = 1), each iteration
  draws, for every class c independently with probability ``p_c``, one virtual feature
  ``mean_c + sqrt(var_c) · N(0, I)``. The virtual features go through the classifier only
  (not the box regressor, not the mask head), with the classification loss weighted 0.1
  (averaged over the virtual features), reported as ``loss_fasa``.
* **Sampling probabilities.** ``p_c ∝ (1 / n_c) ** power`` over the training instance
  counts n_c, normalised to sum to 1, times ``scale``, clipped to [0, 1] (power = scale = 1).
* **Sampling adaptation.** After each epoch a validation pass records each class's share of
  the RoI classification loss (per-class summed loss / all sampled RoIs). Per group of
  classes, if the share went up since the previous epoch, the group's p_c are multiplied by
  0.9; if it went down, by 1.1 (clipped to [0, 1]); the first epoch only sets the reference.
  Groups: every class alone (default), or the LVIS frequency groups r/c/f. (The reference
  code clusters the classes' mean features with affinity propagation; that needs scikit-learn,
  which decal does not depend on, so it is not offered.)

Everything is kept in buffers, so it moves with the model, is saved in its state dict, and
resumes exactly. Index 0 (the background) never gets statistics nor a probability.
Under DDP each rank keeps its own statistics (as in the reference); the validation losses
are summed over ranks before the adaptation so every rank adapts identically.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["FASA", "inverse_frequency_probabilities"]


def inverse_frequency_probabilities(
    counts: Sequence[int], power: float = 1.0, scale: float = 1.0
) -> torch.Tensor:
    """Initial p_c from instance counts (index 0 = background → 0; a class without
    instances → 0): ``scale · ((1/n_c) / Σ_j 1/n_j) ** power``, clipped to [0, 1]."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    inverse = torch.where(n > 0, 1.0 / n.clamp(min=1), torch.zeros_like(n))
    inverse[0] = 0.0
    total = inverse.sum()
    if total <= 0:
        return torch.zeros_like(n, dtype=torch.float32)
    prob = scale * (inverse / total).pow(power)
    prob[inverse == 0] = 0.0
    return prob.clamp(0.0, 1.0).float()


class FASA(nn.Module):
    """Class-wise feature statistics, virtual features, and adaptive sampling probabilities.

    Args:
        num_classes: K + 1 (background included).
        feature_dim: dimension of the classifier's input features.
        instance_counts: K + 1 training instance counts (index 0 ignored).
        momentum: running-statistics momentum (0.1).
        loss_weight: weight of the virtual features' classification loss (0.1).
        prob_power, prob_scale: shape of the initial inverse-frequency probabilities (1, 1).
        up, down: factors applied to a group's p_c when its validation loss share fell / rose
            (1.1, 0.9).
        start_epoch: first epoch that uses virtual features (1: after one epoch of statistics).
        groups: lists of labels adapted together; default: each class alone.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        instance_counts: Sequence[int],
        *,
        momentum: float = 0.1,
        loss_weight: float = 0.1,
        prob_power: float = 1.0,
        prob_scale: float = 1.0,
        up: float = 1.1,
        down: float = 0.9,
        start_epoch: int = 1,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if len(instance_counts) != num_classes:
            raise ValueError(f"instance_counts needs {num_classes} entries (background first), got {len(instance_counts)}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.momentum = momentum
        self.loss_weight = loss_weight
        self.up, self.down = up, down
        self.start_epoch = start_epoch
        self.groups = [list(g) for g in groups] if groups is not None else [[c] for c in range(1, num_classes)]
        for group in self.groups:
            if any(not 0 < c < num_classes for c in group):
                raise ValueError(f"FASA group {group} holds labels outside 1..{num_classes - 1}")
        self.register_buffer("feature_mean", torch.zeros(num_classes, feature_dim))
        self.register_buffer("feature_var", torch.zeros(num_classes, feature_dim))
        self.register_buffer("feature_used", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("prob", inverse_frequency_probabilities(instance_counts, prob_power, prob_scale))
        self.register_buffer("previous_share", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("has_previous", torch.zeros((), dtype=torch.bool))
        self.register_buffer("val_loss_sum", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("val_count", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.validating = False

    # ------------------------------------------------------------------ statistics
    @property
    def active(self) -> bool:
        """Virtual features are used in this epoch."""
        return int(self.epoch) >= self.start_epoch and not self.validating

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(int(epoch))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold the positive RoIs' ``features`` (N, D) with ``labels`` (N,) into the statistics."""
        positive = labels > 0
        if not bool(positive.any()):
            return
        features = features[positive].detach().float()
        labels = labels[positive]
        for c in labels.unique().tolist():
            x = features[labels == c]
            mean = x.mean(dim=0)
            var = x.var(dim=0, unbiased=True) if x.shape[0] > 1 else torch.zeros_like(mean)
            if bool(self.feature_used[c]):
                self.feature_mean[c].lerp_(mean, self.momentum)
                self.feature_var[c].lerp_(var, self.momentum)
            else:
                self.feature_mean[c] = mean
                self.feature_var[c] = var
                self.feature_used[c] = True

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Virtual features: for each class c with statistics, one draw with probability p_c.

        Returns:
            ((M, D) features, (M,) labels), M possibly 0.
        """
        device = self.prob.device
        draw = torch.rand(self.num_classes, device=device, generator=generator) < self.prob
        chosen = torch.where(draw & self.feature_used)[0]
        chosen = chosen[chosen > 0]
        if chosen.numel() == 0:
            return self.feature_mean.new_zeros((0, self.feature_dim)), chosen
        noise = torch.randn(chosen.numel(), self.feature_dim, device=device, generator=generator)
        features = self.feature_mean[chosen] + self.feature_var[chosen].clamp(min=0).sqrt() * noise
        return features, chosen

    def virtual_loss(
        self,
        classify: Callable[[torch.Tensor], torch.Tensor],
        classification_loss: Callable[..., dict[str, torch.Tensor]],
        like: torch.Tensor,
    ) -> torch.Tensor:
        """``loss_weight`` x the classification loss of freshly sampled virtual features
        (0, still attached to the graph through ``like``, when none is drawn or FASA is inactive)."""
        zero = like.sum() * 0.0
        if not self.active:
            return zero
        features, labels = self.sample()
        if labels.numel() == 0:
            return zero
        logits = classify(features.to(like.dtype))
        terms = classification_loss(logits, labels, update_stats=False)
        return self.loss_weight * sum(terms.values()) + zero

    # ------------------------------------------------------------------ adaptation
    def begin_validation(self) -> None:
        """Start a validation pass: reset the per-class loss sums; stop updating statistics."""
        self.val_loss_sum.zero_()
        self.val_count.zero_()
        self.validating = True

    @torch.no_grad()
    def record(self, detection_logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate per-class cross-entropy of (N, K+1) background-first logits."""
        losses = torch.nn.functional.cross_entropy(detection_logits.float(), labels, reduction="none")
        self.val_loss_sum.index_add_(0, labels, losses.to(self.val_loss_sum.dtype))
        self.val_count.index_add_(0, labels, torch.ones_like(losses, dtype=self.val_count.dtype))

    def end_validation(self) -> None:
        self.validating = False

    @torch.no_grad()
    def adapt(self, loss_sum: torch.Tensor | None = None, count: torch.Tensor | None = None) -> torch.Tensor:
        """Update p_c from this epoch's validation loss shares (sums over all ranks may be
        passed in); returns the new shares."""
        loss_sum = self.val_loss_sum if loss_sum is None else loss_sum.to(self.val_loss_sum)
        count = self.val_count if count is None else count.to(self.val_count)
        total = count.sum()
        share = loss_sum / total if total > 0 else torch.zeros_like(loss_sum)
        if not bool(self.has_previous):
            self.previous_share.copy_(share)
            self.has_previous.fill_(True)
            return share
        for group in self.groups:
            index = torch.as_tensor(group, dtype=torch.long, device=share.device)
            delta = float(share[index].sum() - self.previous_share[index].sum())
            if delta > 0:
                self.prob[index] = (self.prob[index] * self.down).clamp(0.0, 1.0)
            elif delta < 0:
                self.prob[index] = (self.prob[index] * self.up).clamp(0.0, 1.0)
        self.previous_share.copy_(share)
        return share
