"""Each served family's option schema (``dali_pipes/<family>_options.py``) and everything
checked against it: the loader config's fields, the proto params message, the server's
validation and bounds, ``RemoteLoader``'s option list and the README's option table.
(Copy-paste's own checks: ``tests/test_option_schema.py``.)"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import typing

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor

from decal.dali_pipes import (
    BalancedCopyPasteLoaderConfig,
    CopyPasteLoaderConfig,
    CP2LoaderConfig,
    CutMixLoaderConfig,
    MosaicLoaderConfig,
    SelfTrainingLoaderConfig,
)
from decal.dali_pipes.core.option_schema import Option, served
from decal.proto import decal_pb2 as pb
from decal.server.config import Limits
from decal.server.params import NONE_FIELD, can_be_none, is_pair
from decal.server.pipelines import COPY_PASTE, PIPELINES, PipelineKind, RequestError
from decal.server.remote_loader import forwarded_options

from option_round_trip import assert_options_round_trip
from test_option_schema import _PROTO_TYPES, _readme_rows, _scalar


CONFIGS: dict[str, type] = {
    "copy-paste": CopyPasteLoaderConfig,
    "balanced-copy-paste": BalancedCopyPasteLoaderConfig,
    "self-training": SelfTrainingLoaderConfig,
    "mosaic": MosaicLoaderConfig,
    "cutmix": CutMixLoaderConfig,
    "cp2": CP2LoaderConfig,
}
#: Request-level fields of a params message that are not loader options.
REQUEST_FIELDS = {"self-training": {"second_dataset"}}
FAMILIES = [kind for kind in PIPELINES.values() if kind is not COPY_PASTE]


def test_every_pipeline_has_a_config_and_a_params_field() -> None:
    assert set(PIPELINES) == set(CONFIGS)
    oneof = {f.name for f in pb.StreamRequest.DESCRIPTOR.oneofs_by_name["params"].fields}
    assert oneof == {kind.params_field for kind in PIPELINES.values()}


@pytest.mark.parametrize("kind", FAMILIES, ids=lambda k: k.name)
def test_config_fields_are_the_schema_in_order(kind: PipelineKind) -> None:
    config = CONFIGS[kind.name]
    fields = dataclasses.fields(config)
    hints = typing.get_type_hints(config)
    assert [f.name for f in fields] == [o.name for o in kind.schema]
    for field, option in zip(fields, kind.schema):
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert default == option.default, option.name
        assert hints[field.name] == option.type, option.name


@pytest.mark.parametrize("kind", FAMILIES, ids=lambda k: k.name)
def test_proto_message_carries_exactly_the_served_options(kind: PipelineKind) -> None:
    """Every served option is a field of the family's message of the same name: a scalar with
    presence and the matching type, a ``Range`` for a pair, the ``jitter`` oneof for jitter;
    nothing else but the family's request fields, and ``none_options`` (repeated string) exactly
    when one of the message's own options can be None. The copy-paste variants carry the
    copy-paste options in a nested ``CopyPasteParams`` (checked by test_option_schema.py)."""
    descriptor = getattr(pb.StreamRequest(), kind.params_field).DESCRIPTOR
    proto_fields = {f.name: f for f in descriptor.fields}
    expected = set(REQUEST_FIELDS.get(kind.name, ()))
    copy_paste = {o.name for o in served(COPY_PASTE.schema)}
    if kind.nested is not None:
        assert proto_fields[kind.nested].message_type is pb.CopyPasteParams.DESCRIPTOR
        expected.add(kind.nested)
    for option in served(kind.schema):
        if kind.nested is not None and option.name in copy_paste:
            continue
        if option.name == "jitter":
            assert set(descriptor.oneofs_by_name["jitter"].fields) == {proto_fields["jitter_preset"], proto_fields["jitter_range"]}
            expected |= {"jitter_preset", "jitter_range"}
            continue
        expected.add(option.name)
        field = proto_fields[option.name]
        assert field.has_presence, option.name
        if is_pair(option):
            assert field.message_type is pb.Range.DESCRIPTOR, option.name
        else:
            assert field.type == _PROTO_TYPES[_scalar(option)], option.name
        if can_be_none(option):
            expected.add(NONE_FIELD)
            assert proto_fields[NONE_FIELD].is_repeated
            assert proto_fields[NONE_FIELD].type == FieldDescriptor.TYPE_STRING
    assert set(proto_fields) == expected


@pytest.mark.parametrize("kind", FAMILIES, ids=lambda k: k.name)
def test_remote_loader_forwards_exactly_the_served_options(kind: PipelineKind) -> None:
    assert forwarded_options(kind.name) == tuple(o.name for o in served(kind.schema))
    assert_options_round_trip(kind)  # and each reaches the server's options unchanged


@pytest.mark.parametrize("kind", FAMILIES, ids=lambda k: k.name)
def test_readme_table_matches_the_schema(kind: PipelineKind) -> None:
    """The README's table of a family lists its served options (those beyond copy-paste's for
    the copy-paste variants), in order, with the schema's default and help text."""
    shared = {o.name for o in served(COPY_PASTE.schema)} if kind.name in ("balanced-copy-paste", "self-training") else set()
    options = [o for o in served(kind.schema) if o.name not in shared]
    rows = _readme_rows(f"#### `{kind.name}` (`{kind.params_field}`")
    assert list(rows) == [o.name for o in options]
    for option in options:
        default, meaning = rows[option.name]
        assert ast.literal_eval(default.strip("`")) == option.default, option.name
        assert meaning == option.help, option.name


def _over(option: Option) -> float:
    return option.high + 1 if _scalar(option) is int else math.nextafter(option.high, math.inf)


def _bounded(kind: PipelineKind) -> list[Option]:
    return [o for o in served(kind.schema) if o.high is not None and o.limit is None]


@pytest.mark.parametrize(
    "kind,option", [(k, o) for k in FAMILIES for o in _bounded(k)], ids=lambda v: getattr(v, "name", "")
)
def test_server_refuses_just_over_the_bound_and_accepts_the_bound(kind: PipelineKind, option: Option) -> None:
    """Every bounded served option: just over ``high`` is INVALID_ARGUMENT naming
    ``<params>.<option>`` (``.min`` of a pair; ``<params>.copy_paste.<option>`` for a
    copy-paste option of a variant); ``high`` itself is accepted."""
    params = getattr(pb.StreamRequest(), kind.params_field)
    holder = kind.holder(params, option.name)
    prefix = kind.params_field + ("" if holder is params else f".{kind.nested}")
    if is_pair(option):
        getattr(holder, option.name).min, getattr(holder, option.name).max = _over(option), _over(option)
        where = f"{prefix}.{option.name}.min"
    else:
        setattr(holder, option.name, _over(option))
        where = f"{prefix}.{option.name}"
    with pytest.raises(RequestError, match=rf"^{re.escape(where)}: must be") as raised:
        kind.to_options(params, {}, Limits())
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    params.Clear()
    holder = kind.holder(params, option.name)
    if is_pair(option):
        getattr(holder, option.name).min, getattr(holder, option.name).max = option.high, option.high
        assert kind.to_options(params, {}, Limits())[option.name] == (option.high, option.high)
    else:
        setattr(holder, option.name, option.high)
        assert kind.to_options(params, {}, Limits())[option.name] == option.high


def test_a_pair_with_min_over_max_names_the_field() -> None:
    params = pb.CutMixParams(scale=pb.Range(min=0.9, max=0.2))
    with pytest.raises(RequestError, match=r"^cutmix\.scale: min 0\.9 > max 0\.2"):
        PIPELINES["cutmix"].to_options(params, {}, Limits())


def test_a_choice_outside_its_choices_names_the_field() -> None:
    with pytest.raises(RequestError, match=r"^cutmix\.mode: must be 'batch' or 'elem' or 'pair', got 'all'"):
        PIPELINES["cutmix"].to_options(pb.CutMixParams(mode="all"), {}, Limits())
    with pytest.raises(RequestError, match=r"^balanced_copy_paste\.bank_weighting: must be"):
        PIPELINES["balanced-copy-paste"].to_options(pb.BalancedCopyPasteParams(bank_weighting="random"), {}, Limits())


def test_server_defaults_of_a_family_are_checked_and_unknown_keys_refused() -> None:
    kind = PIPELINES["mosaic"]
    options = kind.to_options(pb.MosaicParams(), {"output_size": 128, "center_range": [0.4, 0.6]}, Limits())
    assert options["output_size"] == 128 and options["center_range"] == (0.4, 0.6)
    with pytest.raises(RequestError, match=r"^defaults\.mosaic\.tiles: unknown parameter"):
        kind.to_options(pb.MosaicParams(), {"tiles": 4}, Limits())
    with pytest.raises(RequestError, match=r"^defaults\.mosaic\.mosaic_prob: must be"):
        kind.to_options(pb.MosaicParams(), {"mosaic_prob": 2.0}, Limits())


def test_a_copy_paste_variant_takes_copy_paste_options_in_its_nested_message() -> None:
    """``balanced_copy_paste.copy_paste.max_num_pasted`` (the balanced default 10 unless
    given), server defaults of both kinds in one ``[defaults.balanced-copy-paste]`` table."""
    kind = PIPELINES["balanced-copy-paste"]
    params = pb.BalancedCopyPasteParams(copy_paste=pb.CopyPasteParams(flip_prob=0.0), bank_power=2.0)
    options = kind.to_options(params, {"blend_sigma": 1.0, "bank_min_area": 4}, Limits())
    assert options == {"output_size": 1024, "flip_prob": 0.0, "blend_sigma": 1.0, "bank_power": 2.0, "bank_min_area": 4}
    with pytest.raises(RequestError, match=r"^balanced_copy_paste\.copy_paste\.max_num_pasted: must be in \[0, 10\], got 11"):
        kind.to_options(pb.BalancedCopyPasteParams(copy_paste=pb.CopyPasteParams(max_num_pasted=11)), {}, Limits(max_num_pasted=10))
    with pytest.raises(RequestError, match=r"^defaults\.balanced-copy-paste\.bank_size: unknown parameter"):
        kind.to_options(params, {"bank_size": 4}, Limits())


def test_the_request_value_wins_over_the_server_default() -> None:
    kind = PIPELINES["cp2"]
    options = kind.to_options(pb.CP2Params(stride=8), {"stride": 32}, Limits())
    assert options["stride"] == 8
    assert kind.to_options(pb.CP2Params(), {"stride": 32}, Limits())["stride"] == 32


def test_a_bad_none_options_entry_names_the_field() -> None:
    """``none_options`` may name only the message's own options that can be None, and not one
    the request also sets."""
    kind, limits = PIPELINES["cutmix"], Limits()
    cases = {
        "prob": r"^cutmix\.none_options: prob cannot be None$",
        "bogus": r"^cutmix\.none_options: 'bogus' is not an option of this message$",
    }
    for name, message in cases.items():
        with pytest.raises(RequestError, match=message) as error:
            kind.to_options(pb.CutMixParams(none_options=[name]), {}, limits)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RequestError, match=r"^cutmix\.none_options: num_classes is both set and None$"):
        kind.to_options(pb.CutMixParams(num_classes=5, none_options=["num_classes"]), {}, limits)
    # a copy-paste option of a variant is named in the nested message, where it lives
    balanced = PIPELINES["balanced-copy-paste"]
    nested = pb.BalancedCopyPasteParams(copy_paste=pb.CopyPasteParams(none_options=["repeat_factor_threshold"]))
    assert balanced.to_options(nested, {"repeat_factor_threshold": 0.01}, limits)["repeat_factor_threshold"] is None
    with pytest.raises(RequestError, match=r"^balanced_copy_paste\.copy_paste\.none_options: 'bank_power' is not an"):
        balanced.to_options(pb.BalancedCopyPasteParams(copy_paste=pb.CopyPasteParams(none_options=["bank_power"])), {}, limits)
