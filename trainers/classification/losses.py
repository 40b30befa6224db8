"""CutMix's loss and the top-k accuracy.

[CUTMIX] (clovaai/CutMix-PyTorch ``train.py``) trains with
``lam · CE(logits, y_a) + (1 - lam) · CE(logits, y_b)``, lam the area kept from image a. With
decal's soft targets ``t = lam · onehot(y_a) + (1 - lam) · onehot(y_b)`` (optionally
label-smoothed, timm ``Mixup``) that is exactly the soft-target cross-entropy
``mean_i Σ_c -t_ic log softmax(logits_i)_c`` (timm ``SoftTargetCrossEntropy``), because the
cross-entropy is linear in the target distribution.
"""

from __future__ import annotations

import torch

__all__ = ["soft_target_cross_entropy", "topk_correct"]


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i Σ_c -targets[i, c] · log_softmax(logits[i])[c]``; logits and targets (B, C)."""
    return torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()


@torch.no_grad()
def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of rows whose label is among the k highest logits, for each k (k capped at C)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, : min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]
