"""Request validation: a ``StreamRequest`` becomes a :class:`StreamPlan` or a
:class:`~decal.server.pipelines.RequestError` (INVALID_ARGUMENT / NOT_FOUND, the message
starting with the field name).

Everything here is pure and cheap: it runs before any dataset is read or pipeline built,
so a flood of bad requests costs the server nothing. (One check needs the dataset: a
resume cursor past the end of its epoch; the stream service makes it after loading the
dataset and before building the pipeline.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import grpc

from ..proto import decal_pb2 as pb
from .config import DATASET_NAME, DatasetEntry, ServerConfig
from .pipelines import PIPELINES, PipelineKind, RequestError, invalid, short
from .wire import WireOptions

__all__ = ["StreamPlan", "validate_request", "DEFAULT_PIPELINE", "MAX_EPOCH"]

DEFAULT_PIPELINE = "copy-paste"
MAX_EPOCH = 2**31 - 1
MAX_SEED = 2**63 - 1
_PATH_MARKS = ("/", "\\", "~", ":")


@dataclass(frozen=True)
class StreamPlan:
    """A validated request."""

    dataset: DatasetEntry
    pipeline: PipelineKind
    options: dict[str, Any]  # loader keyword options, batch/seed/shard included
    resume: pb.Position | None
    wire: WireOptions
    max_batches: int
    #: self-training: the registered dataset of the second set
    second_dataset: DatasetEntry | None = None

    def dataset_of(self, error: BaseException) -> DatasetEntry:
        """The dataset an error is about: the second set's when the error names one of its
        files (self-training), else the request's dataset."""
        file = str(getattr(error, "file", ""))
        second = self.second_dataset
        if second is not None and file:
            inside = [second.images] + ([second.annotations] if second.annotations is not None else [])
            if any(file == str(path) or file.startswith(str(path) + "/") for path in inside):
                return second
        return self.dataset

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset.name, "pipeline": self.pipeline.name, **{k: self.options[k] for k in ("batch_size", "seed", "shard_id", "num_shards")}}


def check_dataset_name(name: str, datasets: Mapping[str, DatasetEntry], field: str = "dataset") -> DatasetEntry:
    """The registered entry for ``name``, or a RequestError naming ``field``."""
    if not name:
        raise invalid(field, "required: the name of a dataset registered on the server")
    if any(mark in name for mark in _PATH_MARKS) or name.startswith("."):
        raise invalid(
            field,
            f"expected a registered dataset name, not a path ({short(name)}); clients never send paths, "
            "the server streams only the datasets in its config",
        )
    if not DATASET_NAME.fullmatch(name):
        raise invalid(field, f"{short(name)} is not a valid dataset name ({DATASET_NAME.pattern})")
    entry = datasets.get(name)
    if entry is None:
        known = ", ".join(sorted(datasets)) or "none"
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"{field}: no dataset named {short(name)} on this server (registered: {known})")
    return entry


def validate_request(request: pb.StreamRequest, config: ServerConfig) -> StreamPlan:
    """Check every field of ``request`` against ``config``; the first problem is raised."""
    limits = config.limits
    entry = check_dataset_name(request.dataset, config.datasets)

    name = request.pipeline or DEFAULT_PIPELINE
    kind = PIPELINES.get(name)
    if kind is None:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"pipeline: no pipeline named {short(name)} (available: {', '.join(sorted(PIPELINES))})",
        )
    given = request.WhichOneof("params")
    if given is not None and given != kind.params_field:
        raise invalid(given, f"parameters of another pipeline given for pipeline {name!r} (expected {kind.params_field})")

    if kind.needs_annotations and entry.annotations is None:
        raise invalid(
            "dataset",
            f"{entry.name!r} is an image folder without annotations; pipeline {name!r} needs a COCO/LVIS json dataset "
            f"(image-folder pipelines: {', '.join(k.name for k in PIPELINES.values() if not k.needs_annotations)})",
        )

    if request.batch_size < 1 or request.batch_size > limits.max_batch_size:
        raise invalid("batch_size", f"must be in [1, {limits.max_batch_size}], got {request.batch_size}")
    if request.seed < 0:
        raise invalid("seed", f"must be >= 0, got {request.seed}")
    num_shards = request.num_shards or 1
    if not 1 <= num_shards <= limits.max_shards:
        raise invalid("num_shards", f"must be in [1, {limits.max_shards}] (0 means 1), got {request.num_shards}")
    if not 0 <= request.shard_id < num_shards:
        raise invalid("shard_id", f"must be in [0, num_shards) = [0, {num_shards}), got {request.shard_id}")
    if request.max_batches < 0:
        raise invalid("max_batches", f"must be >= 0 (0 = until cancelled), got {request.max_batches}")

    resume = None
    if request.HasField("resume"):
        r = request.resume
        for field_name in ("epoch", "cursor", "batch_index"):
            value = getattr(r, field_name)
            if not 0 <= value <= MAX_EPOCH:
                raise invalid(f"resume.{field_name}", f"must be in [0, {MAX_EPOCH}], got {value}")
        if r.batch_index > r.cursor:
            raise invalid("resume.batch_index", f"{r.batch_index} batches cannot have consumed only cursor={r.cursor} entries")
        if r.cursor > 0 and r.batch_index == 0:
            raise invalid("resume.batch_index", f"is 0 but cursor is {r.cursor}: a position after k batches has batch_index k >= 1")
        resume = r

    wire = request.wire
    if wire.image_codec not in pb.ImageCodec.values():
        raise invalid("wire.image_codec", f"unknown value {wire.image_codec} (known: {', '.join(pb.ImageCodec.keys())})")
    if wire.mask_codec not in pb.MaskCodec.values():
        raise invalid("wire.mask_codec", f"unknown value {wire.mask_codec} (known: {', '.join(pb.MaskCodec.keys())})")
    if not 0 <= wire.jpeg_quality <= 100:
        raise invalid("wire.jpeg_quality", f"must be in [1, 100] (0 = default), got {wire.jpeg_quality}")
    if not 0 <= wire.zlib_level <= 9:
        raise invalid("wire.zlib_level", f"must be in [1, 9] (0 = default), got {wire.zlib_level}")

    params = getattr(request, kind.params_field)
    options = kind.to_options(params, config.defaults.get(kind.name, {}), limits)
    second = None
    if kind.second_dataset:
        second = check_dataset_name(params.second_dataset, config.datasets, f"{kind.params_field}.second_dataset")
    size = options["output_size"]
    wire_options = WireOptions.from_proto(wire)
    if wire_options.image_codec == pb.IMAGE_CODEC_JPEG and kind.float_images(options):
        raise invalid(
            "wire.image_codec",
            f"IMAGE_CODEC_JPEG carries uint8 images, and pipeline {name!r} yields float32 normalised images; "
            f"ask for IMAGE_CODEC_RAW or IMAGE_CODEC_ZLIB, or set {kind.params_field}.normalize=false",
        )
    if wire_options.image_codec != pb.IMAGE_CODEC_JPEG:
        image_bytes = request.batch_size * size * size * kind.image_bytes_per_pixel(options)
        if image_bytes > limits.max_message_bytes:
            raise invalid(
                "batch_size",
                f"{request.batch_size} images of 3x{size}x{size} are {image_bytes} bytes uncompressed, over "
                f"max_message_bytes={limits.max_message_bytes}; ask for fewer images, a smaller output_size "
                "or wire.image_codec=IMAGE_CODEC_JPEG",
            )
    options.update(
        batch_size=int(request.batch_size),
        seed=int(request.seed),
        shard_id=int(request.shard_id),
        num_shards=int(num_shards),
    )
    return StreamPlan(
        dataset=entry,
        pipeline=kind,
        options=options,
        resume=resume,
        wire=wire_options,
        max_batches=int(request.max_batches),
        second_dataset=second,
    )
