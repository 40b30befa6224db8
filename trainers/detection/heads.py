"""torchvision RoI heads with a pluggable box-classification loss and FASA.

:class:`DecalRoIHeads` subclasses torchvision's ``RoIHeads``. At inference it *is*
torchvision's (``super().forward``), except that the classifier's raw output goes through
the loss object's :meth:`detection_logits` first (a no-op for cross-entropy; Seesaw's
K + 2 logits become background-first log-probabilities). In training its forward follows
torchvision's step for step (sample RoIs, box head, predictor, Fast R-CNN losses, mask
branch on the positive RoIs) with two hooks:

* the classification term comes from the loss object (cross-entropy, or
  :class:`~.losses.SeesawLoss`) instead of ``fastrcnn_loss``'s built-in cross-entropy;
* with FASA, the positive RoI features update the class statistics and virtual features add
  ``loss_fasa`` through the classifier only. During FASA's validation pass (the model in
  training mode under ``torch.no_grad``) the heads record per-class losses instead.

Keypoint heads are not supported.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss

from .fasa import FASA
from .losses import CrossEntropyClassification, box_regression_loss

__all__ = ["NormedLinear", "BoxPredictor", "DecalRoIHeads"]


class NormedLinear(nn.Linear):
    """Cosine classifier: ``temperature · (x/‖x‖) · (w/‖w‖)ᵀ + b`` (mmdetection ``NormedLinear``,
    used with Seesaw loss on LVIS; temperature 20, weights ~ N(0, 0.01), bias 0)."""

    def __init__(self, in_features: int, out_features: int, *, temperature: float = 20.0, eps: float = 1e-6) -> None:
        super().__init__(in_features, out_features)
        self.temperature = temperature
        self.eps = eps
        nn.init.normal_(self.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.eps)
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        return F.linear(x * self.temperature, weight, self.bias)


class BoxPredictor(nn.Module):
    """torchvision's ``FastRCNNPredictor`` with a configurable classifier width and type.

    Attribute names (``cls_score``, ``bbox_pred``) match torchvision's, so its checkpoints load.

    Args:
        in_channels: box-head feature size.
        num_classes: K + 1.
        num_logits: classifier outputs (K + 1 for cross-entropy, K + 2 for Seesaw).
        normed: use a :class:`NormedLinear` classifier.
        temperature: its temperature.
    """

    def __init__(
        self, in_channels: int, num_classes: int, num_logits: int | None = None, *, normed: bool = False, temperature: float = 20.0
    ) -> None:
        super().__init__()
        num_logits = num_classes if num_logits is None else num_logits
        if normed:
            self.cls_score: nn.Linear = NormedLinear(in_channels, num_logits, temperature=temperature)
        else:
            self.cls_score = nn.Linear(in_channels, num_logits)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class DecalRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` + a classification loss object + optional :class:`FASA`.

    Build it from an existing torchvision ``RoIHeads`` with :meth:`from_roi_heads`.
    """

    def __init__(self, *args: Any, classification_loss: nn.Module | None = None, fasa: FASA | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.classification_loss = classification_loss or CrossEntropyClassification()
        self.fasa = fasa

    @classmethod
    def from_roi_heads(
        cls, heads: RoIHeads, *, classification_loss: nn.Module | None = None, fasa: FASA | None = None
    ) -> "DecalRoIHeads":
        """The same submodules and settings as ``heads``, with the extra losses."""
        new = cls.__new__(cls)
        new.__dict__.update(heads.__dict__)
        for key in ("_modules", "_parameters", "_buffers"):
            new.__dict__[key] = copy.copy(heads.__dict__[key])
        if heads.keypoint_roi_pool is not None:
            raise ValueError("DecalRoIHeads does not support keypoint heads")
        new.classification_loss = classification_loss or CrossEntropyClassification()
        new.fasa = fasa
        return new

    # ------------------------------------------------------------------ inference
    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):  # type: ignore[override]
        return super().postprocess_detections(
            self.classification_loss.detection_logits(class_logits), box_regression, proposals, image_shapes
        )

    # ------------------------------------------------------------------ training
    def forward(self, features, proposals, image_shapes, targets=None):  # type: ignore[override]
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if targets is None:
            raise ValueError("targets are required in training mode")
        for t in targets:
            if not t["boxes"].is_floating_point():
                raise TypeError(f"target boxes must be floating point, got {t['boxes'].dtype}")
            if t["labels"].dtype != torch.int64:
                raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")

        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        all_labels = torch.cat(labels, dim=0)
        all_targets = torch.cat(regression_targets, dim=0)

        fasa = self.fasa
        validating = fasa is not None and fasa.validating
        losses: dict[str, torch.Tensor] = dict(
            self.classification_loss(class_logits, all_labels, update_stats=not validating)
        )
        losses["loss_box_reg"] = box_regression_loss(box_regression, all_labels, all_targets)
        if fasa is not None:
            if validating:
                fasa.record(self.classification_loss.detection_logits(class_logits.detach()), all_labels)
            else:
                fasa.update(box_features, all_labels)
            losses["loss_fasa"] = fasa.virtual_loss(
                self.box_predictor.cls_score, self.classification_loss, like=class_logits
            )

        if self.has_mask():
            mask_proposals, pos_matched_idxs = [], []
            for img_id in range(len(proposals)):
                pos = torch.where(labels[img_id] > 0)[0]
                mask_proposals.append(proposals[img_id][pos])
                pos_matched_idxs.append(matched_idxs[img_id][pos])
            mask_features = self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
            mask_logits = self.mask_predictor(mask_features)
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            losses["loss_mask"] = maskrcnn_loss(mask_logits, mask_proposals, gt_masks, gt_labels, pos_matched_idxs)
        return [], losses
