"""``DecalServer``: the gRPC server and the FastAPI control plane in one process.

::

    server = DecalServer(ServerConfig.from_toml("server.toml"))
    server.start()            # binds, starts serving; ports in server.grpc_port / http_port
    ...
    server.stop()             # drain: health NOT_SERVING, streams end UNAVAILABLE at a
                              # batch boundary, pipelines released, uvicorn stopped

gRPC runs on its own thread pool (``max_streams`` stream workers plus a few for Info,
health and rejections); uvicorn runs in a thread with its own event loop. The standard
``grpc.health.v1.Health`` service reports SERVING for ``""`` and ``decal.v1.BatchService``.
Reflection is not served: ``grpcio-reflection`` is not a dependency (clients use the
checked-in stubs or ``proto/decal.proto``).
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
import weakref
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .auth import TokenAuthInterceptor
from .config import ServerConfig
from .metrics import ServerMetrics
from .stream_service import SERVICE_NAME, BatchServicer, LoaderFactory, add_to_server
from .streams import StreamRegistry

__all__ = ["DecalServer", "BindError"]


class BindError(OSError):
    """A port the server cannot listen on (in use, not allowed, a bad address); the message
    names the port."""

log = logging.getLogger("decal.server")

#: Requests are tiny; refuse anything larger before parsing it.
MAX_REQUEST_BYTES = 1 << 20


def _bind_http(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn (which listens on it); BindError naming
    the port when that address cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
    except OSError as error:
        raise BindError(f"server.http_port: cannot listen on {host}:{port} ({error.strerror or error})") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise BindError(f"server.http_port: cannot listen on {host}:{port} ({error.strerror or error})") from None
    return listener


def _stop_at_exit(server: "DecalServer") -> None:
    """Stop ``server`` when the interpreter exits with it still running: a stream handler
    runs on a (non-daemon) gRPC worker thread, and the interpreter waits for those."""
    ref = weakref.ref(server)

    def stop() -> None:
        live = ref()
        if live is not None and not live._stopped.is_set():
            live.stop(grace=0)

    register = getattr(threading, "_register_atexit", None)  # runs before non-daemon threads are joined
    try:
        (register or atexit.register)(stop)
    except RuntimeError:  # the interpreter is already shutting down
        pass


class DecalServer:
    """gRPC + control plane, started and stopped together."""

    def __init__(self, config: ServerConfig, *, loader_factory: LoaderFactory | None = None, backend: str | None = None) -> None:
        self.config = config.with_sample()
        self.streams = StreamRegistry()
        self.metrics = ServerMetrics(self.streams)
        self.servicer = BatchServicer(
            self.config, streams=self.streams, metrics=self.metrics, loader_factory=loader_factory, backend=backend
        )
        self.health = health.HealthServicer()
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._uvicorn: Any = None
        self._uvicorn_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.started_at: float | None = None

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._grpc is not None and not self.servicer.draining.is_set() and not self._stopped.is_set()

    @property
    def grpc_address(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    def start(self) -> "DecalServer":
        """Bind and serve. Raises ConfigError (naming the key and file) for unusable TLS
        material and :class:`BindError` (naming the port) for a port it cannot listen on;
        nothing is left running when it raises."""
        from .tls import server_credentials

        cfg = self.config
        limits = cfg.limits
        credentials = server_credentials(cfg) if cfg.tls else None
        interceptors = []
        if cfg.token:
            interceptors.append(TokenAuthInterceptor(cfg.token, on_reject=self.metrics.rejected))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_streams + 8, thread_name_prefix="decal-grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", limits.max_message_bytes + (1 << 16)),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.so_reuseport", 0),
                # accept client keepalive pings every >= 10 s (clients ping every 30 s)
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
            maximum_concurrent_rpcs=limits.max_streams + 64,
        )
        add_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{cfg.host}:{cfg.grpc_port}"
        try:
            port = server.add_secure_port(address, credentials) if credentials is not None else server.add_insecure_port(address)
        except RuntimeError:  # newer grpcio raises where older ones return 0
            port = 0
        if port == 0:
            server.stop(0)
            raise BindError(f"server.grpc_port: cannot listen on {address} (in use by another process, or not an address of this host)")
        self.grpc_port = port
        server.start()
        self._grpc = server
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if cfg.http_port >= 0:
            try:
                self._start_http()
            except BaseException:
                server.stop(0).wait()
                self._grpc = None
                raise
        self.started_at = time.time()
        _stop_at_exit(self)
        log.info("decal server: grpc %s:%s, http %s", cfg.host, self.grpc_port, self.http_port)
        return self

    def _start_http(self) -> None:
        import uvicorn

        from .control_plane import create_app

        cfg = self.config
        ssl = {}
        if cfg.tls:
            ssl = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)}
        config = uvicorn.Config(
            create_app(self), host=cfg.host, port=cfg.http_port, log_level="warning", access_log=False, lifespan="off", **ssl
        )
        server = uvicorn.Server(config)
        listener = _bind_http(cfg.host, cfg.http_port)  # here, so a busy port is one clear error

        def run() -> None:
            try:
                server.run(sockets=[listener])
            except SystemExit:  # uvicorn exits on a start-up failure; reported below
                pass

        thread = threading.Thread(target=run, name="decal-http", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                listener.close()
                raise BindError(f"server.http_port: the control plane did not start on {cfg.host}:{cfg.http_port}")
            time.sleep(0.01)
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        self._uvicorn, self._uvicorn_thread = server, thread

    def drain(self) -> None:
        """Stop admitting streams; live streams end UNAVAILABLE at their next batch."""
        self.servicer.draining.set()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: drain, give calls ``grace`` seconds, release every pipeline."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.grace_seconds if grace is None else grace
            self.drain()
            if self._grpc is not None:
                self._grpc.stop(grace).wait()
            self.streams.stop_all()
            if not self.streams.wait_empty(timeout=max(grace, 5.0)):
                log.warning("stop: %d stream producers still running", len(self.streams))
            if self._uvicorn is not None:
                self._uvicorn.should_exit = True
                self._uvicorn_thread.join(timeout=10)
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> "DecalServer":
        return self.start() if self._grpc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop(grace=1.0)
