"""One exception-to-status mapping across the gRPC stream and the HTTP routes: the hostile
cases of a real server on loopback (a dataset whose json went missing, a truncated JPEG, a
name with a trailing newline, query values past int64, a request whose jitter would take
gigabytes, a server bug), each answered with its status, naming the dataset or parameter,
never a server path; plus the availability reasons, the memory gauges, the logged
rejections and the offline /docs."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coco_factory import write_coco_dataset
from decal.server.config import Limits
from polling import wait_until
from server_helpers import first_status, make_config, open_stream, request, running_server


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("errors")


@pytest.fixture(scope="module")
def datasets(root: Path) -> dict[str, tuple[Path, Path]]:
    synth = write_coco_dataset(root / "synth", num_images=4, instances_per_image=(3, 3), seed=5)
    gone_json, gone_images = write_coco_dataset(root / "gone", num_images=2, seed=1)
    gone_json.unlink()  # registered, then deleted under the running server
    truncated = write_coco_dataset(root / "truncated", num_images=1, instances_per_image=(1, 1), seed=2)
    photo = next(truncated[1].glob("*.jpg"))
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    no_images = (synth[0], root / "no-such-folder")
    return {"synth": synth, "gone": (gone_json, gone_images), "truncated": truncated, "noimages": no_images}


@pytest.fixture(scope="module")
def server(datasets):
    limits = Limits(max_streams=8, max_batch_size=16, max_output_size=512, max_stream_bytes=2**32)
    with running_server(make_config(datasets, http_port=0, limits=limits)) as s:
        yield s


def get(server, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stream_status(server, message) -> tuple[grpc.StatusCode, str]:
    """The status a stream ends with (reading it to the end)."""
    call = open_stream(server.grpc_address, message)
    try:
        for _ in call:
            pass
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


# ----------------------------------------------------------------------------- the sweep

GRPC_CASES = [
    # (request, code, words the message must hold)
    (dict(dataset="gone"), grpc.StatusCode.FAILED_PRECONDITION, ["dataset 'gone'", "'annotations'"]),
    (dict(dataset="truncated", batch_size=1), grpc.StatusCode.FAILED_PRECONDITION, ["dataset 'truncated'", "'file_name'", "image 1"]),
    (dict(dataset="synth\n"), grpc.StatusCode.INVALID_ARGUMENT, ["dataset"]),
    (dict(dataset="noimages"), grpc.StatusCode.FAILED_PRECONDITION, ["dataset 'noimages'", "'images'"]),
]

HTTP_CASES = [
    # (query, HTTP status, words the body must hold)
    ("dataset=gone", 409, ["dataset 'gone'", "'annotations'"]),
    ("dataset=truncated&batch_size=1", 409, ["dataset 'truncated'", "'file_name'"]),
    ("dataset=synth%0A", 422, ["dataset"]),
    ("dataset=noimages", 409, ["dataset 'noimages'", "'images'"]),
    ("seed=9223372036854775808", 422, ["seed"]),
    ("output_size=99999999999999999999999", 422, ["output_size"]),
    ("batch_size=99999999999999999999999", 422, ["batch_size"]),
    ("output_size=100000", 422, ["copy_paste.output_size"]),
]


@pytest.mark.parametrize("fields, code, words", GRPC_CASES)
def test_stream_statuses(server, root, fields, code, words) -> None:
    got, details = stream_status(server, request(max_batches=1, **fields))
    assert got == code, details
    for word in words:
        assert word in details
    assert str(root) not in details and "/tmp" not in details  # never a server path


@pytest.mark.parametrize("query, status, words", HTTP_CASES)
def test_preview_statuses(server, root, query, status, words) -> None:
    got, body = get(server, f"/preview.png?output_size=64&{query}" if "output_size" not in query else f"/preview.png?{query}")
    text = body.decode()
    assert got == status, text
    for word in words:
        assert word in text
    assert str(root) not in text and "/tmp" not in text


def test_the_server_still_serves_after_the_sweep(server) -> None:
    assert first_status(server.grpc_address, request("synth"))[0] == grpc.StatusCode.OK
    assert get(server, "/preview.png?dataset=synth&output_size=64&batch_size=1")[0] == 200


# ----------------------------------------------------------------------------- memory


def test_a_request_over_the_memory_bound_is_refused_with_the_figure(server) -> None:
    """batch 16 at 512 with jitter_range (10, 10): the scaled stacks would be ~5120 px a side."""
    huge = request("synth", batch_size=16, copy_paste={"output_size": 512})
    huge.copy_paste.jitter_range.min_scale = huge.copy_paste.jitter_range.max_scale = 10.0
    code, details = first_status(server.grpc_address, huge)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_stream_bytes" in details and re.search(r"about \d+\.\d\d GiB", details) and "jitter" in details
    modest = request("synth", batch_size=16, copy_paste={"output_size": 512, "jitter_preset": "none"})
    assert first_status(server.grpc_address, modest)[0] == grpc.StatusCode.OK


def test_metrics_show_resident_memory_and_queue_bytes(server) -> None:
    def scrape() -> dict[str, list[float]]:
        status, body = get(server, "/metrics")
        assert status == 200
        values: dict[str, list[float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                values.setdefault(sample.name, []).append(sample.value)
        return values

    call = open_stream(server.grpc_address, request("synth", batch_size=1))
    next(call)  # the header: the stream is admitted; the client reads no further
    try:
        # the producer fills the stream's queue while the client does not read
        assert wait_until(lambda: max(scrape().get("decal_stream_queue_bytes", [0])) > 0)
        values = scrape()
    finally:
        call.cancel()
    assert values["decal_resident_memory_bytes"][0] > 10**6
    assert max(values["decal_stream_memory_estimate_bytes"]) > 0


# ----------------------------------------------------------------------------- words for people


def test_datasets_say_why_one_is_unavailable(server, root) -> None:
    status, body = get(server, "/datasets")
    listing = {d["name"]: d for d in json.loads(body)}
    assert status == 200
    assert listing["synth"]["available"] is True and "reason" not in listing["synth"]
    assert listing["gone"]["available"] is False and "annotation file" in listing["gone"]["reason"]
    assert listing["noimages"]["available"] is False and "image directory" in listing["noimages"]["reason"]
    assert str(root) not in body.decode()


def test_rejected_streams_are_logged_with_reason_and_peer(server, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="decal.server"):
        first_status(server.grpc_address, request("elsewhere"))
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert any("NOT_FOUND" in line and "127.0.0.1" in line and "elsewhere" in line for line in lines), lines


def test_docs_work_offline(server) -> None:
    status, body = get(server, "/docs")
    html = body.decode()
    assert status == 200 and "cdn" not in html.lower()
    scripts = re.findall(r'src="([^"]+\.js)"', html)
    assert scripts and all(s.startswith("/") for s in scripts)
    for asset in scripts + re.findall(r'href="([^"]+\.css)"', html):
        assert get(server, asset)[0] == 200, asset


# ----------------------------------------------------------------------------- server bugs


def test_anything_else_is_internal_with_an_id_in_the_log(datasets, caplog) -> None:
    def broken_factory(entry, options):
        raise KeyError("a bug in a loader factory")

    config = make_config({"synth": datasets["synth"]}, http_port=0)
    with caplog.at_level(logging.ERROR, logger="decal.server"), running_server(config, loader_factory=broken_factory) as broken:
        code, details = first_status(broken.grpc_address, request("synth"))
        status, body = get(broken, "/preview.png?output_size=64")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for message in (details, json.loads(body)["detail"]):
        match = re.search(r"internal error \(id ([0-9a-f]{8})", message)
        assert match and match.group(1) in logged and "KeyError" not in message
    assert code == grpc.StatusCode.INTERNAL and status == 500


def test_unauthenticated_streams_are_logged_with_the_peer(datasets, caplog) -> None:
    config = make_config({"synth": datasets["synth"]}, token="s3cret")
    with caplog.at_level(logging.WARNING, logger="decal.server"), running_server(config) as guarded:
        code, _ = first_status(guarded.grpc_address, request("synth"), metadata=(("authorization", "Bearer wrong"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    lines = [r.getMessage() for r in caplog.records]
    assert any("UNAUTHENTICATED" in line and "127.0.0.1" in line and "invalid token" in line for line in lines), lines
    assert not any("s3cret" in line or "wrong" in line for line in lines)
