"""The checks every loader config runs when it is made (its ``__post_init__``).

One place for what ``CopyPasteLoaderConfig``, ``CutMixLoaderConfig``, ``CP2LoaderConfig``,
``MosaicLoaderConfig`` (and the Copy-Paste subclasses) share: field types
(:func:`~decal.dali_pipes.core.options.check_fields`), the ranges of the common fields, the scale
jitter, the bounds of schema-declared options (``dali_pipes/core/option_schema.py``), and the device (``"cuda:N"`` becomes ``device="gpu", device_id=N``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .backend import parse_device
from .option_schema import check_bounds
from .options import OptionError, check_fields, check_range

__all__ = ["check_loader_config"]

#: Fields that must be at least 1 wherever a config has them.
_POSITIVE = ("batch_size", "output_size", "num_shards", "num_threads", "prefetch_queue_depth", "stride", "step_threads")
#: Probabilities, in [0, 1].
_PROBABILITIES = ("flip_prob", "prob", "switch_prob", "mosaic_prob", "jitter_prob", "grayscale_prob", "blur_prob")


def check_loader_config(config: Any) -> None:
    """Validate (and normalise the device of) a frozen loader config dataclass in place.

    Raises:
        OptionError: naming the loader and the option, e.g.
            ``CopyPasteLoader: option 'jitter': expected 'lsj', 'ssj', 'none' or (min, max), got 1.5``.
    """
    owner = type(config).__name__.removesuffix("Config")
    check_fields(config, owner)
    names = {f.name for f in dataclasses.fields(config)}
    for name in _POSITIVE:
        if name in names and getattr(config, name) is not None:  # None: "the default" where typed so
            check_range(owner, name, getattr(config, name), low=1)
    for name in _PROBABILITIES:
        if name in names:
            check_range(owner, name, getattr(config, name), low=0.0, high=1.0)
    if "shard_id" in names and not 0 <= config.shard_id < config.num_shards:
        raise OptionError(f"{owner}: option 'shard_id' must be in [0, num_shards={config.num_shards}), got {config.shard_id}")
    check_bounds(config, owner)
    if "jitter" in names:
        from .scale_jitter import ScaleJitter

        try:
            ScaleJitter.parse(config.jitter)
        except ValueError as error:
            raise OptionError(f"{owner}: option {error}") from None
    if "device" in names:
        try:
            device = parse_device(config.device)
        except OptionError as error:
            raise OptionError(f"{owner}: option {error}") from None
        if device.index is not None:
            if config.device_id not in (0, device.index):
                raise OptionError(
                    f"{owner}: option 'device' is {config.device!r} but 'device_id' is {config.device_id}; give one of them"
                )
            object.__setattr__(config, "device", "gpu")
            object.__setattr__(config, "device_id", device.index)
