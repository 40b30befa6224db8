"""End to end against a real server process (``python -m decal.server.serve``) on loopback:
streamed batches equal the local iterator's, four shard clients at once, every wire option,
graceful SIGTERM."""

from __future__ import annotations

import json
import threading
import urllib.request

import grpc
import pytest

from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.server.remote_loader import RemoteLoader, RemoteLoaderError

from coco_factory import write_coco_dataset
from server_helpers import (
    ServerProcess,
    assert_batches_equal,
    make_config,
    open_stream,
    request,
    running_server,
    write_server_toml,
)

OPTIONS = {"batch_size": 3, "output_size": 64, "seed": 11}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=12, instances_per_image=(0, 4), seed=5)


@pytest.fixture(scope="module")
def server_process(synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    process = ServerProcess(write_server_toml(work / "server.toml", {"synth": synth}), work)
    yield process
    assert process.terminate() == 0, process.output()


def local_epochs(synth, epochs: int, **options):
    loader = CopyPasteLoader(*synth, device="cpu", **options)
    return [list(loader) for _ in range(epochs)], loader


def test_stream_equals_the_local_iterator(server_process, synth) -> None:
    want, local = local_epochs(synth, 2, **OPTIONS)
    with RemoteLoader(server_process.address, "synth", **OPTIONS) as remote:
        assert len(remote) == len(want[0]) == 4
        assert remote.categories == {int(k): v for k, v in local.categories.items()}
        for epoch in range(2):
            assert remote.epoch == epoch
            got = list(remote)
            assert len(got) == len(want[epoch])
            for g, w in zip(got, want[epoch]):
                assert_batches_equal(g, w)
                assert g.images.device.type == "cpu"
        assert remote.state_dict() == local.state_dict()


def test_low_level_stream_of_n_batches(server_process) -> None:
    call = open_stream(server_process.address, request("synth", batch_size=2, max_batches=7))
    kinds = [r.WhichOneof("kind") for r in call]
    # 12 images / 2 = 6 batches, the epoch end, then 1 batch of the next epoch
    assert kinds == ["header"] + ["batch"] * 6 + ["epoch_end", "batch"]
    assert call.code() == grpc.StatusCode.OK


def test_four_concurrent_shard_clients(server_process, synth) -> None:
    options = {"batch_size": 2, "output_size": 64, "seed": 3, "num_shards": 4}
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(shard: int) -> None:
        try:
            with RemoteLoader(server_process.address, "synth", shard_id=shard, **options) as remote:
                results[shard] = list(remote)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(shard,)) for shard in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == [0, 1, 2, 3]
    seen = []
    for shard, batches in results.items():
        want, _ = local_epochs(synth, 1, shard_id=shard, **options)
        assert len(batches) == len(want[0])
        for g, w in zip(batches, want[0]):
            assert_batches_equal(g, w)
        seen += [int(t["image_id"]) for b in batches for t in b.targets]
    all_ids = {int(i["id"]) for i in json.loads(synth[0].read_text())["images"]}
    assert len(seen) == len(all_ids) and set(seen) == all_ids  # 12 images / 4 shards: no padding


def test_server_reports_through_info_and_http(server_process) -> None:
    with RemoteLoader(server_process.address, "synth") as remote:
        reply = remote.info()
    assert [d.name for d in reply.datasets] == ["synth"]
    assert reply.pipelines[0].name == "copy-paste" and reply.limits.max_streams == 8
    with urllib.request.urlopen(f"http://127.0.0.1:{server_process.http_port}/readyz", timeout=10) as response:
        assert json.loads(response.read())["ready"] is True


def test_unknown_dataset_raises_without_retrying(server_process) -> None:
    with RemoteLoader(server_process.address, "no-such-set", **OPTIONS) as remote:
        with pytest.raises(RemoteLoaderError) as error:
            list(remote)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert "dataset" in str(error.value)


@pytest.mark.parametrize(
    "image_encoding,mask_encoding",
    [("raw", "raw"), ("raw", "bitpack"), ("zlib", "bitpack+zlib"), ("jpeg", "bitpack+zlib")],
)
def test_every_wire_option_gives_the_local_batches(synth, image_encoding, mask_encoding) -> None:
    options = {"batch_size": 2, "output_size": 64, "seed": 4}
    want, _ = local_epochs(synth, 1, **options)
    with running_server(make_config({"synth": synth})) as server:
        with RemoteLoader(server.grpc_address, "synth", image_encoding=image_encoding, mask_encoding=mask_encoding, **options) as remote:
            got = list(remote)
            received = remote.bytes_received
    assert len(got) == len(want[0]) and received > 0
    for g, w in zip(got, want[0]):
        if image_encoding == "jpeg":
            assert_batches_equal(g, w, images=False)  # targets exact, pixels close
            assert (g.images.float() - w.images.float()).abs().mean() < 6
        else:
            assert_batches_equal(g, w)


def test_sigterm_drains_streams_and_exits_cleanly(synth, tmp_path) -> None:
    process = ServerProcess(write_server_toml(tmp_path / "server.toml", {"synth": synth}), tmp_path)
    try:
        call = open_stream(process.address, request("synth", batch_size=2))
        assert next(call).WhichOneof("kind") == "header"
        assert next(call).WhichOneof("kind") == "batch"
        assert process.terminate(timeout=60) == 0
        with pytest.raises(grpc.RpcError) as error:
            for _ in range(1000):  # bounded: the rest of the prefetched batches, then the status
                next(call)
        assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert "stopped" in process.output()
    finally:
        process.kill()
