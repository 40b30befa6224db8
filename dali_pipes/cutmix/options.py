"""The options of the CutMix/MixUp classification loader, declared once
(:class:`~decal.dali_pipes.core.option_schema.Option`).

``CutMixLoaderConfig`` (``dali_pipes/cutmix/loader.py``) takes its fields, defaults
and bound checks from them (``with_options``); the server
validates a request's ``CutMixParams`` with the served ones (``server/pipelines.py``),
``RemoteLoader`` forwards them, and the README's CutMix option table repeats them.

Units: sizes in pixels of the S×S output; probabilities and area fractions in [0, 1];
pairs are ``(min, max)`` (a ``decal.v1.Range`` on the wire).
"""

from __future__ import annotations

from typing import Literal

from ..core.common_options import DEVICE_OPTIONS, NORMALIZATION_OPTIONS, RUN_OPTIONS, resized_crop_options
from ..core.option_schema import Option

__all__ = ["CUTMIX_OPTIONS"]

#: Every option of ``CutMixLoader``, in the config's field order.
CUTMIX_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 32, "images per batch", low=1),
    Option("output_size", int, 224, "S: every output image is S×S", low=1, served=True, server_low=8, limit="max_output_size"),
    *resized_crop_options((0.08, 1.0), "`RandomResizedCrop` area fraction (min, max)"),
    Option("flip_prob", float, 0.5, "horizontal flip probability", low=0.0, high=1.0, served=True),
    *NORMALIZATION_OPTIONS,
    Option("mix", bool, True, "False: no CutMix/MixUp (smoothed one-hot targets)", served=True),
    Option("mixup_alpha", float, 0.0, "MixUp Beta(α, α); 0 = off", low=0.0, high=1e3, served=True),
    Option("cutmix_alpha", float, 1.0, "CutMix Beta(α, α); 0 = off", low=0.0, high=1e3, served=True),
    Option("cutmix_minmax", tuple[float, float] | None, None, "CutMix box area range (min, max) instead of α", low=0.0, high=1.0, served=True),
    Option("prob", float, 1.0, "probability that a batch (element, pair) is mixed", low=0.0, high=1.0, served=True),
    Option("switch_prob", float, 0.5, "probability of CutMix rather than MixUp when both are on", low=0.0, high=1.0, served=True),
    Option("mode", Literal["batch", "elem", "pair"], "batch", "one draw per batch, element or pair (timm)", choices=("batch", "elem", "pair"), served=True),
    Option("correct_lam", bool, True, "λ from the clipped box area (timm)", served=True),
    Option("label_smoothing", float, 0.0, "label smoothing ε of the targets", low=0.0, high=1.0, served=True),
    Option("num_classes", int | None, None, "width of the targets; None = the folder's classes", low=1, high=1_000_000, served=True),
    Option("verify", bool, False, "check every file's header when the loader is made"),
    Option("return_unmixed", bool, False, "also yield the crops before mixing (uint8 B×S×S×3)", served=True),
    *RUN_OPTIONS,
    *DEVICE_OPTIONS,
)  # fmt: skip
