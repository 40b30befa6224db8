"""Helpers for the server tests: in-process and subprocess servers on loopback, a TCP proxy
that can cut every connection, a fast fake loader, batch comparison.

Everything binds 127.0.0.1 with ephemeral ports; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

# The server's own dependencies (the `serve` extra): a machine without them (the GPU machine,
# unless they are packed: bench/README.md) skips the server test modules instead of failing
# to collect them.
pytest.importorskip("grpc_health", reason="the server needs grpcio-health-checking (the serve extra)")
pytest.importorskip("prometheus_client", reason="the server needs prometheus-client (the serve extra)")

import grpc
import numpy as np
import torch

from decal.dali_pipes.copy_paste.source import LoaderPosition
from decal.dali_pipes.core.batch import Batch
from decal.proto import decal_pb2 as pb
from decal.server.app import DecalServer
from decal.server.config import DatasetEntry, Limits, PipelineRuntime, ServerConfig
from decal.server.stream_service import INFO_METHOD, STREAM_METHOD

REPO = Path(__file__).resolve().parents[1]

#: Small, fast pipeline options shared by the tests (CPU backend, 2 cores).
FAST = {"output_size": 64}


def make_config(datasets: dict[str, tuple[Path, Path]], **kwargs: Any) -> ServerConfig:
    limits = kwargs.pop("limits", Limits(max_streams=8, max_batch_size=16, max_output_size=512))
    entries = {  # (None, folder): an image-folder dataset
        name: DatasetEntry(name, Path(j) if j is not None else None, Path(d), f"test dataset {name}") for name, (j, d) in datasets.items()
    }
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("grpc_port", 0)
    kwargs.setdefault("http_port", -1)
    kwargs.setdefault("grace_seconds", 1.0)
    kwargs.setdefault("defaults", {"copy-paste": dict(FAST)})
    # The tests compare served batches bit for bit with a local CPU loader's; "auto" would run
    # the server's pipelines on a GPU where there is one (nvJPEG then decodes differently).
    kwargs.setdefault("pipeline", PipelineRuntime(device="cpu"))
    return ServerConfig(datasets=entries, limits=limits, **kwargs)


@contextlib.contextmanager
def running_server(config: ServerConfig, **kwargs: Any) -> Iterator[DecalServer]:
    server = DecalServer(config, backend=kwargs.pop("backend", "cpu"), **kwargs).start()
    try:
        yield server
    finally:
        server.stop(grace=0.5)


#: Each test channel gets its own TCP connection (gRPC shares them across channels otherwise).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def open_stream(address: str, request: pb.StreamRequest, metadata: Any = ()) -> Any:
    channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
    call = channel.unary_stream(STREAM_METHOD, request_serializer=pb.StreamRequest.SerializeToString, response_deserializer=pb.StreamResponse.FromString)(
        request, metadata=metadata
    )
    call._test_channel = channel  # keep the channel with the call
    return call


def first_status(address: str, request: pb.StreamRequest, metadata: Any = (), timeout: float = 30) -> tuple[grpc.StatusCode, str]:
    """Status of a stream after its first message (OK when the header arrived)."""
    channel = grpc.insecure_channel(address)
    try:
        call = channel.unary_stream(STREAM_METHOD, request_serializer=pb.StreamRequest.SerializeToString, response_deserializer=pb.StreamResponse.FromString)(
            request, metadata=metadata, timeout=timeout
        )
        try:
            first = next(call)
            assert first.WhichOneof("kind") == "header"
            call.cancel()
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
    finally:
        channel.close()


def info(address: str, metadata: Any = (), timeout: float = 10) -> pb.InfoReply:
    with grpc.insecure_channel(address) as channel:
        method = channel.unary_unary(INFO_METHOD, request_serializer=pb.InfoRequest.SerializeToString, response_deserializer=pb.InfoReply.FromString)
        return method(pb.InfoRequest(), metadata=metadata, timeout=timeout)


def request(dataset: str = "synth", **fields: Any) -> pb.StreamRequest:
    params = fields.pop("copy_paste", dict(FAST))
    message = pb.StreamRequest(dataset=dataset, pipeline="copy-paste", batch_size=fields.pop("batch_size", 2), **fields)
    for k, v in params.items():
        setattr(message.copy_paste, k, v)
    return message


def assert_same(got: Any, want: Any, where: str = "batch") -> None:
    """Equal types, and every tensor equal in dtype, shape and value (recursively)."""
    assert type(got) is type(want), (where, type(got), type(want))
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, want.dtype, got.shape, want.shape)
        assert torch.equal(got.cpu(), want.cpu()), where
        assert got.device == want.device, where
    elif dataclasses.is_dataclass(want):
        for field in dataclasses.fields(want):
            assert_same(getattr(got, field.name), getattr(want, field.name), f"{where}.{field.name}")
    elif isinstance(want, dict):
        assert set(got) == set(want), (where, sorted(got), sorted(want))
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)) and not hasattr(want, "_fields"):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def assert_batches_equal(got: Batch, want: Batch, *, images: bool = True) -> None:
    assert got.position == want.position
    if images:
        assert torch.equal(got.images.cpu(), want.images.cpu())
    else:
        assert got.images.shape == want.images.shape and got.images.dtype == want.images.dtype
    assert len(got.targets) == len(want.targets)
    for a, b in zip(got.targets, want.targets):
        assert set(a) == set(b)
        for key in b:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key].cpu(), b[key].cpu()), key


def process_counts() -> dict[str, int]:
    return {
        "threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
    }


# ----------------------------------------------------------------------------- subprocess server


class ServerProcess:
    """``python -m decal.server.serve`` in a subprocess, on ephemeral or given ports."""

    def __init__(self, config_toml: Path, workdir: Path, *, grpc_port: int = 0, http_port: int = 0) -> None:
        self.ready_file = workdir / f"ready-{time.monotonic_ns()}.json"
        self.log = open(workdir / f"server-{time.monotonic_ns()}.log", "w+")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "decal.server.serve", "--config", str(config_toml), "--grpc-port", str(grpc_port),
             "--http-port", str(http_port), "--device", "cpu", "--ready-file", str(self.ready_file), "--log-level", "WARNING"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                output = self.log.read()
                self.kill()
                raise RuntimeError(f"server process did not start:\n{output}")
            time.sleep(0.05)
        ports = json.loads(self.ready_file.read_text())
        self.grpc_port, self.http_port = ports["grpc_port"], ports["http_port"]
        self.address = f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def write_server_toml(path: Path, datasets: dict[str, tuple[Path, Path]], extra: str = "") -> Path:
    lines = ["[server]", 'host = "127.0.0.1"', "grace_seconds = 2", extra, "[limits]", "max_streams = 8", "max_batch_size = 16", ""]
    for name, (j, d) in datasets.items():
        lines += [f"[datasets.{name}]", f"annotations = {json.dumps(str(j))}", f"images = {json.dumps(str(d))}", ""]
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`sever` cuts every live connection
    (both directions, abruptly) while new connections keep being accepted. ``target`` may be
    changed at any time (new connections go there) or set to None (new connections are
    closed at once, as by a server that is down), so the proxy's address can stand for a
    server that is restarted on another port."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = threading.Event()
        self.connections = 0
        self.bytes_forwarded = 0
        self._thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            target = self.target
            if target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="test-proxy-pump").start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sockets = [a, b]
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.1)
                for s in readable:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
                    self.bytes_forwarded += len(data)
        except OSError:
            return
        finally:
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def sever(self) -> int:
        """Reset every live connection; returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def close(self) -> None:
        self._closed.set()
        self.sever()
        self._thread.join(timeout=5)
        self.listener.close()


# ----------------------------------------------------------------------------- fake loader


class FakeSource:
    def __init__(self, length: int) -> None:
        self.length = length

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.arange(self.length)


class FakeLoader:
    """A loader-shaped object with no DALI: tiny deterministic batches, instantly.

    Records the options it was built with in ``FakeLoader.built``.
    """

    built: list[dict[str, Any]] = []

    def __init__(self, entry: DatasetEntry, options: dict[str, Any]) -> None:
        FakeLoader.built.append(dict(options))
        self.options = options
        self.batch_size = int(options["batch_size"])
        self.source = FakeSource(5)
        self.position = LoaderPosition()
        self.categories = {1: {"id": 1, "name": "thing"}}
        self.backend = "cpu"

    @property
    def epoch(self) -> int:
        return self.position.epoch

    def __len__(self) -> int:
        return -(-self.source.length // self.batch_size)

    def epoch_length(self, epoch: int) -> int:
        return len(self.source.epoch_order(epoch))

    def state_dict(self) -> dict[str, Any]:
        p = self.position
        if p.cursor >= self.source.length:
            p = LoaderPosition(p.epoch + 1, 0, 0)
        return {**p.to_dict(), "seed": self.options["seed"], "shard_id": self.options["shard_id"], "num_shards": self.options["num_shards"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = LoaderPosition.from_dict(state)
        if self.position.cursor >= self.source.length:
            self.position = LoaderPosition(self.position.epoch + 1, 0, 0)

    def __iter__(self) -> Iterator[Batch]:
        while self.position.cursor < self.source.length:
            p = self.position
            n = min(self.batch_size, self.source.length - p.cursor)
            size = 8
            targets = [
                {
                    "boxes": torch.zeros((1, 4), dtype=torch.float32),
                    "labels": torch.ones(1, dtype=torch.int64),
                    "masks": torch.zeros((1, size, size), dtype=torch.uint8),
                    "area": torch.zeros(1, dtype=torch.int64),
                    "iscrowd": torch.zeros(1, dtype=torch.uint8),
                    "pasted": torch.zeros(1, dtype=torch.uint8),
                    "image_id": torch.tensor(p.cursor + i),
                }
                for i in range(n)
            ]
            self.position = LoaderPosition(p.epoch, p.cursor + n, p.batch_index + 1)
            yield Batch(images=torch.zeros((n, 3, size, size), dtype=torch.uint8), targets=targets, position=self.position)
        self.position = LoaderPosition(self.position.epoch + 1, 0, 0)
