"""The FastAPI control plane on a real uvicorn (loopback): health, readiness, metrics that
follow the traffic, datasets, pipelines, streams, the preview PNG, the OpenAPI schema, auth."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import grpc
import pytest
from PIL import Image

# The control plane's dependencies (the `serve` extra); skipped where they are not installed.
for _module in ("fastapi", "uvicorn", "prometheus_client"):
    pytest.importorskip(_module, reason=f"the control plane needs {_module} (the serve extra)")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from coco_factory import write_coco_dataset  # noqa: E402
from polling import wait_until  # noqa: E402
from server_helpers import first_status, make_config, open_stream, request, running_server  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=6, seed=6)


@pytest.fixture(scope="module")
def server(synth):
    with running_server(make_config({"synth": synth}, http_port=0)) as s:
        yield s


def get(server, path: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("content-type", "")


def metric_values(server) -> dict[tuple[str, tuple], float]:
    status, body, content_type = get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def served(values, name: str, **labels) -> float:
    key = (name, tuple(sorted({"dataset": "synth", "pipeline": "copy-paste", **labels}.items())))
    return values.get(key, 0.0)


def test_health_and_readiness(server) -> None:
    assert get(server, "/healthz")[0] == 200
    status, body, _ = get(server, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True


def test_metrics_follow_the_traffic(server) -> None:
    before = metric_values(server)
    call = open_stream(server.grpc_address, request("synth", batch_size=2, max_batches=3))
    responses = list(call)
    batches = [r.batch for r in responses if r.WhichOneof("kind") == "batch"]
    assert len(batches) == 3
    after = metric_values(server)
    assert served(after, "decal_batches_served_total") - served(before, "decal_batches_served_total") == 3
    assert served(after, "decal_images_served_total") - served(before, "decal_images_served_total") == 6
    sent = sum(
        served(after, "decal_bytes_served_total", part=p) - served(before, "decal_bytes_served_total", part=p)
        for p in ("images", "masks", "other")
    )
    assert sent == sum(b.ByteSize() for b in batches)
    assert served(after, "decal_bytes_served_total", part="masks") > served(before, "decal_bytes_served_total", part="masks")
    started = ("decal_streams_started_total", (("dataset", "synth"), ("pipeline", "copy-paste")))
    assert after[started] == before.get(started, 0) + 1
    assert ("process_open_fds", ()) in after and ("decal_python_threads", ()) in after


def test_metrics_show_live_streams_and_rejections(server) -> None:
    call = open_stream(server.grpc_address, request("synth", batch_size=2))
    header = next(call).header
    next(call)
    assert wait_until(lambda: metric_values(server)[("decal_active_streams", ())] == 1)
    values = metric_values(server)
    depth = [k for k in values if k[0] == "decal_stream_queue_depth"]
    assert depth and dict(depth[0][1])["stream_id"] == header.stream_id
    status, body, _ = get(server, "/streams")
    assert status == 200 and json.loads(body)[0]["stream_id"] == header.stream_id
    call.cancel()
    assert wait_until(lambda: metric_values(server)[("decal_active_streams", ())] == 0)
    assert not [k for k in metric_values(server) if k[0] == "decal_stream_queue_depth"]

    before = metric_values(server).get(("decal_streams_rejected_total", (("code", "INVALID_ARGUMENT"),)), 0)
    assert first_status(server.grpc_address, request("synth", batch_size=-1))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert metric_values(server)[("decal_streams_rejected_total", (("code", "INVALID_ARGUMENT"),))] == before + 1


def test_datasets_and_pipelines(server, synth) -> None:
    status, body, _ = get(server, "/datasets")
    assert status == 200
    assert json.loads(body) == [{"name": "synth", "description": "test dataset synth", "available": True}]
    assert str(synth[0].parent) not in body.decode()  # never a path
    status, body, _ = get(server, "/pipelines")
    listing = json.loads(body)
    assert status == 200 and listing["pipelines"][0]["name"] == "copy-paste"
    assert listing["pipelines"][0]["defaults"]["jitter"] == "lsj"
    assert listing["limits"]["max_streams"] == 8
    assert "IMAGE_CODEC_JPEG" in listing["wire"]["image_codecs"]


@pytest.mark.parametrize("pipeline", ["copy-paste", "balanced-copy-paste"])
def test_preview_png(server, pipeline) -> None:
    """Balanced copy-paste keeps ``output_size`` in its nested copy-paste params: the preview
    used to set it on the outer message and answer 500."""
    status, body, content_type = get(server, f"/preview.png?pipeline={pipeline}&seed=3&batch_size=2&output_size=64")
    assert status == 200 and content_type == "image/png"
    with Image.open(io.BytesIO(body)) as picture:
        assert picture.format == "PNG"
        picture.load()
        assert picture.width > 64 and picture.height > 64
    again = get(server, f"/preview.png?pipeline={pipeline}&seed=3&batch_size=2&output_size=64")[1]
    assert again == body  # the same seed renders the same batch


@pytest.mark.parametrize(
    "query,status,field",
    [
        ("pipeline=segment", 404, "pipeline"),
        ("pipeline=cutmix", 422, "pipeline"),
        ("dataset=elsewhere", 404, "dataset"),
        ("dataset=/etc", 422, "dataset"),
        ("output_size=100000", 422, "copy_paste.output_size"),
        ("seed=-1", 422, "seed"),
    ],
)
def test_preview_rejects_bad_parameters(server, query, status, field) -> None:
    got, body, _ = get(server, f"/preview.png?{query}")
    assert got == status
    assert field in body.decode()


def test_openapi_schema(server) -> None:
    status, body, _ = get(server, "/openapi.json")
    paths = json.loads(body)["paths"]
    assert status == 200
    assert {"/healthz", "/readyz", "/metrics", "/datasets", "/pipelines", "/preview.png"} <= set(paths)


def test_token_guards_everything_but_probes(synth) -> None:
    with running_server(make_config({"synth": synth}, http_port=0, token="tok")) as server:
        assert get(server, "/healthz")[0] == 200
        assert get(server, "/metrics")[0] == 200
        assert get(server, "/datasets")[0] == 401
        assert get(server, "/preview.png", {"Authorization": "Bearer nope"})[0] == 401
        assert get(server, "/datasets", {"Authorization": "Bearer tok"})[0] == 200


def test_readiness_turns_off_while_draining(synth) -> None:
    with running_server(make_config({"synth": synth}, http_port=0)) as server:
        server.drain()
        status, body, _ = get(server, "/readyz")
        assert status == 503 and json.loads(body)["draining"] is True
        code, details = first_status(server.grpc_address, request("synth"))
        assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
