"""The pipeline kinds a server offers, and how a request's parameters become loader options.

A kind has a name (what ``StreamRequest.pipeline`` says), the ``params`` oneof field that
carries its parameters, the family's option schema (``dali_pipes/<family>_options.py``) from
which the request's validation is derived (:func:`~decal.server.params.request_options`), a
factory that builds the loader, what its batches put on the wire (:class:`Payload`), and its
memory estimate (``server/memory.py``).

Conversion errors are :class:`RequestError` naming the field (``copy_paste.output_size``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

from ..dali_pipes.balanced.options import BALANCED_COPY_PASTE_OPTIONS
from ..dali_pipes.copy_paste.options import COPY_PASTE_OPTIONS
from ..dali_pipes.cp2.options import CP2_OPTIONS
from ..dali_pipes.cutmix.options import CUTMIX_OPTIONS
from ..dali_pipes.mosaic.options import MOSAIC_OPTIONS
from ..dali_pipes.core.option_schema import Option, options_by_name, served
from ..dali_pipes.self_training.options import SELF_TRAINING_OPTIONS
from ..proto import decal_pb2 as pb
from .config import DatasetEntry, Limits
from .memory import (
    descriptor_indexes, descriptor_sizes, descriptor_stream_bytes, folder_stream_bytes, max_instances, max_jitter_scale,
    stream_memory_bytes,
)  # fmt: skip
from .params import JITTER_PRESETS, MAX_JITTER_SCALE, RequestError, checked, invalid, request_options, short

__all__ = [
    "RequestError", "PipelineKind", "Payload", "PIPELINES", "COPY_PASTE", "BALANCED_COPY_PASTE", "SELF_TRAINING",
    "MOSAIC", "CUTMIX", "CP2", "short", "invalid", "checked", "copy_paste_options", "JITTER_PRESETS", "MAX_JITTER_SCALE",
]  # fmt: skip

#: The options a copy-paste request may carry, by name (``dali_pipes/copy_paste/options.py``).
SCHEMA = options_by_name(served(COPY_PASTE_OPTIONS))
_COPY_PASTE_SERVED = frozenset(SCHEMA)
MIN_OUTPUT_SIZE = int(SCHEMA["output_size"].server_low)


class Payload(Enum):
    """What a family's batches put on the wire (``server/wire.py``)."""

    INSTANCES = "instances"  # Batch: images + per-image targets (decal.dali_pipes.core.batch.Batch)
    MIXED = "mixed"  # ClassificationBatch: images + soft targets, labels, lam
    CP2 = "cp2"  # CP2Batch: two composed views and their masks


def copy_paste_options(params: pb.CopyPasteParams, defaults: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """CopyPasteParams (validated) → CopyPasteLoader keyword options (see :data:`COPY_PASTE`)."""
    return COPY_PASTE.to_options(params, defaults, limits)


# ------------------------------------------------------------------------------ datasets


@lru_cache(maxsize=32)
def _parse_dataset(annotations: str, images: str, on_error: str, require_segmentation: bool, mtime_ns: int) -> Any:
    from ..dali_pipes.coco.reader import CocoDataset

    return CocoDataset.open(annotations, images, on_error=on_error, require_segmentation=require_segmentation)


def parsed_dataset(annotations: str, images: str, on_error: str, require_segmentation: bool = True) -> Any:
    """The dataset of a registered entry on its cached, memory-mapped index (as the local
    loaders open it: the json is compiled only when it changed), shared by every stream that
    reads it. Streams only read it: the per-stream state (skips, positions) lives in each loader.

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


def _shared_dataset(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    return parsed_dataset(str(entry.annotations), str(entry.images), options.get("on_error", "raise"), not options.get("paste_by_box", False))


# ------------------------------------------------------------------------------ loaders


def copy_paste_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes import CopyPasteLoader

    return CopyPasteLoader(entry.annotations, entry.images, dataset=_shared_dataset(entry, options), **options)


def balanced_copy_paste_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes import BalancedCopyPasteLoader

    return BalancedCopyPasteLoader(entry.annotations, entry.images, dataset=_shared_dataset(entry, options), **options)


def self_training_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    """``options["second_dataset"]`` is the second set's :class:`DatasetEntry` (its json =
    pseudo labels; an image-folder entry = unlabelled images)."""
    from ..dali_pipes import SelfTrainingLoader

    options = dict(options)
    second: DatasetEntry = options.pop("second_dataset")
    return SelfTrainingLoader(
        entry.annotations, entry.images, second_images=second.images, second_annotations=second.annotations, **options
    )


def mosaic_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes import MosaicLoader

    return MosaicLoader(entry.annotations, entry.images, **options)


def cutmix_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes import CutMixLoader

    return CutMixLoader(entry.images, **options)


def cp2_loader(entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
    from ..dali_pipes import CP2Loader

    return CP2Loader(entry.images, **options)


# ------------------------------------------------------------------------------ memory


def _instance_memory(default_jitter: Any, tiles: int = 1, bank: bool = False) -> Callable[[Mapping[str, Any], Any, int], tuple[int, str]]:
    """The estimate of an instance family: host mask stacks (:func:`stream_memory_bytes`), or,
    when the loader rasterises its masks from descriptors (``loader.mask_source``), the
    descriptor bound (:func:`descriptor_stream_bytes`); plus the bank's bytes (balanced)."""

    def estimate(options: Mapping[str, Any], loader: Any, depth: int) -> tuple[int, str]:
        scale = max_jitter_scale(options.get("jitter") or default_jitter)
        indexes = descriptor_indexes(loader)
        pasted = int(options.get("max_num_pasted", 0)) if options.get("copy_paste", True) else 0
        if indexes is None:
            needed = stream_memory_bytes(
                batch_size=options["batch_size"],
                output_size=options["output_size"],
                max_scale=scale,
                instances=tiles * max_instances(getattr(loader, "dataset", None)),
                depth=depth,
                pasted=pasted,
                pasted_from_batch=not bank,
            )
            what = f"images up to {options['output_size']} x {scale:g} jitter scale with their masks"
        else:
            needed = descriptor_stream_bytes(
                batch_size=options["batch_size"],
                output_size=options["output_size"],
                max_scale=scale,
                sizes=[descriptor_sizes(index) for index in indexes],
                pasted=pasted,
                depth=depth,
                tiles=tiles,
                pasted_from_batch=not bank,
            )
            what = f"images up to {options['output_size']} x {scale:g} jitter scale, masks rasterised at {options['output_size']} from descriptors"
        if bank:
            bank_bytes = int(options.get("bank_max_bytes", _default(BALANCED_COPY_PASTE_OPTIONS, "bank_max_bytes")))
            needed += bank_bytes
            what += f", plus the instance bank's {bank_bytes} bytes"
        return needed, what

    return estimate


def _folder_memory(bytes_per_pixel: Callable[[Mapping[str, Any]], int], planes: str) -> Callable[[Mapping[str, Any], Any, int], tuple[int, str]]:
    def estimate(options: Mapping[str, Any], loader: Any, depth: int) -> tuple[int, str]:
        per_pixel = bytes_per_pixel(options)
        needed = folder_stream_bytes(batch_size=options["batch_size"], output_size=options["output_size"], bytes_per_pixel=per_pixel, depth=depth)
        return needed, f"{planes} of {options['output_size']}x{options['output_size']} ({per_pixel} bytes per pixel)"

    return estimate


def _default(schema: Sequence[Option], name: str) -> Any:
    return options_by_name(schema)[name].default


# ------------------------------------------------------------------------------ kinds


@dataclass(frozen=True)
class PipelineKind:
    """One pipeline a client can ask for.

    Attributes:
        name: ``StreamRequest.pipeline``; its :attr:`params_field` is the name with ``_`` for ``-``.
        schema: the family's options (``dali_pipes/<family>_options.py``); the served ones
            are the message's fields.
        build_loader: (dataset entry, loader keyword options) → the loader.
        payload: what its batches carry on the wire.
        memory: (options, loader, batches in flight) → (estimated bytes, what they hold).
        needs_annotations: the dataset must be a COCO json (else an image folder will do).
        second_dataset: the params name a second registered dataset (``second_dataset``).
        nested: the field of the params message that carries the copy-paste options (a
            ``CopyPasteParams``), for the families that extend copy-paste; None when every
            served option is a field of the params message itself.
    """

    name: str
    description: str
    schema: tuple[Option, ...]
    build_loader: Callable[[DatasetEntry, Mapping[str, Any]], Any]
    payload: Payload
    memory: Callable[[Mapping[str, Any], Any, int], tuple[int, str]]
    needs_annotations: bool = True
    second_dataset: bool = False
    nested: str | None = None

    @property
    def params_field(self) -> str:
        """The ``params`` oneof field of ``StreamRequest`` that carries this kind's parameters."""
        return self.name.replace("-", "_")

    def _in_nested(self, name: str) -> bool:
        return self.nested is not None and name in _COPY_PASTE_SERVED

    def holder(self, params: Any, name: str) -> Any:
        """The message of ``params`` (this kind's params message) that carries option ``name``."""
        return getattr(params, self.nested) if self._in_nested(name) else params

    def to_options(self, params: Any, defaults: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
        """The params message (validated against the schema, ``defaults`` and ``limits``) →
        the loader's keyword options."""
        if self.nested is None:
            return request_options(self.schema, params, defaults, limits, field=self.params_field, family=self.name)
        inner = tuple(o for o in self.schema if self._in_nested(o.name))
        outer = tuple(o for o in self.schema if not self._in_nested(o.name))
        options = request_options(
            inner, getattr(params, self.nested), {k: v for k, v in defaults.items() if self._in_nested(k)}, limits,
            field=f"{self.params_field}.{self.nested}", family=self.name,
        )  # fmt: skip
        outer_defaults = {k: v for k, v in defaults.items() if not self._in_nested(k)}
        options.update(request_options(outer, params, outer_defaults, limits, field=self.params_field, family=self.name))
        return options

    def float_images(self, options: Mapping[str, Any]) -> bool:
        """Whether the batches' images are float32 (normalised) rather than uint8."""
        return self.payload is not Payload.INSTANCES and bool(options.get("normalize", _default(self.schema, "normalize")))

    def image_bytes_per_pixel(self, options: Mapping[str, Any]) -> int:
        """Bytes per output pixel of one sample's images (:func:`image_bytes_per_pixel`)."""
        return image_bytes_per_pixel(self.payload, self.float_images(options))

    def defaults_json(self) -> dict[str, str]:
        """Parameter name → the loader's default, JSON-encoded (for Info and /pipelines)."""
        return {option.name: json.dumps(option.default) for option in served(self.schema)}


def image_bytes_per_pixel(payload: Payload, float_images: bool) -> int:
    """Bytes per output pixel of one sample's images, in the loader's output and uncompressed
    on the wire: CP² has two composed views, the other payloads one image; 3 channels of
    float32 (``float_images``, normalised) or uint8."""
    return (2 if payload is Payload.CP2 else 1) * 3 * (4 if float_images else 1)


def _cutmix_bytes(options: Mapping[str, Any]) -> int:
    """A CutMix sample's bytes per pixel: its 3 uint8 crop, its image, its 3 uint8 unmixed crop with ``return_unmixed``."""
    image = image_bytes_per_pixel(Payload.MIXED, options.get("normalize", True))
    return 3 + image + (3 if options.get("return_unmixed") else 0)


def _cp2_bytes(options: Mapping[str, Any]) -> int:
    """A CP² sample's bytes per pixel: 4 uint8 views (12), its two images, 2 uint8 masks, the views again with ``return_views``."""
    images = image_bytes_per_pixel(Payload.CP2, options.get("normalize", True))
    return 12 + images + 2 + (12 if options.get("return_views") else 0)


def _instance_kind(
    name: str,
    description: str,
    schema: tuple[Option, ...],
    build_loader: Callable[[DatasetEntry, Mapping[str, Any]], Any],
    *,
    tiles: int = 1,
    bank: bool = False,
    second_dataset: bool = False,
    nested: str | None = None,
) -> PipelineKind:
    """A family that yields :attr:`Payload.INSTANCES` batches from a COCO/LVIS json; its memory is
    :func:`_instance_memory` at the schema's default jitter, ``tiles`` images per sample, plus
    the instance bank with ``bank``."""
    memory = _instance_memory(_default(schema, "jitter"), tiles=tiles, bank=bank)
    return PipelineKind(
        name, description, schema, build_loader, Payload.INSTANCES, memory, second_dataset=second_dataset, nested=nested
    )


def _folder_kind(
    name: str,
    description: str,
    schema: tuple[Option, ...],
    build_loader: Callable[[DatasetEntry, Mapping[str, Any]], Any],
    payload: Payload,
    bytes_per_pixel: Callable[[Mapping[str, Any]], int],
    planes: str,
) -> PipelineKind:
    """A family that reads an image folder (no annotations needed), whose buffers are S×S
    planes of ``bytes_per_pixel(options)`` bytes per pixel (:func:`_folder_memory`)."""
    memory = _folder_memory(bytes_per_pixel, planes)
    return PipelineKind(name, description, schema, build_loader, payload, memory, needs_annotations=False)


COPY_PASTE = _instance_kind(
    "copy-paste",
    "Simple Copy-Paste (Ghiasi et al. 2021) with LSJ/SSJ scale jitter and flip; COCO/LVIS instance masks",
    COPY_PASTE_OPTIONS, copy_paste_loader,
)  # fmt: skip
BALANCED_COPY_PASTE = _instance_kind(
    "balanced-copy-paste",
    "Copy-Paste from a class-balanced bank of recent instances (LVIS 2021 challenge report)",
    BALANCED_COPY_PASTE_OPTIONS, balanced_copy_paste_loader, bank=True, nested="copy_paste",
)  # fmt: skip
SELF_TRAINING = _instance_kind(
    "self-training",
    "Self-training Copy-Paste: labelled images mixed with a second registered dataset (Ghiasi et al. §4.4)",
    SELF_TRAINING_OPTIONS, self_training_loader, second_dataset=True, nested="copy_paste",
)  # fmt: skip
MOSAIC = _instance_kind(
    "mosaic",
    "Balanced Mosaic: 2x2 grids of repeat-factor-drawn images (YOLOv4; LVIS 2021 report)",
    MOSAIC_OPTIONS, mosaic_loader, tiles=4,
)  # fmt: skip
CUTMIX = _folder_kind(
    "cutmix",
    "CutMix/MixUp classification batches with soft targets (timm Mixup semantics) from an image folder",
    CUTMIX_OPTIONS, cutmix_loader, Payload.MIXED, _cutmix_bytes, "crops and images",
)  # fmt: skip
CP2 = _folder_kind(
    "cp2",
    "CP² compositions: two views of a foreground pasted onto two backgrounds, with masks (Wang et al. 2022)",
    CP2_OPTIONS, cp2_loader, Payload.CP2, _cp2_bytes, "views, composed images and masks",
)  # fmt: skip

#: name → kind, what this server can stream.
PIPELINES: dict[str, PipelineKind] = {k.name: k for k in (COPY_PASTE, BALANCED_COPY_PASTE, SELF_TRAINING, MOSAIC, CUTMIX, CP2)}
