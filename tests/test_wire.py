"""The wire format: lossless codecs round-trip exactly, JPEG approximately, corrupt data is
refused with WireFormatError."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from decal.proto import decal_pb2 as pb
from decal.server import wire

DTYPES = [np.uint8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("codec", [pb.CODEC_RAW, pb.CODEC_ZLIB])
def test_tensor_round_trip(dtype, codec) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((3, 5, 2)) * 100).astype(dtype)
    out = wire.decode_tensor(wire.encode_tensor(array, codec))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    out[...] = 0  # decoded arrays are writable (torch.from_numpy needs that)


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    message = wire.encode_tensor(array)
    assert message.data == np.arange(6, dtype="<i4").tobytes()
    np.testing.assert_array_equal(wire.decode_tensor(message), array)


@settings(max_examples=60, deadline=None)
@given(
    masks=hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=17),
        elements=st.integers(0, 1),
    ),
    codec=st.sampled_from([pb.MASK_CODEC_BITPACK_ZLIB, pb.MASK_CODEC_BITPACK, pb.MASK_CODEC_RAW]),
)
def test_masks_round_trip_exactly(masks: np.ndarray, codec: int) -> None:
    out = wire.decode_tensor(wire.encode_masks(masks, codec))
    assert out.dtype == np.uint8 and out.shape == masks.shape
    np.testing.assert_array_equal(out, masks)


def test_bitpack_is_eight_times_smaller_and_zlib_smaller_still() -> None:
    masks = np.zeros((10, 128, 128), np.uint8)
    masks[:, 20:70, 30:90] = 1
    raw = wire.encode_masks(masks, pb.MASK_CODEC_RAW)
    packed = wire.encode_masks(masks, pb.MASK_CODEC_BITPACK)
    packed_zlib = wire.encode_masks(masks, pb.MASK_CODEC_BITPACK_ZLIB)
    assert len(raw.data) == masks.size
    assert len(packed.data) == masks.size // 8
    assert len(packed_zlib.data) < len(packed.data) // 4


def test_non_binary_masks_fall_back_to_lossless_zlib() -> None:
    masks = np.array([[[0, 2], [1, 255]]], np.uint8)
    message = wire.encode_masks(masks, pb.MASK_CODEC_BITPACK)
    assert message.codec == pb.CODEC_ZLIB
    np.testing.assert_array_equal(wire.decode_tensor(message), masks)


def _images(batch=2, size=48) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 4, y * 4, (x + y) * 2]).astype(np.uint8)  # smooth content
    return np.stack([np.roll(base, i * 5, axis=2) for i in range(batch)])


@pytest.mark.parametrize("codec", [pb.IMAGE_CODEC_RAW, pb.IMAGE_CODEC_ZLIB])
def test_lossless_images(codec) -> None:
    images = _images()
    np.testing.assert_array_equal(wire.decode_tensor(wire.encode_images(images, codec)), images)


def test_jpeg_images_are_close_and_smaller() -> None:
    images = _images(3, 64)
    message = wire.encode_images(images, pb.IMAGE_CODEC_JPEG, jpeg_quality=90)
    assert message.codec == pb.CODEC_JPEG and len(message.parts) == 3
    assert sum(len(p) for p in message.parts) < images.nbytes / 3
    out = wire.decode_tensor(message)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - images).mean() < 4


def _batch_arrays(rng: np.random.Generator, batch=2, size=32):
    images = rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
    targets = []
    for b in range(batch):
        n = int(rng.integers(0, 4))
        targets.append(
            {
                "boxes": rng.random((n, 4), dtype=np.float32) * size,
                "labels": rng.integers(1, 90, n).astype(np.int64),
                "masks": (rng.random((n, size, size)) > 0.7).astype(np.uint8),
                "area": rng.integers(0, 500, n).astype(np.int64),
                "iscrowd": rng.integers(0, 2, n).astype(np.uint8),
                "pasted": rng.integers(0, 2, n).astype(np.uint8),
                "image_id": 100 + b,
            }
        )
    return images, targets


@pytest.mark.parametrize("image_codec", [pb.IMAGE_CODEC_RAW, pb.IMAGE_CODEC_ZLIB])
@pytest.mark.parametrize("mask_codec", [pb.MASK_CODEC_BITPACK_ZLIB, pb.MASK_CODEC_BITPACK, pb.MASK_CODEC_RAW])
def test_batch_round_trip(image_codec, mask_codec) -> None:
    images, targets = _batch_arrays(np.random.default_rng(3))
    options = wire.WireOptions(image_codec=image_codec, mask_codec=mask_codec)
    message = wire.encode_batch(images, targets, {"epoch": 2, "cursor": 7, "batch_index": 4}, options)
    decoded = wire.decode_batch(pb.Batch.FromString(message.SerializeToString()))
    np.testing.assert_array_equal(decoded.images, images)
    assert (decoded.position.epoch, decoded.position.cursor, decoded.position.batch_index) == (2, 7, 4)
    for got, want in zip(decoded.targets, targets):
        assert got["image_id"] == want["image_id"]
        for key in wire.TARGET_FIELDS:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key])
    parts = wire.batch_part_bytes(message)
    assert parts["total"] == message.ByteSize() == parts["images"] + parts["masks"] + parts["other"]


def test_corrupt_messages_are_refused() -> None:
    good = wire.encode_tensor(np.arange(10, dtype=np.int32))
    short = pb.Tensor()
    short.CopyFrom(good)
    short.data = good.data[:-1]
    with pytest.raises(wire.WireFormatError, match="bytes for shape"):
        wire.decode_tensor(short)
    bad_zlib = pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[4], codec=pb.CODEC_ZLIB, data=b"not zlib")
    with pytest.raises(wire.WireFormatError, match="zlib"):
        wire.decode_tensor(bad_zlib)
    packed = pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[100], codec=pb.CODEC_BITPACK_ZLIB, data=zlib.compress(b"\x00" * 3))
    with pytest.raises(wire.WireFormatError, match="packed bytes"):
        wire.decode_tensor(packed)
    with pytest.raises(wire.WireFormatError, match="dtype"):
        wire.decode_tensor(pb.Tensor(dtype=99, shape=[1], data=b"\x00"))
    jpeg = pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[1, 3, 8, 8], codec=pb.CODEC_JPEG, parts=[b"garbage"])
    with pytest.raises(wire.WireFormatError, match="JPEG"):
        wire.decode_tensor(jpeg)
    with pytest.raises(wire.WireFormatError, match="targets"):
        wire.decode_batch(pb.Batch(images=wire.encode_tensor(np.zeros((2, 3, 4, 4), np.uint8))))


def test_unsupported_dtype_is_named() -> None:
    with pytest.raises(wire.WireFormatError, match="complex"):
        wire.encode_tensor(np.zeros(2, np.complex64))


def test_instance_targets_carry_a_familys_extra_keys() -> None:
    """Mosaic's ``tile``/``tiles``/``tile_image_ids`` and self-training's ``domain`` travel in
    ``Target.extra`` and come back with their dtype and shape (a 0-d ``domain`` too)."""
    images, targets = _batch_arrays(np.random.default_rng(4), batch=2)
    for i, target in enumerate(targets):
        n = target["labels"].shape[0]
        target["tile"] = np.arange(n, dtype=np.int64)
        target["tiles"] = np.full((4, 4), i, dtype=np.int32)
        target["domain"] = np.array(i, dtype=np.uint8)
    decoded = wire.decode_batch(pb.Batch.FromString(wire.encode_batch(images, targets, {"epoch": 0, "cursor": 2, "batch_index": 1}).SerializeToString()))
    for got, want in zip(decoded.targets, targets):
        assert set(got) == set(want)
        for key in ("tile", "tiles", "domain"):
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("image_codec", [pb.IMAGE_CODEC_RAW, pb.IMAGE_CODEC_ZLIB])
def test_mixed_batch_round_trip(image_codec) -> None:
    rng = np.random.default_rng(5)
    images = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    mixed = {
        "targets": rng.random((3, 5)).astype(np.float32),
        "labels": np.array([0, 4, 2], np.int64),
        "lam": np.array([1.0, 0.25, 0.5], np.float32),
        "unmixed": rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8),
    }
    options = wire.WireOptions(image_codec=image_codec)
    message = wire.encode_mixed_batch(images, mixed, {"epoch": 1, "cursor": 3, "batch_index": 1}, options)
    decoded = wire.decode_batch(pb.Batch.FromString(message.SerializeToString()))
    assert decoded.cp2 is None and decoded.targets == []
    np.testing.assert_array_equal(decoded.images, images)
    assert decoded.images.dtype == np.float32
    for key, value in mixed.items():
        assert decoded.mixed[key].dtype == value.dtype, key
        np.testing.assert_array_equal(decoded.mixed[key], value)
    without = wire.encode_mixed_batch(images, {**mixed, "unmixed": None}, {"epoch": 1, "cursor": 3, "batch_index": 1})
    assert "unmixed" not in wire.decode_batch(without).mixed


@pytest.mark.parametrize("mask_codec", [pb.MASK_CODEC_BITPACK_ZLIB, pb.MASK_CODEC_RAW])
def test_cp2_batch_round_trip(mask_codec) -> None:
    rng = np.random.default_rng(6)
    fields = {
        "image_q": rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
        "image_k": rng.standard_normal((2, 3, 16, 16)).astype(np.float32),
        "mask_q": (rng.random((2, 16, 16)) > 0.4).astype(np.uint8),
        "mask_k": (rng.random((2, 16, 16)) > 0.4).astype(np.uint8),
        "mask_q_feat": (rng.random((2, 2, 2)) > 0.4).astype(np.uint8),
        "mask_k_feat": (rng.random((2, 2, 2)) > 0.4).astype(np.uint8),
    }
    views = {name: rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8) for name in ("fg_q", "fg_k", "bg_q", "bg_k")}
    message = wire.encode_cp2_batch(fields, views, {"epoch": 0, "cursor": 2, "batch_index": 1}, wire.WireOptions(mask_codec=mask_codec))
    decoded = wire.decode_batch(pb.Batch.FromString(message.SerializeToString()))
    assert decoded.images is None and decoded.mixed is None
    for key, value in fields.items():
        assert decoded.cp2[key].dtype == value.dtype, key
        np.testing.assert_array_equal(decoded.cp2[key], value)
    assert set(decoded.views) == set(views)
    for key, value in views.items():
        np.testing.assert_array_equal(decoded.views[key], value)
    parts = wire.batch_part_bytes(message)
    assert parts["images"] > 0 and parts["masks"] > 0 and parts["total"] == message.ByteSize()


def test_a_familys_batch_with_missing_or_mismatched_parts_is_refused() -> None:
    images = np.zeros((2, 3, 4, 4), np.float32)
    mixed = {"targets": np.zeros((2, 3), np.float32), "labels": np.zeros(2, np.int64), "lam": np.ones(2, np.float32)}
    message = wire.encode_mixed_batch(images, mixed, {"epoch": 0, "cursor": 2, "batch_index": 1})
    message.mixed.ClearField("lam")
    with pytest.raises(wire.WireFormatError, match="mixed has no field 'lam'"):
        wire.decode_batch(message)
    message.mixed.lam.CopyFrom(wire.encode_tensor(np.ones(3, np.float32)))
    with pytest.raises(wire.WireFormatError, match="lam"):
        wire.decode_batch(message)
    cp2 = wire.encode_cp2_batch(
        {name: np.zeros((2, 3, 4, 4) if name.startswith("image") else (2, 4, 4), np.uint8) for name in wire.CP2_FIELDS},
        None, {"epoch": 0, "cursor": 2, "batch_index": 1},
    )  # fmt: skip
    cp2.cp2.mask_k.CopyFrom(wire.encode_masks(np.zeros((3, 4, 4), np.uint8)))
    with pytest.raises(wire.WireFormatError, match="mask_k"):
        wire.decode_batch(cp2)
    with pytest.raises(wire.WireFormatError, match="JPEG needs"):
        wire.encode_mixed_batch(images, mixed, {"epoch": 0, "cursor": 2, "batch_index": 1}, wire.WireOptions(image_codec=pb.IMAGE_CODEC_JPEG))
