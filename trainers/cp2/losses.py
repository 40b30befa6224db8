"""The two CP² losses, as functions of L2-normalised pixel embeddings and binary masks.

Semantics of [CP2]'s code (github.com/wangf3014/CP2, ``builder.py`` ``CP2_MOCO.forward``
builds the logits, ``main.py`` ``train`` the losses); notation: q, k are the query and key
embeddings of one image, ``(C, L)`` with L = h·w pixels, each pixel L2-normalised; M_q, M_k
the foreground masks at the feature stride.

* **Instance loss** (MoCo's InfoNCE on masked average pooling):
  ``q̄ = normalize(Σ_i M_q[i] q_i)``, ``k̄ = normalize(Σ_j M_k[j] k_j)`` (the sum of the
  foreground pixels; its direction is that of their mean), logits
  ``[q̄·k̄, q̄·n_1, ..., q̄·n_K] / τ`` against the K queued negatives, cross-entropy with
  target 0. τ = 0.2.
* **Dense loss**: logits ``s_ij = q_i·k_j / τ_d`` (τ_d = 1: [CP2] does not scale them) for
  every query pixel i and key pixel j of the same image; for each key pixel j a softmax over
  *all* query pixels i (``nn.LogSoftmax(dim=1)`` on the ``(N, L_q, L_k)`` logits in
  ``main.py``), and the loss is the mean of ``-log p(i | j)`` over the foreground pairs
  (i ∈ M_q, j ∈ M_k)::

      L_dense = -1 / (|M_q| |M_k|) Σ_{i∈M_q} Σ_{j∈M_k} log( exp(s_ij) / Σ_{i'} exp(s_i'j) )

  averaged over the images of the batch. The background query pixels are the negatives.
* total: ``L = L_instance + α L_dense`` with α = 0.2.

One deliberate difference: an image without any foreground pair (an empty mask; torchvision's
``RandomErasing`` can fail to place its rectangle) would make [CP2]'s ratio 0/0 = NaN; here
such images are left out of the dense average (the batch's dense loss is 0 if none has one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "masked_average_pool",
    "instance_logits",
    "cp2_instance_loss",
    "dense_logits",
    "cp2_dense_loss",
    "dense_accuracy",
]


def masked_average_pool(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The L2-normalised foreground pooling of each image.

    Args:
        embeddings: (N, C, L) pixel embeddings (L2-normalised along C).
        mask: (N, L) foreground weights in {0, 1}.

    Returns:
        (N, C): ``normalize(Σ_l mask[l] · embeddings[:, l])``; a zero vector for an empty mask.
    """
    pooled = torch.einsum("ncl,nl->nc", embeddings, mask.to(embeddings.dtype))
    return F.normalize(pooled, dim=1)


def instance_logits(q_pool: torch.Tensor, k_pool: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo logits ``[q·k, q·queue] / τ``, (N, 1 + K); the positive is column 0.

    Args:
        q_pool, k_pool: (N, C) pooled, normalised query and key embeddings.
        queue: (C, K) normalised negatives.
        temperature: τ.
    """
    positive = (q_pool * k_pool).sum(dim=1, keepdim=True)
    negative = q_pool @ queue.to(q_pool.dtype)
    return torch.cat([positive, negative], dim=1) / temperature


def cp2_instance_loss(
    q_pool: torch.Tensor, k_pool: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The instance (InfoNCE) loss and its logits (see the module docstring)."""
    logits = instance_logits(q_pool, k_pool, queue, temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target), logits


def dense_logits(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``s[n, i, j] = q[n, :, i] · k[n, :, j] / τ``: (N, L_q, L_k) from (N, C, L_q), (N, C, L_k)."""
    return torch.einsum("nci,ncj->nij", q, k) / temperature


def cp2_dense_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    mask_q: torch.Tensor,
    mask_k: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense loss and its logits (see the module docstring).

    Args:
        q, k: (N, C, L_q) and (N, C, L_k) normalised pixel embeddings.
        mask_q, mask_k: (N, L_q), (N, L_k) foreground masks in {0, 1}.
        temperature: τ_d (1 in [CP2]).

    Returns:
        ``(loss, logits)``, logits (N, L_q, L_k).
    """
    logits = dense_logits(q, k, temperature)
    log_prob = logits.log_softmax(dim=1)  # over the query pixels, for every key pixel
    pairs = mask_q.to(logits.dtype)[:, :, None] * mask_k.to(logits.dtype)[:, None, :]
    count = pairs.sum(dim=(1, 2))
    per_image = -(log_prob * pairs).sum(dim=(1, 2)) / count.clamp(min=1.0)
    valid = (count > 0).to(logits.dtype)
    loss = (per_image * valid).sum() / valid.sum().clamp(min=1.0)
    return loss, logits


@torch.no_grad()
def dense_accuracy(logits: torch.Tensor, mask_q: torch.Tensor, mask_k: torch.Tensor) -> torch.Tensor:
    """[CP2]'s ``acc_seg``: the fraction of images whose highest dense logit is a foreground pair."""
    n = logits.shape[0]
    best = logits.reshape(n, -1).argmax(dim=1)
    pairs = (mask_q[:, :, None] * mask_k[:, None, :]).reshape(n, -1)
    return pairs[torch.arange(n, device=logits.device), best].float().mean()
