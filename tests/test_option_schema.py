"""The copy-paste option schema (``dali_pipes/copy_paste/options.py``) and everything derived
from it or checked against it: the loader config, the server's validation, the proto message,
``RemoteLoader``'s option list and the README's option table."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from decal.dali_pipes.copy_paste.options import COPY_PASTE_OPTIONS
from decal.dali_pipes.core.loader_config import check_loader_config
from decal.dali_pipes.core.option_schema import Option, served, with_options
from decal.dali_pipes.core.options import OptionError
from decal.dali_pipes.copy_paste.loader import CopyPasteLoaderConfig
from decal.proto import decal_pb2 as pb
from decal.server.config import Limits
from decal.server.params import NONE_FIELD, can_be_none
from decal.server.pipelines import RequestError, copy_paste_options
from decal.server.remote_loader import PIPELINE_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
SERVED = served(COPY_PASTE_OPTIONS)


def test_config_fields_are_the_schema_in_order() -> None:
    fields = dataclasses.fields(CopyPasteLoaderConfig)
    hints = typing.get_type_hints(CopyPasteLoaderConfig)
    assert [f.name for f in fields] == [o.name for o in COPY_PASTE_OPTIONS]
    for field, option in zip(fields, COPY_PASTE_OPTIONS):
        assert field.default == option.default, option.name
        assert hints[field.name] == option.type, option.name


def test_remote_loader_forwards_exactly_the_served_options() -> None:
    from option_round_trip import assert_options_round_trip

    from decal.server.pipelines import COPY_PASTE

    assert PIPELINE_OPTIONS == tuple(o.name for o in SERVED)
    assert_options_round_trip(COPY_PASTE)  # and each reaches the server's options unchanged


_PROTO_TYPES = {
    int: FieldDescriptor.TYPE_INT64,
    float: FieldDescriptor.TYPE_DOUBLE,
    bool: FieldDescriptor.TYPE_BOOL,
    str: FieldDescriptor.TYPE_STRING,
}


def _scalar(option: Option) -> type:
    if option.choices:
        return str
    args = [a for a in typing.get_args(option.type) if a is not type(None)]
    return args[0] if args else option.type


def test_proto_message_carries_exactly_the_served_options() -> None:
    """Every served option is a field of CopyPasteParams with presence (``optional``) and the
    matching scalar type; ``jitter`` is the oneof of a preset and a range; ``none_options``
    (repeated string) names the options a request sets to None, since some can be; nothing else."""
    descriptor = pb.CopyPasteParams.DESCRIPTOR
    proto_fields = {f.name: f for f in descriptor.fields}
    assert set(descriptor.oneofs_by_name["jitter"].fields) == {proto_fields["jitter_preset"], proto_fields["jitter_range"]}
    expected = {o.name for o in SERVED} - {"jitter"} | {"jitter_preset", "jitter_range"}
    assert any(can_be_none(o) for o in SERVED)
    expected.add(NONE_FIELD)
    assert proto_fields[NONE_FIELD].is_repeated
    assert proto_fields[NONE_FIELD].type == FieldDescriptor.TYPE_STRING
    assert set(proto_fields) == expected
    for option in SERVED:
        if option.name == "jitter":
            continue
        field = proto_fields[option.name]
        assert field.has_presence, option.name
        assert field.type == _PROTO_TYPES[_scalar(option)], option.name


def _readme_rows(heading: str = "### Parameters (`CopyPasteLoader(") -> dict[str, tuple[str, str]]:
    """option → (default, meaning) of the README table after the line starting ``heading``."""
    text = README.read_text()
    start = text.index(heading)
    rows: dict[str, tuple[str, str]] = {}
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.fullmatch(r"\| `(\w+)` \| (.+?) \| (.+) \|", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


def test_readme_table_matches_the_schema() -> None:
    """The README's parameter table lists every option once, in order, with the schema's
    default and help text."""
    rows = _readme_rows()
    assert list(rows) == [o.name for o in COPY_PASTE_OPTIONS]
    for option in COPY_PASTE_OPTIONS:
        default, meaning = rows[option.name]
        assert ast.literal_eval(default.strip("`")) == option.default, option.name
        assert meaning == option.help, option.name


def _bounded() -> list[Option]:
    return [o for o in SERVED if o.high is not None and o.limit is None]


@pytest.mark.parametrize("option", _bounded(), ids=lambda o: o.name)
def test_server_and_loader_refuse_the_same_out_of_range_value(option: Option) -> None:
    """One bound, two checks: just over ``high`` is refused by the loader config and by the
    server's request validation; ``high`` itself is accepted by both."""
    over = option.high + 1 if option.type is int else math.nextafter(option.high, math.inf)
    with pytest.raises(OptionError, match=rf"option '{option.name}' must be in"):
        CopyPasteLoaderConfig(**{option.name: over})
    with pytest.raises(RequestError, match=rf"^copy_paste\.{option.name}: must be") as raised:
        copy_paste_options(pb.CopyPasteParams(**{option.name: over}), {}, Limits())
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    CopyPasteLoaderConfig(**{option.name: option.high})
    assert copy_paste_options(pb.CopyPasteParams(**{option.name: option.high}), {}, Limits())[option.name] == option.high


def test_server_limit_caps_an_option_below_its_schema_bound() -> None:
    params = pb.CopyPasteParams(max_num_pasted=11)
    with pytest.raises(RequestError, match=r"copy_paste\.max_num_pasted: must be in \[0, 10\], got 11"):
        copy_paste_options(params, {}, Limits(max_num_pasted=10))
    CopyPasteLoaderConfig(max_num_pasted=11)


def test_an_option_declared_once_becomes_a_checked_field() -> None:
    """Adding an option is one declaration: the field, its default, its type check and its
    bounds follow."""
    fresh = (Option("strength", float, 0.5, "how strong", low=0.0, high=1.0),)

    @dataclass(frozen=True)
    @with_options(fresh)
    class FreshConfig:
        def __post_init__(self) -> None:
            check_loader_config(self)

    assert FreshConfig().strength == 0.5
    assert "strength: how strong" in (FreshConfig.__doc__ or "")
    with pytest.raises(OptionError, match=r"Fresh: option 'strength' must be in \[0.0, 1.0\], got 1.5"):
        FreshConfig(strength=1.5)
    with pytest.raises(OptionError, match=r"Fresh: option 'strength' must be a number"):
        FreshConfig(strength="high")


def test_an_option_with_choices_refuses_other_values() -> None:
    """``choices`` are checked by the loader config too, not only by the server."""
    with pytest.raises(OptionError, match=r"option 'source_start_method' must be one of fork, spawn, got 'thread'"):
        CopyPasteLoaderConfig(source_start_method="thread")
    assert CopyPasteLoaderConfig(source_start_method="spawn").source_start_method == "spawn"
