"""The batch the instance-segmentation loaders yield (local or remote).

Kept apart from the pipelines so that a remote client (``decal.server.remote_loader``) can
build batches without importing DALI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .epoch_source import LoaderPosition

__all__ = ["Batch"]


@dataclass
class Batch:
    """One batch.

    Attributes:
        images: (B, 3, S, S) uint8 on the pipeline's device.
        targets: B dicts; per image with N instances: ``boxes`` (N, 4) float32 xyxy px,
            ``labels`` (N,) int64 category ids, ``masks`` (N, S, S) uint8, ``area`` (N,)
            int64 mask pixels, ``iscrowd`` (N,) uint8, ``pasted`` (N,) uint8 (1 = pasted in
            this batch), ``image_id`` () int64.
        position: where the loader stands after this batch (what ``state_dict`` saves).
    """

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    position: LoaderPosition = field(default_factory=LoaderPosition)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_pasted(self) -> list[int]:
        """Instances pasted into each image."""
        return [int(t["pasted"].sum()) for t in self.targets]
