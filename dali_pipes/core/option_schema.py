"""One declaration per loader option, from which the config dataclass, its checks, the
server's validation and the client's option list are derived.

An :class:`Option` holds what every consumer needs: the name, the type (an annotation that
:func:`~decal.dali_pipes.core.options.check_fields` understands), the default, the bounds, the
help text (the README's option table repeats it, checked by ``tests/test_option_schema.py``)
and, for options a client may send over gRPC, the proto field that carries it.

A family declares its options once (``dali_pipes/copy_paste/options.py``) and its config
class takes them with :func:`with_options`::

    @dataclass(frozen=True)
    @with_options(COPY_PASTE_OPTIONS)
    class CopyPasteLoaderConfig:
        def __post_init__(self) -> None:
            check_loader_config(self)

Adding an option is one :class:`Option` line plus the code that uses it. See ARCHITECTURE.md,
"Where to add things".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from .options import OptionError

__all__ = ["Option", "with_options", "check_bounds", "served", "options_by_name"]

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """One option of a loader.

    Attributes:
        name: the config field, keyword argument and (when served) proto field name.
        type: its annotation (``int``, ``float``, ``bool``, ``float | None``, ``Literal[...]``,
            ``Any`` for fields with their own parser).
        default: the value when not given.
        help: one line for the README table and the config's docstring.
        low, high: inclusive bounds (None: unbounded on that side), checked by the loader
            and by the server. ``low_open`` makes ``low`` exclusive.
        choices: the allowed strings of a string option (the type says ``Literal`` too; the
            server, receiving a plain proto string, checks these).
        served: whether a client may send it over gRPC (a ``CopyPasteParams`` field of the
            same name; ``jitter`` is the oneof ``jitter_preset``/``jitter_range``).
        server_low: the server's lower bound when stricter than ``low``.
        limit: the name of the :class:`~decal.server.config.Limits` field that caps the value
            on a server.
    """

    name: str
    type: Any
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    served: bool = False
    server_low: float | None = None
    limit: str | None = None


def options_by_name(options: Sequence[Option]) -> dict[str, Option]:
    """name → option, in declaration order."""
    return {option.name: option for option in options}


def served(options: Sequence[Option]) -> tuple[Option, ...]:
    """The options a client may send over gRPC, in declaration order."""
    return tuple(option for option in options if option.served)


def with_options(options: Sequence[Option], *, first: bool = True) -> Callable[[type[T]], type[T]]:
    """Class decorator (apply under ``@dataclass``): add one annotated field per option, with
    its default, in declaration order (before the class body's own fields, or after them with
    ``first=False``), and append the options' help to the docstring.

    Options already annotated in the class body are left alone (a family overrides a default
    by writing the field)."""

    def apply(cls: type[T]) -> type[T]:
        own = dict(cls.__dict__.get("__annotations__", {}))
        annotations: dict[str, Any] = {}  # the options' fields, in declaration order
        for option in options:
            if option.name in own:
                continue
            annotations[option.name] = option.type
            setattr(cls, option.name, option.default)
        cls.__annotations__ = {**annotations, **own} if first else {**own, **annotations}
        cls.__options__ = tuple(options)  # type: ignore[attr-defined]
        lines = "\n".join(f"        {o.name}: {o.help}" for o in options)
        cls.__doc__ = f"{cls.__doc__ or ''}\n\n    Options (``dali_pipes/core/option_schema.py``):\n{lines}\n"
        return cls

    return apply


def in_bounds(option: Option, value: Any, low: float | None = None, high: float | None = None) -> bool:
    """Whether ``value`` is within the option's bounds (``low``/``high`` override them)."""
    low = option.low if low is None else low
    high = option.high if high is None else high
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if low is not None and (value <= low if option.low_open else value < low):
        return False
    return high is None or value <= high


def bounds_text(option: Option, low: float | None = None, high: float | None = None) -> str:
    """``"in [0, 1]"``, ``"in (0.0, 1.0]"``, ``">= 0"`` or ``"<= 5"``."""
    low = option.low if low is None else low
    high = option.high if high is None else high
    if high is None:
        return f"> {low}" if option.low_open else f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"in {'(' if option.low_open else '['}{low}, {high}]"


def check_bounds(config: Any, owner: str) -> None:
    """Check the bounds of every option a :func:`with_options` config declares.

    Raises:
        OptionError: ``"{owner}: option '{name}' must be in [low, high], got {value!r}"``, or
            ``"... must be one of a, b, got {value!r}"`` for an option with ``choices``.
    """
    for option in getattr(type(config), "__options__", ()):
        value = getattr(config, option.name)
        if option.choices and value is not None and value not in option.choices:
            raise OptionError(f"{owner}: option '{option.name}' must be one of {', '.join(option.choices)}, got {value!r}")
        if option.low is None and option.high is None:
            continue
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not in_bounds(option, value):
            raise OptionError(f"{owner}: option '{option.name}' must be {bounds_text(option)}, got {value!r}")
