"""Bad requests get the right gRPC status with a message naming the field, and the server
keeps serving: named cases against the real loader, a hypothesis fuzz over every proto field
against a server with a fake (DALI-free) loader, auth, the stream limit, message size."""

from __future__ import annotations

import math
import threading

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from decal.proto import decal_pb2 as pb
from decal.server.config import Limits
from decal.server.pipelines import PIPELINES, RequestError
from decal.server.validation import validate_request

from coco_factory import write_coco_dataset
from polling import wait_until
from server_helpers import FakeLoader, first_status, info, make_config, open_stream, request, running_server

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=6, seed=2)


def _set(message, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        message = getattr(message, name)
    setattr(message, leaf, value)


BAD_REQUESTS = [
    # (field overrides, expected code, field named in the message)
    ({"dataset": "nope"}, NOT_FOUND, "dataset"),
    ({"dataset": ""}, INVALID, "dataset"),
    ({"dataset": "/etc/passwd"}, INVALID, "dataset"),
    ({"dataset": "../synth"}, INVALID, "dataset"),
    ({"dataset": "synth/../../x"}, INVALID, "dataset"),
    ({"dataset": "C:\\data\\coco"}, INVALID, "dataset"),
    ({"dataset": "~/coco"}, INVALID, "dataset"),
    ({"dataset": "a b"}, INVALID, "dataset"),
    ({"pipeline": "mosaic-9000"}, NOT_FOUND, "pipeline"),
    ({"batch_size": -1}, INVALID, "batch_size"),
    ({"batch_size": 0}, INVALID, "batch_size"),
    ({"batch_size": 10**9}, INVALID, "batch_size"),
    ({"batch_size": 2**63 - 1}, INVALID, "batch_size"),
    ({"seed": -5}, INVALID, "seed"),
    ({"shard_id": 4, "num_shards": 4}, INVALID, "shard_id"),
    ({"shard_id": -1, "num_shards": 2}, INVALID, "shard_id"),
    ({"num_shards": -2}, INVALID, "num_shards"),
    ({"num_shards": 10**9}, INVALID, "num_shards"),
    ({"resume.epoch": -1}, INVALID, "resume.epoch"),
    ({"resume.cursor": -3}, INVALID, "resume.cursor"),
    ({"resume.epoch": 2**40}, INVALID, "resume.epoch"),
    ({"resume.cursor": 2, "resume.batch_index": 5}, INVALID, "resume.batch_index"),
    ({"resume.cursor": 3, "resume.batch_index": 0}, INVALID, "resume.batch_index"),
    ({"resume.cursor": 500, "resume.batch_index": 1}, INVALID, "resume.cursor"),  # past the epoch: needs the dataset
    ({"max_batches": -1}, INVALID, "max_batches"),
    ({"wire.image_codec": 42}, INVALID, "wire.image_codec"),
    ({"wire.mask_codec": -1}, INVALID, "wire.mask_codec"),
    ({"wire.jpeg_quality": 101}, INVALID, "wire.jpeg_quality"),
    ({"wire.zlib_level": 10}, INVALID, "wire.zlib_level"),
    ({"copy_paste.output_size": 10**6}, INVALID, "copy_paste.output_size"),
    ({"copy_paste.output_size": 0}, INVALID, "copy_paste.output_size"),
    ({"copy_paste.jitter_preset": "huge"}, INVALID, "copy_paste.jitter_preset"),
    ({"copy_paste.jitter_range.min_scale": 2.0, "copy_paste.jitter_range.max_scale": 1.0}, INVALID, "copy_paste.jitter_range"),
    ({"copy_paste.jitter_range.min_scale": 0.0, "copy_paste.jitter_range.max_scale": 1.0}, INVALID, "copy_paste.jitter_range.min_scale"),
    ({"copy_paste.flip_prob": float("nan")}, INVALID, "copy_paste.flip_prob"),
    ({"copy_paste.flip_prob": 1.5}, INVALID, "copy_paste.flip_prob"),
    ({"copy_paste.pad_value": 256}, INVALID, "copy_paste.pad_value"),
    ({"copy_paste.max_num_pasted": -1}, INVALID, "copy_paste.max_num_pasted"),
    ({"copy_paste.blend_sigma": float("inf")}, INVALID, "copy_paste.blend_sigma"),
    ({"copy_paste.repeat_factor_threshold": 0.0}, INVALID, "copy_paste.repeat_factor_threshold"),
    ({"copy_paste.on_error": "ignore"}, INVALID, "copy_paste.on_error"),
]


@pytest.mark.parametrize("overrides,code,field", BAD_REQUESTS, ids=[f"{f}-{i}" for i, (_, _, f) in enumerate(BAD_REQUESTS)])
def test_bad_request_is_rejected_naming_the_field(server, overrides, code, field) -> None:
    message = request("synth")
    for path, value in overrides.items():
        _set(message, path, value)
    got, details = first_status(server.grpc_address, message)
    assert got == code, details
    assert details.startswith(field + ":"), details


def test_server_still_serves_after_bad_requests(server) -> None:
    for overrides, _, _ in BAD_REQUESTS[:5]:
        message = request("synth")
        for path, value in overrides.items():
            _set(message, path, value)
        first_status(server.grpc_address, message)
    assert info(server.grpc_address).datasets[0].name == "synth"
    call = open_stream(server.grpc_address, request("synth", max_batches=1))
    kinds = [r.WhichOneof("kind") for r in call]
    assert kinds == ["header", "batch"]
    assert call.code() == grpc.StatusCode.OK
    assert wait_until(lambda: len(server.streams) == 0)


def test_path_datasets_never_touch_the_filesystem(server, synth, monkeypatch) -> None:
    built = []
    monkeypatch.setattr(server.servicer, "build_loader", lambda plan: built.append(plan))
    for name in (str(synth[0]), str(synth[0].parent), "synth/annotations.json"):
        code, details = first_status(server.grpc_address, request(name))
        assert code == INVALID and "not a path" in details
    assert built == []


def test_rejections_are_counted(server) -> None:
    before = server.metrics.streams_rejected.labels(code="NOT_FOUND")._value.get()
    first_status(server.grpc_address, request("missing"))
    assert server.metrics.streams_rejected.labels(code="NOT_FOUND")._value.get() == before + 1


# ----------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def token_server(synth):
    with running_server(make_config({"synth": synth}, token="s3cret-token"), loader_factory=FakeLoader) as s:
        yield s


@pytest.mark.parametrize(
    "metadata,expected",
    [
        ((), "missing"),
        ((("authorization", "Bearer wrong"),), "invalid token"),
        ((("authorization", "s3cret-token"),), "expected 'Bearer"),
        ((("authorization", "Basic s3cret-token"),), "expected 'Bearer"),
    ],
)
def test_missing_or_wrong_token_is_unauthenticated(token_server, metadata, expected) -> None:
    code, details = first_status(token_server.grpc_address, request("synth"), metadata=metadata)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert expected in details
    with pytest.raises(grpc.RpcError) as error:
        info(token_server.grpc_address, metadata=metadata)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_streams_and_health_stays_open(token_server) -> None:
    metadata = (("authorization", "Bearer s3cret-token"),)
    assert first_status(token_server.grpc_address, request("synth"), metadata=metadata)[0] == grpc.StatusCode.OK
    assert info(token_server.grpc_address, metadata=metadata).auth_required
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(token_server.grpc_address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="decal.v1.BatchService"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ----------------------------------------------------------------------------- limits


def test_stream_limit_is_resource_exhausted_then_frees(synth) -> None:
    config = make_config({"synth": synth}, limits=Limits(max_streams=2, max_batch_size=16))
    with running_server(config, loader_factory=FakeLoader) as server:
        held = [open_stream(server.grpc_address, request("synth")) for _ in range(2)]
        for call in held:
            assert next(call).WhichOneof("kind") == "header"
        code, details = first_status(server.grpc_address, request("synth"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("max_streams:") and "2" in details
        held[0].cancel()
        assert wait_until(lambda: len(server.streams) == 1)
        assert first_status(server.grpc_address, request("synth"))[0] == grpc.StatusCode.OK
        held[1].cancel()
        assert wait_until(lambda: len(server.streams) == 0)


def test_raw_batch_over_the_message_limit_is_refused_up_front(synth) -> None:
    config = make_config({"synth": synth}, limits=Limits(max_batch_size=16, max_message_bytes=100_000))
    with running_server(config) as server:
        code, details = first_status(server.grpc_address, request("synth", batch_size=4, copy_paste={"output_size": 128}))
        assert code == INVALID and details.startswith("batch_size:") and "max_message_bytes" in details


def test_raw_size_check_counts_each_family_s_image_planes(tmp_path) -> None:
    """The up-front size check (validation, no server) counts CP²'s two composed views and
    float32 images: 2 samples of 64×64 are 24,576 bytes as one uint8 image each, 49,152 as CP²'s
    two uint8 views, 98,304 as CutMix's normalised float32 image."""
    config = make_config({"folder": (None, tmp_path)}, limits=Limits(max_batch_size=16, max_message_bytes=30_000))

    def folder_request(pipeline: str, normalize: bool) -> pb.StreamRequest:
        message = pb.StreamRequest(dataset="folder", pipeline=pipeline, batch_size=2)
        params = getattr(message, PIPELINES[pipeline].params_field)
        params.output_size, params.normalize = 64, normalize
        return message

    assert validate_request(folder_request("cutmix", False), config).options["output_size"] == 64
    for pipeline, normalize, size in (("cp2", False, 49_152), ("cutmix", True, 98_304)):
        with pytest.raises(RequestError) as error:
            validate_request(folder_request(pipeline, normalize), config)
        assert error.value.code == INVALID and error.value.message.startswith("batch_size:"), error.value.message
        assert f"are {size} bytes uncompressed" in error.value.message


def test_encoded_batch_over_the_message_limit_ends_the_stream(synth) -> None:
    config = make_config({"synth": synth}, limits=Limits(max_batch_size=16, max_message_bytes=3_000))
    with running_server(config) as server:
        message = request("synth", batch_size=2, copy_paste={"output_size": 64})
        message.wire.image_codec = pb.IMAGE_CODEC_JPEG
        call = open_stream(server.grpc_address, message)
        with pytest.raises(grpc.RpcError) as error:
            list(call)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.value.details().startswith("max_message_bytes:")
        assert wait_until(lambda: len(server.streams) == 0)


# ----------------------------------------------------------------------------- fuzz

REGISTERED = "synth"
FUZZ_LIMITS = Limits(max_streams=8, max_batch_size=16, max_output_size=512)
FAKE_EPOCH_LENGTH = 5  # FakeLoader's epoch


def expected_bad_fields(r: pb.StreamRequest) -> set[str]:
    """An independent statement of the rules: the fields that make ``r`` invalid."""
    bad = set()
    if r.dataset != REGISTERED:
        bad.add("dataset")
    if r.pipeline not in ("", "copy-paste"):
        bad.add("pipeline")
    if not 1 <= r.batch_size <= FUZZ_LIMITS.max_batch_size:
        bad.add("batch_size")
    if r.seed < 0:
        bad.add("seed")
    shards = r.num_shards or 1
    if not 1 <= shards <= FUZZ_LIMITS.max_shards:
        bad.add("num_shards")
    if not 0 <= r.shard_id < shards:
        bad.add("shard_id")
    if r.max_batches < 0:
        bad.add("max_batches")
    if r.HasField("resume"):
        p = r.resume
        for name in ("epoch", "cursor", "batch_index"):
            if not 0 <= getattr(p, name) < 2**31:
                bad.add(f"resume.{name}")
        if p.batch_index > p.cursor or (p.cursor > 0 and p.batch_index == 0):
            bad.add("resume.batch_index")
        if p.cursor > FAKE_EPOCH_LENGTH:
            bad.add("resume.cursor")
    w = r.wire
    if w.image_codec not in (0, 1, 2):
        bad.add("wire.image_codec")
    if w.mask_codec not in (0, 1, 2):
        bad.add("wire.mask_codec")
    if not 0 <= w.jpeg_quality <= 100:
        bad.add("wire.jpeg_quality")
    if not 0 <= w.zlib_level <= 9:
        bad.add("wire.zlib_level")
    c = r.copy_paste

    def real_in(name: str, value: float, low: float, high: float, open_low: bool = False) -> None:
        if not (math.isfinite(value) and (value > low if open_low else value >= low) and value <= high):
            bad.add(name)

    if c.HasField("output_size") and not 8 <= c.output_size <= FUZZ_LIMITS.max_output_size:
        bad.add("copy_paste.output_size")
    if c.WhichOneof("jitter") == "jitter_preset" and c.jitter_preset.lower() not in ("lsj", "ssj", "none"):
        bad.add("copy_paste.jitter_preset")
    if c.WhichOneof("jitter") == "jitter_range":
        real_in("copy_paste.jitter_range", c.jitter_range.min_scale, 0, 10, True)
        real_in("copy_paste.jitter_range", c.jitter_range.max_scale, 0, 10, True)
        if c.jitter_range.min_scale > c.jitter_range.max_scale:
            bad.add("copy_paste.jitter_range")
    if c.HasField("flip_prob"):
        real_in("copy_paste.flip_prob", c.flip_prob, 0, 1)
    if c.HasField("pad_value") and not 0 <= c.pad_value <= 255:
        bad.add("copy_paste.pad_value")
    if c.HasField("max_num_pasted") and not 0 <= c.max_num_pasted <= FUZZ_LIMITS.max_num_pasted:
        bad.add("copy_paste.max_num_pasted")
    if c.HasField("blend_sigma"):
        real_in("copy_paste.blend_sigma", c.blend_sigma, 0, 64)
    if c.HasField("mask_occluded_thr") and not 0 <= c.mask_occluded_thr < 2**31:
        bad.add("copy_paste.mask_occluded_thr")
    if c.HasField("bbox_occluded_thr"):
        real_in("copy_paste.bbox_occluded_thr", c.bbox_occluded_thr, 0, 1e6)
    if c.HasField("repeat_factor_threshold"):
        real_in("copy_paste.repeat_factor_threshold", c.repeat_factor_threshold, 0, 1, True)
    if c.HasField("on_error") and c.on_error not in ("raise", "skip"):
        bad.add("copy_paste.on_error")
    return bad


INT64 = st.one_of(st.integers(-3, 20), st.integers(-(2**63), 2**63 - 1))
INT32 = st.one_of(st.integers(-2, 12), st.integers(-(2**31), 2**31 - 1))
REALS = st.one_of(st.floats(-1, 3), st.floats(allow_nan=True, allow_infinity=True))
SMALL_POS = st.one_of(st.integers(0, 7), st.integers(-(2**63), 2**63 - 1))


@st.composite
def stream_requests(draw) -> pb.StreamRequest:
    """Mostly-valid requests with each field fuzzed with probability 1/12 (so that about a
    fifth of the cases are valid, and the rest have one or a few bad fields)."""

    def pick(valid, fuzz):
        return draw(fuzz) if draw(st.integers(0, 11)) == 0 else draw(valid)

    r = pb.StreamRequest(
        dataset=pick(st.just(REGISTERED), st.one_of(st.sampled_from(["nope", "", "/data/x.json", "../synth", "s y"]), st.text(max_size=12))),
        pipeline=pick(st.sampled_from(["", "copy-paste"]), st.one_of(st.just("segment"), st.text(max_size=8))),
        batch_size=pick(st.integers(1, 4), INT64),
        seed=pick(st.integers(0, 2**63 - 1), INT64),
        max_batches=pick(st.integers(0, 3), INT64),
    )
    r.num_shards = pick(st.integers(0, 4), INT64)
    r.shard_id = pick(st.integers(0, max(0, (r.num_shards or 1) - 1)), st.one_of(st.integers(-1, 5), INT64))
    if draw(st.booleans()):
        cursor = draw(st.integers(0, FAKE_EPOCH_LENGTH))
        valid_index = st.integers(1 if cursor else 0, cursor)
        r.resume.epoch = pick(st.integers(0, 3), SMALL_POS)
        r.resume.cursor = pick(st.just(cursor), SMALL_POS)
        r.resume.batch_index = pick(valid_index, SMALL_POS)
    r.wire.image_codec = pick(st.integers(0, 2), INT32)
    r.wire.mask_codec = pick(st.integers(0, 2), INT32)
    r.wire.jpeg_quality = pick(st.integers(0, 100), INT32)
    r.wire.zlib_level = pick(st.integers(0, 9), INT32)
    c = r.copy_paste
    optional = {  # name: (valid, fuzz)
        "output_size": (st.integers(8, 128), st.one_of(st.integers(0, 600), INT64)),
        "flip_prob": (st.floats(0, 1), REALS),
        "pad_value": (st.integers(0, 255), INT64),
        "copy_paste": (st.booleans(), st.booleans()),
        "max_num_pasted": (st.integers(0, 200), INT64),
        "blend_sigma": (st.floats(0, 64), REALS),
        "mask_occluded_thr": (st.integers(0, 2**31 - 1), INT64),
        "bbox_occluded_thr": (st.floats(0, 1e6), REALS),
        "paste_by_box": (st.booleans(), st.booleans()),
        "shuffle": (st.booleans(), st.booleans()),
        "repeat_factor_threshold": (st.floats(1e-6, 1), REALS),
        "drop_last": (st.booleans(), st.booleans()),
        "on_error": (st.sampled_from(["raise", "skip"]), st.sampled_from(["", "panic", "RAISE"])),
    }
    for name, (valid, fuzz) in optional.items():
        if draw(st.integers(0, 3)) == 0:
            setattr(c, name, pick(valid, fuzz))
    jitter = draw(st.integers(0, 3))
    if jitter == 1:
        c.jitter_preset = pick(st.sampled_from(["lsj", "SSJ", "none"]), st.one_of(st.just("big"), st.text(max_size=5)))
    elif jitter == 2:
        low = pick(st.floats(0.01, 2), REALS)
        c.jitter_range.min_scale, c.jitter_range.max_scale = low, pick(st.floats(2, 10), REALS)
    return r


@pytest.fixture(scope="module")
def fuzz_server(synth):
    FakeLoader.built.clear()
    with running_server(make_config({"synth": synth}, limits=FUZZ_LIMITS), loader_factory=FakeLoader) as s:
        yield s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(r=stream_requests())
def test_fuzzed_requests_get_a_precise_answer(fuzz_server, r: pb.StreamRequest) -> None:
    bad = expected_bad_fields(r)
    code, details = first_status(fuzz_server.grpc_address, r)
    event(f"status {code.name}")
    if not bad:
        assert code == grpc.StatusCode.OK, details
        return
    assert code in (INVALID, NOT_FOUND), (code, details, bad)
    field = details.split(":")[0]
    assert any(field == b or field.startswith(b + ".") for b in bad), (details, bad)
    if bad - {"resume.cursor"}:  # past-the-epoch cursors need the dataset, the rest is pure
        with pytest.raises(RequestError) as error:
            validate_request(r, fuzz_server.config)
        assert error.value.message == details


def test_fuzz_left_the_server_serving(fuzz_server) -> None:
    assert wait_until(lambda: len(fuzz_server.streams) == 0)
    assert info(fuzz_server.grpc_address).version
    assert first_status(fuzz_server.grpc_address, request("synth"))[0] == grpc.StatusCode.OK
    threads = [t.name for t in threading.enumerate() if t.name.startswith("decal-s")]
    assert wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("decal-s")]), threads
