"""``decal serve``: run the server until SIGTERM / SIGINT, then shut down gracefully.

::

    decal serve --config server.toml [--host H] [--grpc-port P] [--http-port P] [--sample]
    python -m decal.server.serve --config server.toml

A configuration the server cannot start with (an unknown or bad key, a bad
``[defaults.PIPELINE]`` value, a missing or unreadable certificate, a key that does not match
it, a port in use) prints one line naming the key, file or port and exits 2.

On SIGTERM or SIGINT: readiness and gRPC health turn NOT_SERVING, new streams get
UNAVAILABLE, live streams end UNAVAILABLE at their next batch (RemoteLoader reconnects and
resumes, elsewhere or after the restart), every pipeline is released, and the process exits
0 within ``grace_seconds`` (plus the batch in flight). ``--ready-file`` writes the bound
ports as JSON once serving (what scripts and tests wait for).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..dali_pipes.core.cli_support import add_device_flag
from .config import ConfigError, ServerConfig

__all__ = ["add_serve_arguments", "run_serve", "main"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="server TOML ([server], [limits], [pipeline], [datasets.NAME], [defaults.PIPELINE])")
    parser.add_argument("--host", help="bind address (default from config, else 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (0 = ephemeral)")
    parser.add_argument("--http-port", type=int, help="control-plane port (0 = ephemeral, -1 = off)")
    parser.add_argument("--sample", action="store_true", help="also serve the embedded sample dataset as 'sample'")
    add_device_flag(parser, default=None, what="pipeline backend", default_text="from config: auto")
    parser.add_argument("--ready-file", help="write {grpc_port, http_port, pid} here once serving")
    parser.add_argument("--log-level", default="INFO")
    return parser


def load_config(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig.from_toml(args.config) if args.config else ServerConfig()
    changes = {k: v for k, v in (("host", args.host), ("grpc_port", args.grpc_port), ("http_port", args.http_port)) if v is not None}
    if args.sample or not config.datasets:
        changes["include_sample"] = True
    if args.device:  # PipelineRuntime reads decal's device vocabulary ("cuda:1" sets device_id)
        changes["pipeline"] = replace(config.pipeline, device=args.device)
    return replace(config, **changes)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .app import BindError, DecalServer

    try:
        config = load_config(args)
        server = DecalServer(config).start()
    except (ConfigError, BindError) as error:  # the user's to fix: one line naming the key, file or port
        print(f"decal serve: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger("decal.server").info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"decal serve: grpc {config.host}:{server.grpc_port}"
        + (f", http http://{config.host}:{server.http_port}" if server.http_port else "")
        + f", datasets {', '.join(server.config.datasets) or 'none'}, backend {server.servicer.backend}",
        flush=True,
    )
    if args.ready_file:
        tmp = Path(args.ready_file).with_suffix(".tmp")
        tmp.write_text(json.dumps({"grpc_port": server.grpc_port, "http_port": server.http_port, "pid": os.getpid()}))
        tmp.replace(args.ready_file)
    while not stop.wait(0.5):
        pass
    server.stop()
    print("decal serve: stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_serve_arguments(argparse.ArgumentParser(prog="decal serve", description="Serve augmented batches over gRPC"))
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
