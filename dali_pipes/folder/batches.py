"""The batches the image-folder loaders yield: :class:`ClassificationBatch` (``CutMixLoader``)
and :class:`CP2Batch` (``CP2Loader``).

Kept apart from the pipelines (as ``dali_pipes/core/batch.py`` is for the instance loaders) so
that a remote client (``decal.server.remote_loader``) builds the same types without importing
DALI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.epoch_source import LoaderPosition

__all__ = ["ClassificationBatch", "CP2Batch"]


@dataclass
class ClassificationBatch:
    """One batch.

    Attributes:
        images: (B, 3, S, S) float32 normalised (uint8 with ``normalize=False``), on the
            pipeline's device.
        targets: (B, C) float32 soft targets (rows sum to 1), on the images' device.
        labels: (B,) int64 class of each image before mixing (on the host).
        lam: (B,) float32 weight of each image's own label (1 = not mixed; on the host).
        position: where the loader stands after this batch.
        unmixed: (B, S, S, 3) uint8 crops before mixing (``return_unmixed`` only).
    """

    images: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    lam: torch.Tensor
    position: LoaderPosition = field(default_factory=LoaderPosition)
    unmixed: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def partner(self) -> torch.Tensor:
        """(B,) the sample mixed into each one: ``B - 1 - i`` (timm's flipped batch)."""
        return torch.arange(len(self) - 1, -1, -1)


@dataclass
class CP2Batch:
    """One batch of B compositions, on the pipeline's device.

    Attributes:
        image_q, image_k: (B, 3, S, S) float32 normalised (uint8 with ``normalize=False``).
        mask_q, mask_k: (B, S, S) uint8, 1 where the foreground was pasted.
        mask_q_feat, mask_k_feat: (B, S', S') uint8, the masks at the feature stride
            (``mask[:, s//2::s, s//2::s]``, 14 × 14 for 224 and 16).
        position: where the loader stands after this batch.
        views: ``return_views`` only: ``fg_q``, ``fg_k``, ``bg_q``, ``bg_k`` (B, S, S, 3) uint8.
    """

    image_q: torch.Tensor
    image_k: torch.Tensor
    mask_q: torch.Tensor
    mask_k: torch.Tensor
    mask_q_feat: torch.Tensor
    mask_k_feat: torch.Tensor
    position: LoaderPosition = field(default_factory=LoaderPosition)
    views: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.image_q.shape[0]
