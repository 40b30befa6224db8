"""A request's pipeline parameters → a loader's keyword options, derived from the family's
option schema (``dali_pipes/<family>_options.py``).

Every served :class:`~decal.dali_pipes.core.option_schema.Option` is a field of the family's
params message with the option's name (``tests/test_family_options.py`` checks the proto
against the schema): a scalar with presence (``optional``), a ``Range`` for a ``(min, max)``
option, and for ``jitter`` the oneof ``jitter_preset`` / ``jitter_range``. A field left
unset takes the server config's ``[defaults.<family>]`` value, else the loader's own default.
An option that can be None (``float | None``: ``repeat_factor_threshold``, CutMix's
``num_classes`` and ``cutmix_minmax``) is set to None by naming it in the message's
``none_options`` (:data:`NONE_FIELD`), which a message has exactly when one of its own options
can be None: proto3 cannot carry None in the field itself, and an unset field means "the
server's default", which may differ.
Every value is checked against the option's bounds and choices and the server's
:class:`~decal.server.config.Limits`; the first problem is a :class:`RequestError`
(INVALID_ARGUMENT) whose message starts with the field (``cutmix.scale.min: ...``).
"""

from __future__ import annotations

import math
import typing
from typing import Any, Mapping, Sequence

import grpc

from ..dali_pipes.core.option_schema import Option, served
from .config import Limits

__all__ = [
    "RequestError", "invalid", "short", "checked", "request_options", "can_be_none", "none_options", "JITTER_PRESETS",
    "MAX_JITTER_SCALE", "NONE_FIELD",
]  # fmt: skip

JITTER_PRESETS = ("lsj", "ssj", "none")
MAX_JITTER_SCALE = 10.0
_MAX_INT64 = 2**63 - 1
#: The repeated string field of a params message naming the options a request sets to None.
NONE_FIELD = "none_options"


class RequestError(Exception):
    """A request the server refuses: a gRPC status code and a message naming the field."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def short(value: Any, limit: int = 64) -> str:
    """repr() of a client-supplied value, truncated (error messages echo it)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid(field_name: str, reason: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field_name}: {reason}")


def _int_in(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise invalid(name, f"must be in [{low}, {high}], got {value}")
    return int(value)


def _float_in(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise invalid(name, f"must be a finite number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def is_pair(option: Option) -> bool:
    """Whether ``option`` is a ``(min, max)`` pair (a ``Range`` on the wire)."""
    args = [a for a in typing.get_args(option.type) if a is not type(None)]
    kind = args[0] if len(args) == 1 else option.type
    return typing.get_origin(kind) is tuple


def can_be_none(option: Option) -> bool:
    """Whether None is a value of ``option`` (its type is ``X | None``)."""
    return type(None) in typing.get_args(option.type)


def none_options(params: Any, options: Sequence[Option], field: str) -> set[str]:
    """The options of ``options`` that the params message ``params`` sets to None
    (:data:`NONE_FIELD`; empty for a message without that field).

    Raises:
        RequestError: INVALID_ARGUMENT ``<field>.none_options: ...`` for a name that is not one
            of ``options``, cannot be None, or is also set in ``params``.
    """
    if NONE_FIELD not in params.DESCRIPTOR.fields_by_name:
        return set()
    by_name = {option.name: option for option in options}
    names = set()
    for name in getattr(params, NONE_FIELD):
        where = f"{field}.{NONE_FIELD}"
        if name not in by_name:
            raise invalid(where, f"{short(name)} is not an option of this message")
        if not can_be_none(by_name[name]):
            raise invalid(where, f"{name} cannot be None")
        if params.HasField(name):
            raise invalid(where, f"{name} is both set and None")
        names.add(name)
    return names


def checked(option: Option, where: str, value: Any, limits: Limits) -> Any:
    """``value`` of a served scalar ``option`` (from a request field or a server default at
    ``where``) checked against the option's bounds, its choices and the server's ``limits``.

    Raises:
        RequestError: INVALID_ARGUMENT starting with ``where``.
    """
    if option.choices:
        if value not in option.choices:
            raise invalid(where, f"must be {' or '.join(repr(c) for c in option.choices)}, got {short(value)}")
        return value
    args = [a for a in typing.get_args(option.type) if a is not type(None)]
    kind = option.type if option.type in (int, float, bool) else (args[0] if len(args) == 1 else float)
    if kind is bool:
        return bool(value)
    low = option.low if option.server_low is None else option.server_low
    high = getattr(limits, option.limit) if option.limit else option.high
    if kind is int:
        return _int_in(where, int(value), int(low if low is not None else -_MAX_INT64), int(high if high is not None else _MAX_INT64))
    low = -math.inf if low is None else low
    return _float_in(where, float(value), low, math.inf if high is None else high, low_open=option.low_open)


def _pair(option: Option, where: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise invalid(where, f"expected [min, max], got {short(value)}") from None
    lo, hi = -math.inf if option.low is None else option.low, math.inf if option.high is None else option.high
    _float_in(where + ".min", low, lo, hi, low_open=option.low_open)
    _float_in(where + ".max", high, lo, hi, low_open=option.low_open)
    if low > high:
        raise invalid(where, f"min {low} > max {high}")
    return (low, high)


def _jitter(params: Any, merged: Mapping[str, Any], field: str, family: str) -> Any:
    """The jitter a request asks for (a preset name or a ``(min, max)`` pair), or None."""
    kind = params.WhichOneof("jitter")
    if kind == "jitter_preset" or (kind is None and isinstance(merged.get("jitter"), str)):
        name = params.jitter_preset if kind else merged["jitter"]
        where = f"{field}.jitter_preset" if kind else f"defaults.{family}.jitter"
        if name.lower() not in JITTER_PRESETS:
            raise invalid(where, f"must be one of {', '.join(JITTER_PRESETS)}, got {short(name)}")
        return name.lower()
    if kind == "jitter_range" or (kind is None and "jitter" in merged):
        if kind:
            low, high, where = params.jitter_range.min_scale, params.jitter_range.max_scale, f"{field}.jitter_range"
        else:
            where = f"defaults.{family}.jitter"
            try:
                low, high = (float(v) for v in merged["jitter"])
            except (TypeError, ValueError):
                raise invalid(where, f"expected a preset or [min, max], got {short(merged['jitter'])}") from None
        _float_in(where + ".min_scale", low, 0.0, MAX_JITTER_SCALE, low_open=True)
        _float_in(where + ".max_scale", high, 0.0, MAX_JITTER_SCALE, low_open=True)
        if low > high:
            raise invalid(where, f"min_scale {low} > max_scale {high}")
        return (float(low), float(high))
    return None


def request_options(
    schema: Sequence[Option], params: Any, defaults: Mapping[str, Any], limits: Limits, *, field: str, family: str
) -> dict[str, Any]:
    """The params message ``params`` (validated) → the loader's keyword options.

    Args:
        schema: the family's options; only the served ones are read.
        params: the family's params message (``CutMixParams``, ...).
        defaults: the server config's ``[defaults.<family>]`` (checked like a request).
        limits: the server's limits (``Option.limit`` names the field that caps an option).
        field: the request's oneof field (``"cutmix"``), the prefix of error messages.
        family: the pipeline name (``"cutmix"``), for errors in ``defaults``.

    Returns:
        ``{name: value}`` of every option the request or the defaults set (None for those the
        request names in :data:`NONE_FIELD`), plus ``output_size`` always (the loader default
        when neither does).
    """
    options_served = served(schema)
    unknown = set(defaults) - {option.name for option in options_served}
    if unknown:
        raise invalid(f"defaults.{family}.{sorted(unknown)[0]}", "unknown parameter")
    options: dict[str, Any] = {}
    nones = none_options(params, options_served, field)
    for option in options_served:
        name = option.name
        if name in nones:
            options[name] = None
            continue
        if name == "jitter":
            value = _jitter(params, defaults, field, family)
            if value is not None:
                options[name] = value
            continue
        if params.HasField(name):
            message = getattr(params, name)
            value, where = ((message.min, message.max) if is_pair(option) else message), f"{field}.{name}"
        elif name in defaults:
            value, where = defaults[name], f"defaults.{family}.{name}"
        else:
            if name != "output_size":
                continue
            if option.default > getattr(limits, option.limit):
                raise invalid(
                    f"{field}.{name}",
                    f"not given, and the loader default {option.default} is over limits.{option.limit}={getattr(limits, option.limit)} "
                    f"(set [defaults.{family}] {name} in the server config)",
                )
            options[name] = option.default
            continue
        options[name] = _pair(option, where, value) if is_pair(option) else checked(option, where, value, limits)
    return options
