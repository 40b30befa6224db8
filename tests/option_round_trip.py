"""Each served option goes from a ``RemoteLoader``'s keyword to the server's loader options
unchanged: the client puts it in the family's params message (``RemoteLoader``'s
``_params_message``, nested holders and ``Range`` pairs included) and the server reads it back
(``PipelineKind.to_options``). A value other than the default is sent, so that an option the
client drops or the server reads from the wrong field fails (a dropped one would come back
as the default). An option that can be None is also sent as None, to a server whose
``[defaults.<family>]`` gives it a value: it must arrive as None, not as that default."""

from __future__ import annotations

import typing
from typing import Any

from decal.dali_pipes.core.option_schema import Option, in_bounds, served
from decal.server.config import Limits
from decal.server.params import can_be_none, is_pair
from decal.server.pipelines import PipelineKind
from decal.server.remote_loader import _params_message


def non_default_value(option: Option, limits: Limits) -> Any:
    """A valid value of ``option`` other than its default, or None when there is no simple one
    (``jitter``, whose preset/range encoding has its own tests, and options defaulting to None)."""
    default = option.default
    if option.name == "jitter" or default is None:
        return None
    if option.choices:
        return next((c for c in option.choices if c != default), None)
    if isinstance(default, bool):
        return not default
    if is_pair(option):
        low, high = default
        pair = (low, (low + high) / 2)
        return pair if high != low and all(in_bounds(option, v) for v in pair) else None
    high = getattr(limits, option.limit) if option.limit else option.high
    for value in ((default + high) / 2 if high is not None else default + 1, default / 2 if default else None):
        if value is not None and type(default)(value) != default and in_bounds(option, type(default)(value), high=high):
            return type(default)(value)
    return None


def assert_options_round_trip(kind: PipelineKind) -> None:
    limits = Limits()
    second = "other" if kind.name == "self-training" else None
    checked = 0
    for option in served(kind.schema):
        value = non_default_value(option, limits)
        if value is None:
            continue
        got = kind.to_options(_params_message(kind, {option.name: value}, second_dataset=second), {}, limits)[option.name]
        assert (tuple(got) if is_pair(option) else got) == value, (kind.name, option.name)
        checked += 1
    assert checked >= len(served(kind.schema)) - 3, (kind.name, checked)  # all but jitter and None defaults
    assert_none_round_trips(kind)


def some_value(option: Option) -> Any:
    """A valid value of ``option`` other than None, inside its bounds (a server default)."""
    if option.default is not None:
        return option.default
    low = 0.0 if option.low is None else option.low
    high = low + 1.0 if option.high is None else option.high
    if is_pair(option):
        return (low + (high - low) / 4, low + (high - low) / 2)
    scalar = [a for a in typing.get_args(option.type) if a is not type(None)][0]
    return scalar(low + 1) if scalar is int else scalar(low + (high - low) / 2)


def assert_none_round_trips(kind: PipelineKind) -> None:
    """Every served option that can be None, sent as None, arrives as None, although the
    server's defaults set it (an unset field would take that default)."""
    limits = Limits()
    second = "other" if kind.name == "self-training" else None
    nullable = [option for option in served(kind.schema) if can_be_none(option)]
    for option in nullable:
        default = some_value(option)
        assert in_bounds(option, default[0] if is_pair(option) else default), (kind.name, option.name)
        message = _params_message(kind, {option.name: None}, second_dataset=second)
        assert kind.to_options(message, {option.name: default}, limits)[option.name] is None, (kind.name, option.name)
        # and left out, the option takes the server's default
        left_out = kind.to_options(_params_message(kind, {}, second_dataset=second), {option.name: default}, limits)
        assert left_out[option.name] == (tuple(default) if is_pair(option) else default), (kind.name, option.name)
