"""``decal stream``: the client smoke command — connect to a server, print its Info, pull a
few batches through :class:`RemoteLoader`, report throughput and bytes per image, and
optionally write a preview of what arrived::

    decal stream 127.0.0.1:50051 --dataset sample --batches 8 --image-encoding jpeg
    python -m decal.server.smoke 127.0.0.1:50051 --dataset sample

Exit status 0 when the batches arrived, 1 when the server refused or failed (the status
code and message are printed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from ..dali_pipes.core.backend import parse_device
from ..dali_pipes.core.cli_support import CliParser, add_device_flag, run_handler, split_debug
from .pipelines import PIPELINES, Payload

__all__ = ["add_stream_arguments", "run_stream", "main"]


def add_stream_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("address", help="host:port of the server's gRPC port")
    parser.add_argument("--dataset", default="sample", help="a dataset name registered on the server")
    parser.add_argument("--pipeline", default="copy-paste", choices=list(PIPELINES), help="the pipeline family to stream")
    parser.add_argument("--second-dataset", help="self-training: the registered dataset of the second set")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--output-size", type=int, help="default: the server's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-id", type=int, default=0)
    parser.add_argument("--num-shards", type=int, default=1)
    parser.add_argument("--image-encoding", choices=["raw", "zlib", "jpeg"], default="raw")
    parser.add_argument("--mask-encoding", choices=["bitpack+zlib", "bitpack", "raw"], default="bitpack+zlib")
    parser.add_argument("--token-env", default="DECAL_TOKEN", help="environment variable holding the token (if set)")
    parser.add_argument("--tls", help="PEM root certificate of the server (enables TLS)")
    add_device_flag(parser, default="cpu", what="where the received tensors go")
    parser.add_argument("--preview", help="write the received images as a preview PNG here")
    return parser


def run_stream(args: argparse.Namespace) -> int:
    import grpc

    from .remote_loader import RemoteLoader, RemoteLoaderError

    options = {"output_size": args.output_size} if args.output_size else {}
    loader = RemoteLoader(
        args.address,
        args.dataset,
        pipeline=args.pipeline,
        second_dataset=args.second_dataset,
        batch_size=args.batch_size,
        seed=args.seed,
        shard_id=args.shard_id,
        num_shards=args.num_shards,
        token=os.environ.get(args.token_env) or None,
        image_encoding=args.image_encoding,
        mask_encoding=args.mask_encoding,
        tls=args.tls or False,
        device=parse_device(args.device, "--device").torch_device(),
        max_retries=3,
        connect_timeout=10,
        **options,
    )
    try:
        info = loader.info()
    except grpc.RpcError as error:
        print(f"decal stream: Info failed: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(f"server {args.address}: decal {info.version}, backend {info.backend}, datasets {[d.name for d in info.datasets]}")
    print(f"  limits: max_streams={info.limits.max_streams} max_batch_size={info.limits.max_batch_size} "
          f"max_output_size={info.limits.max_output_size} max_stream_bytes={info.limits.max_stream_bytes}")  # fmt: skip
    shown = []
    images = batches = 0
    first_at = None
    started = time.perf_counter()
    try:
        while batches < args.batches:
            for batch in loader:
                if first_at is None:
                    first_at = time.perf_counter()
                batches += 1
                images += len(batch)
                if PIPELINES[args.pipeline].payload is Payload.INSTANCES:  # the preview draws instances
                    shown += [(batch.images[i], batch.targets[i]) for i in range(len(batch))][: max(0, 8 - len(shown))]
                if batches >= args.batches:
                    break
        received = loader.bytes_received
        names = {k: v.get("name", str(k)) for k, v in loader.categories.items()}
    except RemoteLoaderError as error:
        print(f"decal stream: {error}", file=sys.stderr)
        return 1
    finally:
        loader.close()
    elapsed = time.perf_counter() - started
    print(f"  {batches} batches, {images} images in {elapsed:.2f} s (first batch after {((first_at or started) - started):.2f} s)")
    print(f"  {images / elapsed:.1f} images/s, {received / elapsed / 1e6:.2f} MB/s, {received / max(images, 1) / 1e3:.1f} kB/image "
          f"({args.image_encoding} images, {args.mask_encoding} masks), reconnects {loader.reconnects}")  # fmt: skip
    if args.preview and shown:
        from ..dali_pipes.preview.instances import render_grid

        path = render_grid(shown, args.preview, category_names=names, title=f"decal stream from {args.address}")
        print(f"  preview: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug = split_debug(argv)
    parser = add_stream_arguments(CliParser(prog="decal stream", description="Pull batches from a decal server"))
    return run_handler(run_stream, parser.parse_args(argv), prog="decal stream", debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
