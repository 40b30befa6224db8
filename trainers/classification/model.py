"""The classifier: a torchvision ResNet of the configured depth, optionally from local weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torchvision
from torch import nn

from .config import ModelConfig

__all__ = ["build_classifier", "load_weights"]

log = logging.getLogger(__name__)


def _state_dict_of(obj: Any) -> Mapping[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            return _state_dict_of(obj[key])
    if not isinstance(obj, Mapping):
        raise ValueError("the file holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict (torchvision's, or a checkpoint of this trainer) into ``model``;
    tensors whose shape differs (the classifier of another number of classes) are skipped.
    Returns the names of the skipped tensors."""
    source = _state_dict_of(torch.load(path, map_location="cpu", weights_only=False))
    target = model.state_dict()
    unknown = [k for k in source if k not in target]
    if len(unknown) == len(source):
        raise ValueError(f"{path}: no tensor matches the model (keys like {list(source)[:3]})")
    skipped = [k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape)]
    usable = {k: v for k, v in source.items() if k in target and k not in skipped}
    missing = [k for k in target if k not in usable and not k.endswith("num_batches_tracked")]
    if [k for k in missing if not k.startswith("fc.")]:
        raise ValueError(f"{path}: weights miss {missing[:5]} (another depth?)")
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors from %s; skipped %s", len(usable), path, skipped)
    return skipped


def build_classifier(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``torchvision.models.resnet<depth>(weights=None, num_classes=...)`` (+ local weights)."""
    factory = getattr(torchvision.models, f"resnet{cfg.depth}")
    model = factory(weights=None, num_classes=num_classes, zero_init_residual=cfg.zero_init_residual)
    if cfg.weights:
        load_weights(model, cfg.weights)
    return model
