"""Exponential moving average of a model's weights.

Semantics of timm's ``ModelEmaV2``/``ModelEmaV3`` (Wightman, pytorch-image-models): a
deep copy of the model in eval mode, never trained, updated after each optimiser step as
``ema = d * ema + (1 - d) * model`` over the whole state dict: parameters and
floating-point buffers (BatchNorm running statistics, FASA's feature statistics) are
averaged, integer buffers (``num_batches_tracked``) are copied. With ``warmup`` the decay
after n updates is ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's
``ExponentialMovingAverage(num_updates=n)``), so the random initial weights fade quickly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma(nn.Module):
    """An EMA copy of ``model``.

    Args:
        model: the (unwrapped) model to average; it is deep-copied.
        decay: the target decay.
        warmup: ramp the decay up as ``(1 + n) / (10 + n)``.
        device: keep the copy on another device (e.g. the CPU to save GPU memory); default:
            the model's.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, *, warmup: bool = True, device: Any = None) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.device = device
        if device is not None:
            self.module.to(device)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = int(self.num_updates)
        if self.warmup:
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        d = self.current_decay()
        source = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach()
            if self.device is not None:
                value = value.to(self.device)
            if ema_value.dtype.is_floating_point:
                ema_value.lerp_(value.to(ema_value.dtype), 1.0 - d)
            else:
                ema_value.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy ``model``'s weights (no averaging)."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> "ModelEma":
        # the copy stays in eval mode whatever its owner does
        super().train(mode)
        self.module.eval()
        return self
