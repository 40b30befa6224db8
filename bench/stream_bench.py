"""Stream vs local: images/s and MB/s through 1 and 4 gRPC streams on loopback, against the
local iterator in the same run, for each wire option; plus the exact bytes per image of each
wire option on the same batches.

    python bench/stream_bench.py --output-size 256 --batches 100 --out bench/results/stream_bench.json

Setup: the server is a separate process (``python -m decal.server.serve``), clients are
separate processes too (a spawn pool of 4), so no two sides share a GIL. Each client
discards ``--warmup`` batches (pipeline start-up) and times the next ``--batches``; the
4-stream figure is total images over the slowest client's time. The local iterator runs
before and after the streams of each count (machine noise shows as their difference). Up to
~5 batches are already in flight (server queue, gRPC, client prefetch) when a stream's timer
starts, so streams read up to ~5 % high at 100 timed batches. Streams run across epochs
(the dataset is small: the sample has 2 photos), so a stream never stops for an epoch.
Bytes per image are computed offline by encoding the local iterator's batches with each
wire option (exact serialized sizes, split into images / masks / the rest).

Nothing here is asserted; results go to JSON and stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

WIRE_OPTIONS: list[dict[str, Any]] = [
    {"name": "raw+raw", "image_encoding": "raw", "mask_encoding": "raw"},
    {"name": "raw+bitpack", "image_encoding": "raw", "mask_encoding": "bitpack"},
    {"name": "raw+bitpack+zlib", "image_encoding": "raw", "mask_encoding": "bitpack+zlib"},
    {"name": "zlib+bitpack+zlib", "image_encoding": "zlib", "mask_encoding": "bitpack+zlib"},
    {"name": "jpeg90+bitpack+zlib", "image_encoding": "jpeg", "mask_encoding": "bitpack+zlib", "jpeg_quality": 90},
    {"name": "jpeg75+bitpack+zlib", "image_encoding": "jpeg", "mask_encoding": "bitpack+zlib", "jpeg_quality": 75},
]


def _loader_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"batch_size": args.batch_size, "output_size": args.output_size, "seed": 0}


# ----------------------------------------------------------------------------- workers (spawned)


def _remote_worker(job: dict[str, Any]) -> dict[str, Any]:
    from decal.server.remote_loader import RemoteLoader

    wire = {k: v for k, v in job["wire"].items() if k != "name"}
    loader = RemoteLoader(job["address"], job["dataset"], shard_id=job["shard"], num_shards=job["num_shards"], **wire, **job["options"])
    images = batches = 0
    start = None
    bytes_at_start = 0
    try:
        while batches < job["warmup"] + job["batches"]:
            for batch in loader:
                batches += 1
                if batches == job["warmup"]:
                    start, bytes_at_start = time.perf_counter(), loader.bytes_received
                elif batches > job["warmup"]:
                    images += len(batch)
                if batches >= job["warmup"] + job["batches"]:
                    break
        elapsed = time.perf_counter() - start
        return {"images": images, "seconds": elapsed, "bytes": loader.bytes_received - bytes_at_start}
    finally:
        loader.close()


def _local_worker(job: dict[str, Any]) -> dict[str, Any]:
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    loader = CopyPasteLoader(job["annotations"], job["images"], device="cpu", shard_id=job["shard"], num_shards=job["num_shards"], **job["options"])
    images = batches = 0
    start = None
    with loader:
        while batches < job["warmup"] + job["batches"]:
            for batch in loader:
                batches += 1
                if batches == job["warmup"]:
                    start = time.perf_counter()
                elif batches > job["warmup"]:
                    images += len(batch)
                if batches >= job["warmup"] + job["batches"]:
                    break
    return {"images": images, "seconds": time.perf_counter() - start, "bytes": 0}


def _aggregate(results: list[dict[str, Any]]) -> dict[str, float]:
    images = sum(r["images"] for r in results)
    seconds = max(r["seconds"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    return {
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 2),
        "MB_per_s": round(nbytes / seconds / 1e6, 3),
        "bytes_per_image": round(nbytes / images) if images else 0,
    }


# ----------------------------------------------------------------------------- bytes per image


def bytes_per_image(annotations: Path, images: Path, options: dict[str, Any], batches: int) -> dict[str, dict[str, float]]:
    """Serialized bytes per image of each wire option, on the local iterator's batches."""
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
    from decal.server.stream_service import batch_to_numpy
    from decal.server.wire import IMAGE_CODECS, MASK_CODECS, WireOptions, batch_part_bytes, encode_batch

    collected = []
    with CopyPasteLoader(annotations, images, device="cpu", **options) as loader:
        while len(collected) < batches:
            for batch in loader:
                collected.append((batch_to_numpy(batch), batch.position))
                if len(collected) >= batches:
                    break
    table = {}
    count = sum(arrays[0].shape[0] for arrays, _ in collected)
    instances = sum(len(t["labels"]) for arrays, _ in collected for t in arrays[1])
    for wire in WIRE_OPTIONS:
        opts = WireOptions(
            image_codec=IMAGE_CODECS[wire["image_encoding"]],
            mask_codec=MASK_CODECS[wire["mask_encoding"]],
            jpeg_quality=wire.get("jpeg_quality", 90),
        )
        totals = {"images": 0, "masks": 0, "other": 0, "total": 0}
        encode_seconds = 0.0
        for (imgs, targets), position in collected:
            t0 = time.perf_counter()
            message = encode_batch(imgs, targets, position, opts)
            encode_seconds += time.perf_counter() - t0
            for k, v in batch_part_bytes(message).items():
                totals[k] += v
        table[wire["name"]] = {
            **{f"{k}_bytes_per_image": round(v / count) for k, v in totals.items()},
            "encode_ms_per_image": round(encode_seconds / count * 1e3, 3),
        }
    table["_sample"] = {"images": count, "instances_per_image": round(instances / count, 2), "raw_image_bytes": 3 * options["output_size"] ** 2}
    return table


# ----------------------------------------------------------------------------- main


def start_server(config_path: Path, workdir: Path) -> tuple[subprocess.Popen, int]:
    ready = workdir / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "decal.server.serve", "--config", str(config_path), "--grpc-port", "0", "--http-port", "-1",
         "--ready-file", str(ready), "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["grpc_port"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per client")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu", help="server pipeline backend")
    parser.add_argument("--options", nargs="*", help="wire option names (default: all)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "stream_bench.json"))
    args = parser.parse_args(argv)

    from decal.dali_pipes.coco.sample_data import ensure_sample_dataset

    annotations, image_dir = ensure_sample_dataset()
    options = _loader_options(args)
    wires = [w for w in WIRE_OPTIONS if not args.options or w["name"] in args.options]
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(), "device": args.device},
        "dataset": "embedded sample (2 photos)",
        "options": options,
        "timed_batches_per_client": args.batches,
    }
    print("bytes per image ...", flush=True)
    results["bytes_per_image"] = bytes_per_image(annotations, image_dir, options, batches=8)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "server.toml"
        config.write_text(
            f'[server]\ninclude_sample = true\n[pipeline]\ndevice = "{args.device}"\nnum_threads = 2\n'
            "[limits]\nmax_streams = 8\n"
        )
        server, port = start_server(config, Path(tmp))
        address = f"127.0.0.1:{port}"
        context = mp.get_context("spawn")
        try:
            with context.Pool(max(args.streams)) as pool:
                # warm every worker process (imports, DALI start-up, first pipeline) untimed
                warm = {"annotations": str(annotations), "images": str(image_dir), "shard": 0, "num_shards": 1, "options": options, "warmup": 2, "batches": 3}
                pool.map(_local_worker, [warm] * max(args.streams), chunksize=1)
                throughput: dict[str, Any] = {}
                for n in args.streams:
                    jobs = [
                        {"annotations": str(annotations), "images": str(image_dir), "shard": i, "num_shards": n, "options": options,
                         "warmup": args.warmup, "batches": args.batches}
                        for i in range(n)
                    ]  # fmt: skip
                    print(f"local x{n} ...", flush=True)
                    throughput[f"local x{n}"] = _aggregate(pool.map(_local_worker, jobs))
                    for wire in wires:
                        print(f"{wire['name']} x{n} ...", flush=True)
                        remote_jobs = [{**job, "address": address, "dataset": "sample", "wire": wire} for job in jobs]
                        throughput[f"{wire['name']} x{n}"] = _aggregate(pool.map(_remote_worker, remote_jobs))
                    print(f"local x{n} (again, after the streams) ...", flush=True)
                    throughput[f"local x{n} (again)"] = _aggregate(pool.map(_local_worker, jobs))
                results["throughput"] = throughput
        finally:
            server.terminate()
            server.wait(timeout=60)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nbytes per image (output {args.output_size}x{args.output_size}, {results['bytes_per_image']['_sample']}):")
    print(f"  {'option':22s} {'total':>9s} {'images':>9s} {'masks':>9s} {'other':>7s} {'encode ms':>9s}")
    for name, row in results["bytes_per_image"].items():
        if not name.startswith("_"):
            print(f"  {name:22s} {row['total_bytes_per_image']:9d} {row['images_bytes_per_image']:9d} {row['masks_bytes_per_image']:9d} "
                  f"{row['other_bytes_per_image']:7d} {row['encode_ms_per_image']:9.3f}")  # fmt: skip
    print("\nthroughput (loopback):")
    print(f"  {'run':28s} {'images/s':>9s} {'MB/s':>8s} {'B/image':>9s}")
    for name, row in results["throughput"].items():
        print(f"  {name:28s} {row['images_per_s']:9.1f} {row['MB_per_s']:8.2f} {row['bytes_per_image']:9d}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
