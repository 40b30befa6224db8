"""The wire format: NumPy arrays ↔ ``decal.v1.Tensor`` messages, batches ↔ ``decal.v1.Batch``.

Every tensor travels as dtype + shape + bytes (C order, little endian) under a codec:

============== ========================================================================
codec          payload
============== ========================================================================
RAW            the array's bytes
ZLIB           ``zlib.compress`` of the bytes (stdlib; zstd/lz4 are not dependencies)
BITPACK        ``np.packbits`` (big bit order) of a 0/1 array, flattened; ceil(n/8) bytes
BITPACK_ZLIB   the packed bytes, zlib-compressed
JPEG           (B, 3, H, W) uint8 only: one baseline JPEG per image in ``parts``
============== ========================================================================

Masks are the bulk of a batch (N instances × S × S bytes as uint8), so they go bit-packed
(8× smaller) and, by default, zlib-compressed (level 1: masks are mostly long runs, and level
1 gets most of the gain at the lowest CPU cost). A mask array with a value other than 0/1
cannot be bit-packed; it falls back to ZLIB (lossless either way). Images go RAW, ZLIB
(lossless; the gray padding of LSJ compresses well) or JPEG (lossy, the client's choice when
the link is the bottleneck). Boxes, labels, areas and flags are small and go RAW.

A batch message has one layout per family payload (``proto/decal.proto``, ``Batch``): the
instance families fill ``images`` + ``targets`` (a family's own per-image keys, e.g. Mosaic's
``tile``, in ``Target.extra``); CutMix fills ``images`` + ``mixed`` (soft targets, labels,
lam); CP² fills ``cp2`` (two composed views, their masks under the mask codec, the
feature-stride masks). Float32 images (CutMix, CP² normalised) go RAW or ZLIB only.

This module depends on NumPy, PIL and the generated stubs only (no torch, no gRPC).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..dali_pipes.core.batch import TARGET_FIELDS
from ..proto import decal_pb2 as pb

__all__ = [
    "WireFormatError",
    "WireOptions",
    "DecodedBatch",
    "encode_tensor",
    "decode_tensor",
    "encode_images",
    "encode_masks",
    "encode_batch",
    "encode_mixed_batch",
    "encode_cp2_batch",
    "decode_batch",
    "CP2_FIELDS",
    "CP2_MASKS",
    "position_to_proto",
    "position_from_proto",
    "IMAGE_CODECS",
    "MASK_CODECS",
]


#: gRPC method paths of decal.v1.BatchService (used by the server and the client alike).
SERVICE_NAME = "decal.v1.BatchService"
STREAM_METHOD = f"/{SERVICE_NAME}/StreamBatches"
INFO_METHOD = f"/{SERVICE_NAME}/Info"

_DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_UINT8: np.dtype(np.uint8),
    pb.DTYPE_INT16: np.dtype("<i2"),
    pb.DTYPE_INT32: np.dtype("<i4"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
    pb.DTYPE_BOOL: np.dtype(np.bool_),
}
_DTYPE_CODES: dict[np.dtype, int] = {dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype: code for code, dtype in _DTYPES.items()}

#: Client-facing names of the codecs (``RemoteLoader(image_encoding=..., mask_encoding=...)``).
IMAGE_CODECS: dict[str, int] = {"raw": pb.IMAGE_CODEC_RAW, "zlib": pb.IMAGE_CODEC_ZLIB, "jpeg": pb.IMAGE_CODEC_JPEG}
MASK_CODECS: dict[str, int] = {
    "bitpack+zlib": pb.MASK_CODEC_BITPACK_ZLIB,
    "bitpack": pb.MASK_CODEC_BITPACK,
    "raw": pb.MASK_CODEC_RAW,
}

DEFAULT_JPEG_QUALITY = 90
DEFAULT_ZLIB_LEVEL = 1


class WireFormatError(ValueError):
    """A message that does not decode: wrong dtype, shape/size mismatch, bad codec data."""


@dataclass(frozen=True)
class WireOptions:
    """How a batch is encoded (the resolved form of ``decal.v1.WireOptions``)."""

    image_codec: int = pb.IMAGE_CODEC_RAW
    mask_codec: int = pb.MASK_CODEC_BITPACK_ZLIB
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    zlib_level: int = DEFAULT_ZLIB_LEVEL

    @classmethod
    def from_proto(cls, message: pb.WireOptions) -> "WireOptions":
        """Resolve zeros to defaults (the message is assumed validated)."""
        return cls(
            image_codec=message.image_codec,
            mask_codec=message.mask_codec,
            jpeg_quality=message.jpeg_quality or DEFAULT_JPEG_QUALITY,
            zlib_level=message.zlib_level or DEFAULT_ZLIB_LEVEL,
        )

    def to_proto(self) -> pb.WireOptions:
        return pb.WireOptions(
            image_codec=self.image_codec,
            mask_codec=self.mask_codec,
            jpeg_quality=self.jpeg_quality,
            zlib_level=self.zlib_level,
        )


# ------------------------------------------------------------------------------ tensors


def _dtype_code(array: np.ndarray) -> int:
    dtype = array.dtype
    key = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    try:
        return _DTYPE_CODES[key]
    except KeyError:
        raise WireFormatError(f"dtype {dtype} has no wire code (supported: {sorted(str(d) for d in _DTYPES.values())})") from None


def _le_bytes(array: np.ndarray) -> bytes:
    if array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def encode_tensor(array: Any, codec: int = pb.CODEC_RAW, *, zlib_level: int = DEFAULT_ZLIB_LEVEL) -> pb.Tensor:
    """Encode ``array`` with one of RAW, ZLIB, BITPACK, BITPACK_ZLIB.

    BITPACK codecs need every value in {0, 1}; otherwise the array is sent ZLIB instead
    (still lossless). JPEG is for images: see :func:`encode_images`.
    """
    array = np.asarray(array)
    message = pb.Tensor(dtype=_dtype_code(array), shape=list(array.shape))
    if codec in (pb.CODEC_BITPACK, pb.CODEC_BITPACK_ZLIB):
        if array.size and (array.dtype == np.bool_ or (array.min() >= 0 and array.max() <= 1)):
            payload = np.packbits(array.reshape(-1).astype(bool, copy=False)).tobytes()
        elif array.size == 0:
            payload = b""
        else:
            codec, payload = pb.CODEC_ZLIB, _le_bytes(array)
    elif codec in (pb.CODEC_RAW, pb.CODEC_ZLIB):
        payload = _le_bytes(array)
    else:
        raise WireFormatError(f"encode_tensor: codec {pb.Codec.Name(codec) if codec in pb.Codec.values() else codec} is not a tensor codec")
    if codec in (pb.CODEC_ZLIB, pb.CODEC_BITPACK_ZLIB):
        payload = zlib.compress(payload, zlib_level)
    message.codec = codec
    message.data = payload
    return message


def decode_tensor(message: pb.Tensor) -> np.ndarray:
    """The array a :func:`encode_tensor` / :func:`encode_images` message holds (writable)."""
    if message.dtype not in _DTYPES:
        raise WireFormatError(f"tensor: unknown dtype code {message.dtype}")
    dtype = _DTYPES[message.dtype]
    shape = tuple(int(s) for s in message.shape)
    if any(s < 0 for s in shape):
        raise WireFormatError(f"tensor: negative dimension in shape {shape}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    codec = message.codec
    if codec == pb.CODEC_JPEG:
        return _decode_jpeg(message, shape, dtype)
    data = message.data
    try:
        if codec in (pb.CODEC_ZLIB, pb.CODEC_BITPACK_ZLIB):
            data = zlib.decompress(data)
    except zlib.error as error:
        raise WireFormatError(f"tensor: corrupt zlib payload ({error})") from error
    if codec in (pb.CODEC_BITPACK, pb.CODEC_BITPACK_ZLIB):
        if len(data) != (count + 7) // 8:
            raise WireFormatError(f"tensor: {len(data)} packed bytes for {count} values of shape {shape}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count)
        return bits.astype(dtype, copy=False).reshape(shape)
    if codec not in (pb.CODEC_RAW, pb.CODEC_ZLIB):
        raise WireFormatError(f"tensor: unknown codec {codec}")
    if len(data) != count * dtype.itemsize:
        raise WireFormatError(f"tensor: {len(data)} bytes for shape {shape} of {dtype} ({count * dtype.itemsize} expected)")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(array.dtype.newbyteorder("="), copy=True)


# ------------------------------------------------------------------------------ images / masks


def encode_images(images: Any, codec: int = pb.IMAGE_CODEC_RAW, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY, zlib_level: int = DEFAULT_ZLIB_LEVEL) -> pb.Tensor:
    """(B, 3, H, W) uint8 → Tensor: RAW, ZLIB, or one JPEG per image (PIL, 4:2:0)."""
    images = np.asarray(images)
    if codec == pb.IMAGE_CODEC_RAW:
        return encode_tensor(images, pb.CODEC_RAW)
    if codec == pb.IMAGE_CODEC_ZLIB:
        return encode_tensor(images, pb.CODEC_ZLIB, zlib_level=zlib_level)
    if codec != pb.IMAGE_CODEC_JPEG:
        raise WireFormatError(f"encode_images: unknown image codec {codec}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise WireFormatError(f"encode_images: JPEG needs (B, 3, H, W) uint8, got {images.shape} {images.dtype}")
    from PIL import Image

    parts = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(buffer, format="JPEG", quality=int(jpeg_quality))
        parts.append(buffer.getvalue())
    return pb.Tensor(dtype=pb.DTYPE_UINT8, shape=list(images.shape), codec=pb.CODEC_JPEG, parts=parts)


def _decode_jpeg(message: pb.Tensor, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    from PIL import Image

    if dtype != np.uint8 or len(shape) != 4 or shape[1] != 3 or len(message.parts) != shape[0]:
        raise WireFormatError(f"tensor: JPEG payload of {len(message.parts)} parts for shape {shape} {dtype}")
    out = np.empty(shape, dtype=np.uint8)
    for i, part in enumerate(message.parts):
        try:
            with Image.open(io.BytesIO(part)) as picture:
                pixels = np.asarray(picture.convert("RGB"))
        except Exception as error:  # PIL raises several types for corrupt data
            raise WireFormatError(f"tensor: JPEG part {i} does not decode ({error})") from error
        if pixels.shape != (shape[2], shape[3], 3):
            raise WireFormatError(f"tensor: JPEG part {i} is {pixels.shape[:2]}, expected {shape[2:]}")
        out[i] = pixels.transpose(2, 0, 1)
    return out


def encode_masks(masks: Any, codec: int = pb.MASK_CODEC_BITPACK_ZLIB, *, zlib_level: int = DEFAULT_ZLIB_LEVEL) -> pb.Tensor:
    """(N, H, W) uint8 0/1 masks → Tensor under a MaskCodec."""
    tensor_codec = {
        pb.MASK_CODEC_BITPACK_ZLIB: pb.CODEC_BITPACK_ZLIB,
        pb.MASK_CODEC_BITPACK: pb.CODEC_BITPACK,
        pb.MASK_CODEC_RAW: pb.CODEC_RAW,
    }.get(codec)
    if tensor_codec is None:
        raise WireFormatError(f"encode_masks: unknown mask codec {codec}")
    return encode_tensor(masks, tensor_codec, zlib_level=zlib_level)


# ------------------------------------------------------------------------------ positions


def position_to_proto(position: Any) -> pb.Position:
    """A LoaderPosition (or a dict with epoch/cursor/batch_index) → Position."""
    if isinstance(position, Mapping):
        return pb.Position(epoch=int(position["epoch"]), cursor=int(position["cursor"]), batch_index=int(position["batch_index"]))
    return pb.Position(epoch=int(position.epoch), cursor=int(position.cursor), batch_index=int(position.batch_index))


def position_from_proto(message: pb.Position):
    """Position → :class:`~decal.dali_pipes.copy_paste.source.LoaderPosition`."""
    from ..dali_pipes.copy_paste.source import LoaderPosition

    return LoaderPosition(int(message.epoch), int(message.cursor), int(message.batch_index))


# ------------------------------------------------------------------------------ batches


#: CP²'s per-batch tensors (``CP2Views`` fields = ``CP2Batch`` attributes), and those of
#: them that are 0/1 masks (sent under the mask codec).
CP2_FIELDS = ("image_q", "image_k", "mask_q", "mask_k", "mask_q_feat", "mask_k_feat")
CP2_MASKS = ("mask_q", "mask_k", "mask_q_feat", "mask_k_feat")
#: CutMix's per-batch tensors besides the images (``MixedTargets`` fields).
MIXED_FIELDS = ("targets", "labels", "lam")


@dataclass
class DecodedBatch:
    """A batch as NumPy arrays: what :func:`decode_batch` returns.

    Instance families: ``images`` and ``targets``, dicts with ``boxes``, ``labels``,
    ``masks``, ``area``, ``iscrowd``, ``pasted`` arrays, the family's extra keys, and
    ``image_id`` an int. CutMix: ``images`` and ``mixed`` (``targets``, ``labels``, ``lam``,
    optionally ``unmixed``). CP²: ``cp2`` (:data:`CP2_FIELDS`) and ``views`` (empty unless
    asked for). ``position`` is a Position message.
    """

    images: np.ndarray | None
    targets: list[dict[str, Any]]
    position: pb.Position
    nbytes: int = 0
    part_bytes: dict[str, int] = field(default_factory=dict)
    mixed: dict[str, np.ndarray] | None = None
    cp2: dict[str, np.ndarray] | None = None
    views: dict[str, np.ndarray] = field(default_factory=dict)


def encode_batch(
    images: Any,
    targets: Sequence[Mapping[str, Any]],
    position: Any,
    options: WireOptions = WireOptions(),
) -> pb.Batch:
    """Encode one instance batch given as NumPy arrays (``images`` (B, 3, S, S) uint8;
    ``targets`` B dicts with the :data:`TARGET_FIELDS` arrays, ``image_id`` and any extra
    per-image arrays of the family, sent RAW in ``Target.extra``) and its position."""
    images = np.asarray(images)
    if images.ndim != 4 or len(targets) != images.shape[0]:
        raise WireFormatError(f"encode_batch: images {images.shape} with {len(targets)} targets")
    message = pb.Batch(
        position=position_to_proto(position),
        images=encode_images(images, options.image_codec, jpeg_quality=options.jpeg_quality, zlib_level=options.zlib_level),
    )
    for target in targets:
        entry = message.targets.add(image_id=int(np.asarray(target["image_id"]).reshape(())))
        for name in TARGET_FIELDS:
            value = target[name]
            if name == "masks":
                encoded = encode_masks(value, options.mask_codec, zlib_level=options.zlib_level)
            else:
                encoded = encode_tensor(value, pb.CODEC_RAW)
            getattr(entry, name).CopyFrom(encoded)
        for name in sorted(set(target) - set(TARGET_FIELDS) - {"image_id"}):
            entry.extra[name].CopyFrom(encode_tensor(target[name], pb.CODEC_RAW))
    return message


def encode_mixed_batch(
    images: Any, mixed: Mapping[str, Any], position: Any, options: WireOptions = WireOptions()
) -> pb.Batch:
    """Encode one CutMix batch: ``images`` (B, 3, S, S) float32 or uint8, ``mixed`` with
    ``targets`` (B, C) float32, ``labels`` (B,) int64, ``lam`` (B,) float32 and optionally
    ``unmixed`` (B, S, S, 3) uint8 (None = not asked for)."""
    images = np.asarray(images)
    if images.ndim != 4 or np.asarray(mixed["targets"]).shape[:1] != images.shape[:1]:
        raise WireFormatError(f"encode_mixed_batch: images {images.shape} with targets {np.asarray(mixed['targets']).shape}")
    message = pb.Batch(
        position=position_to_proto(position),
        images=encode_images(images, options.image_codec, jpeg_quality=options.jpeg_quality, zlib_level=options.zlib_level),
    )
    for name in MIXED_FIELDS:
        getattr(message.mixed, name).CopyFrom(encode_tensor(mixed[name], pb.CODEC_RAW))
    if mixed.get("unmixed") is not None:
        message.mixed.unmixed.CopyFrom(encode_tensor(mixed["unmixed"], _lossless_image_codec(options), zlib_level=options.zlib_level))
    return message


def encode_cp2_batch(
    fields: Mapping[str, Any], views: Mapping[str, Any] | None, position: Any, options: WireOptions = WireOptions()
) -> pb.Batch:
    """Encode one CP² batch: ``fields`` the :data:`CP2_FIELDS` arrays (images (B, 3, S, S),
    masks (B, S, S) and (B, S', S') uint8 0/1), ``views`` the ``return_views`` arrays or None."""
    message = pb.Batch(position=position_to_proto(position))
    for name in CP2_FIELDS:
        value = fields[name]
        if name in CP2_MASKS:
            encoded = encode_masks(value, options.mask_codec, zlib_level=options.zlib_level)
        else:
            encoded = encode_images(value, options.image_codec, jpeg_quality=options.jpeg_quality, zlib_level=options.zlib_level)
        getattr(message.cp2, name).CopyFrom(encoded)
    for name, value in (views or {}).items():
        message.cp2.views[name].CopyFrom(encode_tensor(value, _lossless_image_codec(options), zlib_level=options.zlib_level))
    return message


def _lossless_image_codec(options: WireOptions) -> int:
    """The tensor codec of side images (unmixed crops, CP² views): ZLIB when the images go
    ZLIB, else RAW (they are HWC, which the JPEG codec does not take)."""
    return pb.CODEC_ZLIB if options.image_codec == pb.IMAGE_CODEC_ZLIB else pb.CODEC_RAW


def batch_part_bytes(message: pb.Batch) -> dict[str, int]:
    """Serialized bytes of the images, the masks and everything else in a Batch message."""
    images = message.images.ByteSize() + message.cp2.image_q.ByteSize() + message.cp2.image_k.ByteSize()
    masks = sum(t.masks.ByteSize() for t in message.targets) + sum(getattr(message.cp2, name).ByteSize() for name in CP2_MASKS)
    total = message.ByteSize()
    return {"images": images, "masks": masks, "other": total - images - masks, "total": total}


def decode_batch(message: pb.Batch) -> DecodedBatch:
    """Decode a Batch message (any family's layout), checking that the parts fit together."""
    if message.HasField("cp2"):
        return _decode_cp2(message)
    if message.HasField("mixed"):
        return _decode_mixed(message)
    images = decode_tensor(message.images)
    if images.ndim != 4 or images.shape[0] != len(message.targets):
        raise WireFormatError(f"batch: images of shape {images.shape} with {len(message.targets)} targets")
    targets = []
    for i, entry in enumerate(message.targets):
        target: dict[str, Any] = {}
        for name in TARGET_FIELDS:
            if not entry.HasField(name):
                raise WireFormatError(f"batch: target {i} has no field '{name}'")
            target[name] = decode_tensor(getattr(entry, name))
        count = target["labels"].shape[0]
        if target["masks"].shape[0] != count or target["boxes"].shape != (count, 4):
            raise WireFormatError(
                f"batch: target {i} has {count} labels, masks {target['masks'].shape}, boxes {target['boxes'].shape}"
            )
        for name, tensor in entry.extra.items():
            target[name] = decode_tensor(tensor)
        target["image_id"] = int(entry.image_id)
        targets.append(target)
    return DecodedBatch(images=images, targets=targets, position=message.position, nbytes=message.ByteSize())


def _required(message: Any, name: str, where: str) -> np.ndarray:
    if not message.HasField(name):
        raise WireFormatError(f"batch: {where} has no field '{name}'")
    return decode_tensor(getattr(message, name))


def _decode_mixed(message: pb.Batch) -> DecodedBatch:
    images = _required(message, "images", "batch")
    mixed = {name: _required(message.mixed, name, "mixed") for name in MIXED_FIELDS}
    if message.mixed.HasField("unmixed"):
        mixed["unmixed"] = decode_tensor(message.mixed.unmixed)
    count = images.shape[0] if images.ndim == 4 else -1
    if count < 0 or any(mixed[name].shape[:1] != (count,) for name in MIXED_FIELDS):
        raise WireFormatError(f"batch: images {images.shape} with mixed {', '.join(f'{k} {v.shape}' for k, v in mixed.items())}")
    return DecodedBatch(images=images, targets=[], position=message.position, nbytes=message.ByteSize(), mixed=mixed)


def _decode_cp2(message: pb.Batch) -> DecodedBatch:
    fields = {name: _required(message.cp2, name, "cp2") for name in CP2_FIELDS}
    count = fields["image_q"].shape[0] if fields["image_q"].ndim == 4 else -1
    if count < 0 or any(value.shape[:1] != (count,) for value in fields.values()):
        raise WireFormatError(f"batch: cp2 parts of {', '.join(f'{k} {v.shape}' for k, v in fields.items())}")
    views = {name: decode_tensor(tensor) for name, tensor in message.cp2.views.items()}
    return DecodedBatch(images=None, targets=[], position=message.position, nbytes=message.ByteSize(), cp2=fields, views=views)
