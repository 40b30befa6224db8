"""RemoteLoader: exactly-once epochs across broken connections and server restarts, resume
from state_dict, epoch semantics of the local iterator, auth and TLS."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections import Counter

import grpc
import pytest
import torch

from decal.dali_pipes.copy_paste.source import LoaderPosition
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.dali_pipes.core.batch import Batch
from decal.server.remote_loader import RemoteLoader, RemoteLoaderError, _EpochEnd
from decal.proto import decal_pb2 as pb

from coco_factory import write_coco_dataset
from server_helpers import ServerProcess, TcpProxy, assert_batches_equal, make_config, running_server, write_server_toml

OPTIONS = {"batch_size": 1, "output_size": 96, "seed": 21}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=12, instances_per_image=(0, 4), seed=8)


def local_epochs(synth, epochs: int, **options) -> list[list[Batch]]:
    loader = CopyPasteLoader(*synth, device="cpu", **options)
    return [list(loader) for _ in range(epochs)]


def image_ids(batches) -> list[int]:
    return [int(t["image_id"]) for b in batches for t in b.targets]


def dataset_ids(synth) -> set[int]:
    return {int(i["id"]) for i in json.loads(synth[0].read_text())["images"]}


def test_connection_cut_mid_epoch_loses_and_repeats_nothing(server, synth) -> None:
    want = local_epochs(synth, 2, **OPTIONS)
    proxy = TcpProxy(("127.0.0.1", server.grpc_port))
    try:
        remote = RemoteLoader(proxy.address, "synth", prefetch=1, backoff=(0.05, 0.5), **OPTIONS)
        got: list[list[Batch]] = []
        cuts = 0
        for epoch in range(2):
            batches = []
            for i, batch in enumerate(remote):
                batches.append(batch)
                if i in (2, 7):  # cut every connection twice per epoch
                    cuts += proxy.sever()
            got.append(batches)
        assert cuts >= 4 and remote.reconnects >= 4
        for epoch in range(2):
            ids = image_ids(got[epoch])
            assert Counter(ids) == Counter(image_ids(want[epoch]))  # no loss, no duplicate
            assert set(ids) == dataset_ids(synth) and len(ids) == len(set(ids))
            assert len(got[epoch]) == len(want[epoch])
            for g, w in zip(got[epoch], want[epoch]):
                assert_batches_equal(g, w)  # and the very same augmentation
        remote.close()
    finally:
        proxy.close()
    assert proxy.connections >= 5


def test_server_killed_and_restarted_mid_epoch(synth, tmp_path) -> None:
    """The client keeps one address (a proxy's) while the server process behind it is killed
    and a new one started: each server binds a port of its own (0), so no port is picked free
    and bound later, nor rebound after the kill, where another process (or one of the
    client's own reconnects) could take it meanwhile."""
    want = local_epochs(synth, 1, **OPTIONS)[0]
    toml = write_server_toml(tmp_path / "server.toml", {"synth": synth})
    first = ServerProcess(toml, tmp_path, http_port=-1)
    second = None
    proxy = TcpProxy(("127.0.0.1", first.grpc_port))
    try:
        remote = RemoteLoader(proxy.address, "synth", prefetch=1, backoff=(0.1, 1.0), max_retries=40, **OPTIONS)
        got = []
        for i, batch in enumerate(remote):
            got.append(batch)
            if i == 3:
                first.kill()  # SIGKILL: no goodbye
                proxy.target = None  # down: connections are closed as the dead port would refuse them
                second = ServerProcess(toml, tmp_path, http_port=-1)
                proxy.target = ("127.0.0.1", second.grpc_port)
        assert remote.reconnects >= 1
        assert image_ids(got) == image_ids(want)
        for g, w in zip(got, want):
            assert_batches_equal(g, w)
        remote.close()
    finally:
        proxy.close()
        first.kill()
        if second is not None:
            assert second.terminate() == 0


def test_a_closed_remote_loader_refuses_to_iterate(server, synth) -> None:
    """``close()`` is final, as for a local loader: a suspended epoch and a new iteration both
    raise one clear line; a new loader resumes from the closed one's state; close twice is fine."""
    with RemoteLoader(server.grpc_address, "synth", **OPTIONS) as remote:
        iterator = iter(remote)
        first = next(iterator)
        state = remote.state_dict()
    assert remote.closed
    with pytest.raises(RuntimeError, match="^RemoteLoader is closed; make a new loader"):
        next(iterator)
    with pytest.raises(RuntimeError, match="^RemoteLoader is closed"):
        iter(remote)
    remote.close()
    with RemoteLoader(server.grpc_address, "synth", **OPTIONS) as resumed:
        resumed.load_state_dict(state)
        following = next(iter(resumed))
    assert following.position.batch_index == first.position.batch_index + 1


def test_state_dict_resumes_exactly_like_the_local_loader(server, synth) -> None:
    options = {"batch_size": 2, "output_size": 64, "seed": 5}
    local = CopyPasteLoader(*synth, device="cpu", **options)
    full = [list(local) for _ in range(2)]
    for stop_after in (1, 5, 6):  # mid-epoch, one before the end, at the end
        first = RemoteLoader(server.grpc_address, "synth", **options)
        head = []
        for batch in first:
            head.append(batch)
            if len(head) == stop_after:
                break
        state = first.state_dict()
        first.close()
        reference = CopyPasteLoader(*synth, device="cpu", **options)
        iterator = iter(reference)
        for _ in range(stop_after):
            next(iterator)
        assert state == reference.state_dict()
        resumed = RemoteLoader(server.grpc_address, "synth", **options)
        resumed.load_state_dict(state)
        rest = list(resumed)
        if stop_after == 6:  # the state is the start of epoch 1
            assert resumed.epoch == 2 and len(rest) == 6
            expected = full[1]
        else:
            expected = full[0][stop_after:]
        assert len(rest) == len(expected)
        for g, w in zip(rest, expected):
            assert_batches_equal(g, w)
        resumed.close()


def test_load_state_dict_checks_seed_and_shard(server) -> None:
    remote = RemoteLoader(server.grpc_address, "synth", seed=1)
    with pytest.raises(ValueError, match="seed"):
        remote.load_state_dict({"epoch": 0, "cursor": 0, "batch_index": 0, "seed": 2})
    with pytest.raises(ValueError, match="cursor"):
        remote.load_state_dict({"epoch": 0, "batch_index": 0})


def test_break_and_iterate_again_continues_the_epoch(server, synth) -> None:
    options = {"batch_size": 2, "output_size": 64, "seed": 9}
    want = local_epochs(synth, 1, **options)[0]
    with RemoteLoader(server.grpc_address, "synth", **options) as remote:
        got = []
        for batch in remote:
            got.append(batch)
            if len(got) == 2:
                break
        got += list(remote)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_batches_equal(g, w)


class _ScriptedReader:
    """Stands in for the reader thread: a fixed sequence of stream items."""

    def __init__(self, items, header) -> None:
        self.items = list(items)
        self.header = header
        self.epoch_info = {0: (3, 3), 1: (3, 3)}

    def get(self):
        return self.items.pop(0)

    def wait_header(self):
        return self.header

    def close(self) -> None:
        pass


def _tiny_batch(epoch: int, cursor: int) -> Batch:
    return Batch(images=torch.zeros((1, 3, 2, 2), dtype=torch.uint8), targets=[], position=LoaderPosition(epoch, cursor, cursor))


def test_an_epoch_end_lost_in_a_reconnect_is_inferred() -> None:
    """Reconnecting right after an epoch's last batch skips its EpochEnd marker (the server
    resumes in the next epoch): the first batch of the next epoch ends the epoch."""
    remote = RemoteLoader("127.0.0.1:1", "synth", batch_size=1)
    header = pb.StreamHeader(position=pb.Position(epoch=0), epoch_length=3, batches_in_epoch=3, categories_json="{}", options_json="{}")
    remote._reader = _ScriptedReader(
        [_tiny_batch(0, 1), _tiny_batch(0, 2), _tiny_batch(0, 3), _tiny_batch(1, 1), _tiny_batch(1, 2), _EpochEnd(0, LoaderPosition(1, 0, 0)),
         _tiny_batch(1, 3), _EpochEnd(1, LoaderPosition(2, 0, 0))],
        header,
    )  # fmt: skip
    assert [b.position.cursor for b in remote] == [1, 2, 3]
    assert remote.epoch == 1 and remote.state_dict()["epoch"] == 1
    assert [b.position.cursor for b in remote] == [1, 2, 3]  # the stale marker of epoch 0 is skipped
    assert remote.epoch == 2
    remote._reader = None


def test_unknown_options_fail_fast() -> None:
    with pytest.raises(TypeError, match="bogus"):
        RemoteLoader("127.0.0.1:1", "synth", bogus=1)
    with pytest.raises(ValueError, match="image_encoding"):
        RemoteLoader("127.0.0.1:1", "synth", image_encoding="webp")


def test_device_takes_the_one_vocabulary() -> None:
    """RemoteLoader reads the device words the local loaders read (no connection is made)."""
    import torch

    assert RemoteLoader("127.0.0.1:1", "synth", device="cuda:1").device == torch.device("cuda", 1)
    assert RemoteLoader("127.0.0.1:1", "synth", device="gpu").device == torch.device("cuda", 0)
    assert RemoteLoader("127.0.0.1:1", "synth", device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        RemoteLoader("127.0.0.1:1", "synth", device="tpu")


def test_unreachable_server_gives_up_after_max_retries() -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused, and no other process can take the port
        bound.bind(("127.0.0.1", 0))
        remote = RemoteLoader(f"127.0.0.1:{bound.getsockname()[1]}", "synth", max_retries=2, backoff=(0.01, 0.02), connect_timeout=0.5)
        with pytest.raises(RemoteLoaderError, match="gave up after 3"):
            list(remote)


def test_token(synth) -> None:
    with running_server(make_config({"synth": synth}, token="t0ken")) as server:
        with RemoteLoader(server.grpc_address, "synth", token="t0ken", batch_size=2) as remote:
            assert len(next(iter(remote))) == 2
        with RemoteLoader(server.grpc_address, "synth", token="wrong", batch_size=2) as remote:
            with pytest.raises(RemoteLoaderError) as error:
                next(iter(remote))
            assert error.value.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls(synth, tmp_path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with running_server(make_config({"synth": synth}, tls_cert=cert, tls_key=key)) as server:
        with RemoteLoader(server.grpc_address, "synth", tls=str(cert), batch_size=2) as remote:
            assert len(next(iter(remote))) == 2
        with RemoteLoader(server.grpc_address, "synth", batch_size=2, max_retries=0, connect_timeout=2) as plain:
            with pytest.raises(RemoteLoaderError):
                next(iter(plain))


@pytest.mark.gpu
def test_batches_land_on_the_cuda_device(server, synth) -> None:
    options = {"batch_size": 2, "output_size": 64, "seed": 9}
    want = local_epochs(synth, 1, **options)[0]
    with RemoteLoader(server.grpc_address, "synth", device="cuda:0", **options) as remote:
        got = list(remote)
    assert got[0].images.device.type == "cuda" and got[0].targets[0]["masks"].device.type == "cuda"
    for g, w in zip(got, want):
        assert_batches_equal(g, w)


def test_remote_client_does_not_import_dali() -> None:
    """A training machine that only pulls batches needs no DALI: importing RemoteLoader (and
    the Batch it yields) must not load it."""
    import subprocess
    import sys

    code = (
        "import sys; from decal import RemoteLoader, Batch; "
        "assert 'nvidia.dali' not in sys.modules, sorted(m for m in sys.modules if 'dali' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
