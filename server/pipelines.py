"""The pipeline kinds a server offers, and how a request's parameters become loader options.

A kind has a name (what ``StreamRequest.pipeline`` says), the ``params`` oneof field that
carries its parameters, a converter from that message (plus server defaults and limits) to
the keyword options of its loader, and a factory that builds the loader. Only
``copy-paste`` exists today; CutMix / CP² / Mosaic register here when their loaders land.

Conversion errors are :class:`RequestError` naming the field (``copy_paste.output_size``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

import grpc

from ..dali_pipes.copy_paste.options import COPY_PASTE_OPTIONS
from ..dali_pipes.core.option_schema import Option, options_by_name, served
from ..proto import decal_pb2 as pb
from .config import DatasetEntry, Limits

__all__ = ["RequestError", "PipelineKind", "PIPELINES", "COPY_PASTE", "short"]


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


JITTER_PRESETS = ("lsj", "ssj", "none")
#: The options a copy-paste request may carry, by name (``dali_pipes/copy_paste/options.py``).
SCHEMA = options_by_name(served(COPY_PASTE_OPTIONS))
MIN_OUTPUT_SIZE = int(SCHEMA["output_size"].server_low)
MAX_JITTER_SCALE = 10.0


def copy_paste_options(params: pb.CopyPasteParams, defaults: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """CopyPasteParams (validated) → CopyPasteLoader keyword options.

    Unset fields take ``defaults`` (the server config's ``[defaults.copy-paste]``), else the
    loader's own defaults. ``defaults`` are checked against the same limits.
    """
    p = "copy_paste."
    options: dict[str, Any] = {}
    merged: dict[str, Any] = dict(defaults)

    def pick(name: str) -> Any:
        if params.HasField(name):
            return getattr(params, name), p + name
        if name in merged:
            return merged[name], f"defaults.copy-paste.{name}"
        return None, None

    value, where = pick("output_size")
    options["output_size"] = checked(SCHEMA["output_size"], where, value, limits) if where else None
    if options["output_size"] is None:
        default = SCHEMA["output_size"].default
        if not MIN_OUTPUT_SIZE <= default <= limits.max_output_size:
            raise invalid(
                "copy_paste.output_size",
                f"not given, and the loader default {default} is over limits.max_output_size={limits.max_output_size} "
                "(set [defaults.copy-paste] output_size in the server config)",
            )
        options["output_size"] = default

    kind = params.WhichOneof("jitter")
    if kind == "jitter_preset" or (kind is None and isinstance(merged.get("jitter"), str)):
        name = params.jitter_preset if kind else merged["jitter"]
        where = p + "jitter_preset" if kind else "defaults.copy-paste.jitter"
        if name.lower() not in JITTER_PRESETS:
            raise invalid(where, f"must be one of {', '.join(JITTER_PRESETS)}, got {short(name)}")
        options["jitter"] = name.lower()
    elif kind == "jitter_range" or (kind is None and "jitter" in merged):
        if kind:
            low, high, where = params.jitter_range.min_scale, params.jitter_range.max_scale, p + "jitter_range"
        else:
            try:
                low, high = (float(v) for v in merged["jitter"])
            except (TypeError, ValueError):
                raise invalid("defaults.copy-paste.jitter", f"expected a preset or [min, max], got {short(merged['jitter'])}") from None
            where = "defaults.copy-paste.jitter"
        _float_in(where + ".min_scale", low, 0.0, MAX_JITTER_SCALE, low_open=True)
        _float_in(where + ".max_scale", high, 0.0, MAX_JITTER_SCALE, low_open=True)
        if low > high:
            raise invalid(where, f"min_scale {low} > max_scale {high}")
        options["jitter"] = (float(low), float(high))

    for option in served(COPY_PASTE_OPTIONS):
        if option.name in ("output_size", "jitter"):
            continue
        value, where = pick(option.name)
        if where is not None:
            options[option.name] = checked(option, where, value, limits)
    unknown = set(merged) - {option.name for option in served(COPY_PASTE_OPTIONS)}
    if unknown:
        raise invalid(f"defaults.copy-paste.{sorted(unknown)[0]}", "unknown parameter")
    return options


def checked(option: Option, where: str, value: Any, limits: Limits) -> Any:
    """``value`` of a served ``option`` (from a request field or a server default at ``where``)
    checked against the option's bounds, its choices and the server's ``limits``.

    Raises:
        RequestError: INVALID_ARGUMENT starting with ``where``.
    """
    if option.choices:
        if value not in option.choices:
            raise invalid(where, f"must be {' or '.join(repr(c) for c in option.choices)}, got {short(value)}")
        return value
    kind = option.type if option.type in (int, float, bool) else float
    if kind is bool:
        return bool(value)
    low = option.low if option.server_low is None else option.server_low
    high = getattr(limits, option.limit) if option.limit else option.high
    if kind is int:
        return _int_in(where, int(value), low, high)
    return _float_in(where, float(value), low, high, low_open=option.low_open)


def copy_paste_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes.copy_paste.loader import CopyPasteLoader

    dataset = parsed_dataset(
        str(entry.annotations), str(entry.images), options.get("on_error", "raise"), not options.get("paste_by_box", False)
    )
    return CopyPasteLoader(entry.annotations, entry.images, dataset=dataset, **options)


@lru_cache(maxsize=32)
def _parse_dataset(annotations: str, images: str, on_error: str, require_segmentation: bool, mtime_ns: int) -> Any:
    from ..dali_pipes.coco.reader import CocoDataset

    return CocoDataset(annotations, images, on_error=on_error, require_segmentation=require_segmentation)


def parsed_dataset(annotations: str, images: str, on_error: str, require_segmentation: bool = True) -> Any:
    """The parsed dataset of a registered entry, shared by every stream that reads it (a COCO
    json takes tens of seconds and gigabytes to parse). Parsed again when the json changes.
    Streams only read it: the per-stream state (skips, positions) lives in each loader.

    Raises:
        DatasetError: field ``"annotations"`` when the json cannot be stat'ed (gone since the
            server started), or whatever the reader finds wrong in it.
    """
    from ..dali_pipes.core.errors import DatasetError

    try:
        mtime_ns = os.stat(annotations).st_mtime_ns
    except OSError as error:
        raise DatasetError(annotations, f"annotation file unavailable: {error.strerror or error}", field="annotations") from None
    return _parse_dataset(annotations, images, on_error, require_segmentation, mtime_ns)


@dataclass(frozen=True)
class PipelineKind:
    """One pipeline a client can ask for."""

    name: str
    description: str
    params_field: str
    to_options: Callable[[Any, Mapping[str, Any], Limits], dict[str, Any]]
    build_loader: Callable[[DatasetEntry, Mapping[str, Any]], Any]

    def defaults_json(self) -> dict[str, str]:
        """Parameter name → the loader's default, JSON-encoded (for Info and /pipelines)."""
        return {option.name: json.dumps(option.default) for option in served(COPY_PASTE_OPTIONS)}


COPY_PASTE = PipelineKind(
    name="copy-paste",
    description="Simple Copy-Paste (Ghiasi et al. 2021) with LSJ/SSJ scale jitter and flip; COCO/LVIS instance masks",
    params_field="copy_paste",
    to_options=copy_paste_options,
    build_loader=copy_paste_loader,
)

#: name → kind, what this server can stream.
PIPELINES: dict[str, PipelineKind] = {COPY_PASTE.name: COPY_PASTE}
