"""Checking a loader's options against its config dataclass, with errors that name the option.

Every loader config (``CopyPasteLoaderConfig``, ``CutMixLoaderConfig``, ``CP2LoaderConfig``,
``MosaicLoaderConfig`` and the Copy-Paste subclasses) calls :func:`check_fields` from its
``__post_init__``, so a value of the wrong type is refused where the config is made (by the
loader, by a TOML ``[loader]`` table, or by the server), never deep inside a pipeline::

    CopyPasteLoaderConfig(output_size="1024")
    # OptionError: CopyPasteLoader: option 'output_size' must be an int, got '1024' (str)

Rules follow the annotations: ``int`` refuses floats, strings and bools; ``float`` accepts
ints; ``bool`` accepts only bools; ``Literal[...]`` only its values; ``tuple[float, float]``
a list or tuple of that length; ``X | None`` also None; ``Any`` anything (checked by the
field's own parser, e.g. :meth:`~decal.dali_pipes.core.scale_jitter.ScaleJitter.parse`).
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from functools import lru_cache
from typing import Any, Literal, TypeVar, Union

__all__ = ["OptionError", "ConfigError", "check_fields", "check_range", "fields_from"]

T = TypeVar("T")


class OptionError(ValueError):
    """An option (keyword argument, config field or flag) with a value that cannot be used.
    The message starts with the option's owner and name."""


class ConfigError(ValueError):
    """A config file's value or key that is missing, unknown or malformed (a server's TOML,
    a trainer's TOML); the message names the key. Raised by ``server/config.py`` and
    ``trainers/common/config.py``."""


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return "an int"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return getattr(annotation, "__name__", str(annotation))


def _fits(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, (bool,)) or type(value).__name__ == "bool_"
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_fields(config: Any, owner: str) -> None:
    """Check every field of the dataclass instance ``config`` against its annotation.

    Raises:
        OptionError: ``"{owner}: option '{name}' must be {kind}, got {value!r} ({type})"``.
    """
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        annotation = hints.get(field.name, Any)
        if not _fits(value, annotation):
            raise OptionError(
                f"{owner}: option '{field.name}' must be {_describe(annotation)}, "
                f"got {value!r} ({type(value).__name__})"
            )


def check_range(owner: str, name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`OptionError` unless ``low <= value <= high`` (either bound optional)."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise OptionError(f"{owner}: option '{name}' must be {bounds}, got {value!r}")


def fields_from(config: Any, target: type[T], **overrides: Any) -> T:
    """The dataclass ``target`` made from the same-named fields of ``config`` (a list value,
    as TOML or JSON gives one, becomes a tuple), ``overrides`` given or replacing some; e.g.
    a loader config's kernel parameters."""
    names = [f.name for f in dataclasses.fields(target) if f.name not in overrides]  # type: ignore[arg-type]
    values = {name: getattr(config, name) for name in names}
    return target(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, **overrides)

