"""The options of the CP² loader, declared once (:class:`~decal.dali_pipes.core.option_schema.Option`).

``CP2LoaderConfig`` (``dali_pipes/cp2/loader.py``) takes its fields, defaults and bound
checks from them (``with_options``); the server validates a
request's ``CP2Params`` with the served ones (``server/pipelines.py``), ``RemoteLoader``
forwards them, and the README's CP² option table repeats them.

Units: sizes in pixels of the S×S output; probabilities and area fractions in [0, 1];
pairs are ``(min, max)`` (a ``decal.v1.Range`` on the wire).
"""

from __future__ import annotations

from ..core.common_options import DEVICE_OPTIONS, NORMALIZATION_OPTIONS, RUN_OPTIONS, resized_crop_options
from ..core.option_schema import Option

__all__ = ["CP2_OPTIONS"]

#: Every option of ``CP2Loader``, in the config's field order.
CP2_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 32, "foreground images per batch", low=1),
    Option("output_size", int, 224, "S: every view is S×S", low=1, served=True, server_low=8, limit="max_output_size"),
    Option("stride", int, 16, "encoder output stride; feature masks are (S/stride)²", low=1, high=1024, served=True),
    *resized_crop_options((0.2, 1.0), "`RandomResizedCrop` area fraction (min, max) of every view"),
    Option("brightness", float, 0.4, "`ColorJitter` brightness", low=0.0, high=1.0, served=True),
    Option("contrast", float, 0.4, "`ColorJitter` contrast", low=0.0, high=1.0, served=True),
    Option("saturation", float, 0.4, "`ColorJitter` saturation", low=0.0, high=1.0, served=True),
    Option("hue", float, 0.1, "`ColorJitter` hue", low=0.0, high=0.5, served=True),
    Option("jitter_prob", float, 0.8, "probability of the colour jitter", low=0.0, high=1.0, served=True),
    Option("grayscale_prob", float, 0.2, "probability of grayscale", low=0.0, high=1.0, served=True),
    Option("blur_prob", float, 0.5, "probability of the Gaussian blur", low=0.0, high=1.0, served=True),
    Option("blur_sigma", tuple[float, float], (0.1, 2.0), "blur sigma range (px)", low=0.0, high=64.0, served=True),
    Option("flip_prob", float, 0.5, "horizontal flip probability", low=0.0, high=1.0, served=True),
    Option("mask_area", tuple[float, float], (0.5, 0.8), "area fraction of the pasted rectangle (min, max)", low=0.0, high=1.0, low_open=True, served=True),
    Option("mask_ratio", tuple[float, float], (0.8, 1.25), "aspect h/w of the pasted rectangle (min, max)", low=0.0, high=100.0, low_open=True, served=True),
    Option("labelled", bool, False, "read the root as class-per-directory (labels unused)", served=True),
    Option("background_root", str | None, None, "a second folder for the backgrounds (a path: never sent by a client)"),
    *NORMALIZATION_OPTIONS,
    Option("verify", bool, False, "check every file's header when the loader is made"),
    Option("return_views", bool, False, "also yield the four views before compositing (uint8 B×S×S×3)", served=True),
    *RUN_OPTIONS,
    *DEVICE_OPTIONS,
)  # fmt: skip
