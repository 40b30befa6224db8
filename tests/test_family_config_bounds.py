"""Every family's loader config takes its bound checks from its option schema
(``with_options``, ``dali_pipes/core/option_schema.py``): a value just outside an option's
bounds is refused when the config is made, with an ``OptionError`` naming the option, and
the bounds themselves are accepted."""

from __future__ import annotations

import math

import pytest

from decal.dali_pipes import (
    BalancedCopyPasteLoaderConfig,
    CP2LoaderConfig,
    CutMixLoaderConfig,
    MosaicLoaderConfig,
    SelfTrainingLoaderConfig,
)
from decal.dali_pipes.balanced.options import BALANCED_COPY_PASTE_OPTIONS
from decal.dali_pipes.core.option_schema import Option
from decal.dali_pipes.core.options import OptionError
from decal.dali_pipes.cp2.options import CP2_OPTIONS
from decal.dali_pipes.cutmix.options import CUTMIX_OPTIONS
from decal.dali_pipes.mosaic.options import MOSAIC_OPTIONS
from decal.dali_pipes.self_training.options import SELF_TRAINING_OPTIONS

#: config → its family's schema (``dali_pipes/<family>/options.py``).
CONFIGS: dict[type, tuple[Option, ...]] = {
    CutMixLoaderConfig: CUTMIX_OPTIONS,
    CP2LoaderConfig: CP2_OPTIONS,
    MosaicLoaderConfig: MOSAIC_OPTIONS,
    BalancedCopyPasteLoaderConfig: BALANCED_COPY_PASTE_OPTIONS,
    SelfTrainingLoaderConfig: SELF_TRAINING_OPTIONS,
}
#: Options whose bounds depend on another option (checked by their own tests).
_COUPLED = {"shard_id"}


def _scalar(option: Option) -> type | None:
    """``int`` or ``float`` for a scalar option (possibly ``| None``), else None."""
    for kind in (int, float):
        if option.type in (kind, kind | None):
            return kind
    return None


def _outside(option: Option) -> list[int | float]:
    """Values just outside the option's bounds, of the option's own type."""
    kind = _scalar(option)
    values: list[float] = []
    if option.low is not None:
        values.append(option.low if option.low_open else (option.low - 1 if kind is int else math.nextafter(option.low, -math.inf)))
    if option.high is not None:
        values.append(option.high + 1 if kind is int else math.nextafter(option.high, math.inf))
    return [kind(v) for v in values]


def _bounded(config: type) -> list[tuple[type, Option]]:
    return [
        (config, option)
        for option in CONFIGS[config]
        if (option.low is not None or option.high is not None) and option.name not in _COUPLED and _scalar(option)
    ]


CASES = [case for config in CONFIGS for case in _bounded(config)]


def test_every_family_has_bounded_options() -> None:
    assert {config for config, _ in CASES} == set(CONFIGS)


@pytest.mark.parametrize(("config", "option"), CASES, ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_a_value_outside_the_schema_bounds_is_refused(config: type, option: Option) -> None:
    for value in _outside(option):
        with pytest.raises(OptionError, match=f"option '{option.name}'"):
            config(**{option.name: value})


@pytest.mark.parametrize(("config", "option"), CASES, ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_the_schema_bounds_themselves_pass_the_bound_check(config: type, option: Option) -> None:
    """The closed ends are allowed by the schema check (another check may refuse a value
    for its own reason, e.g. CP²'s stride against the output size, but not this one)."""
    for end in (None if option.low_open else option.low, option.high):
        if end is None:
            continue
        value = _scalar(option)(end)
        try:
            config(**{option.name: value})
        except ValueError as error:
            assert f"option '{option.name}' must be" not in str(error), error
