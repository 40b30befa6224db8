"""Every served family, local vs remote: images/s of the local loader and of ``RemoteLoader``
from a server on loopback, and the bytes per image on the wire (default wire options: raw
images, bit-packed + zlib masks), on the same data and options.

    python -m decal.bench.family_stream_bench --output-size 256 --batches 8 --out bench/results/family_stream.json

Data: ``bench/data.py``'s synthetic COCO (real photographs, random polygons) for the instance
families; its images split into two class folders for CutMix and CP² (and as the unlabelled
second set of self-training). The server runs in this process (a thread; it shares the GIL
with the client, so the remote rate is a lower bound of a two-process setup, see
``bench/stream_bench.py`` for that one for copy-paste). Each loader discards one batch
(pipeline start-up) and times the next ``--batches``. Nothing here is asserted; results go to
JSON and stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

def _image_folder(images: Path, root: Path) -> Path:
    """``root/class_{0,1}/`` holding symlinks to ``images``' files, alternately."""
    for i, path in enumerate(sorted(images.glob("*.jpg"))):
        target = root / f"class_{i % 2}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path.resolve())
    return root


def _timed(loader: Any, batches: int) -> tuple[float, list[Any]]:
    """(seconds, the batches) of ``batches`` batches after one warm-up batch (crossing epochs)."""
    kept: list[Any] = []
    start, seen = 0.0, -1
    while seen < batches:
        for batch in loader:
            seen += 1
            if seen == 0:
                start = time.perf_counter()
                continue
            kept.append(batch)
            if seen >= batches:
                break
    return time.perf_counter() - start, kept


def _wire_bytes(pipeline: str, batches: list[Any]) -> dict[str, float]:
    """Serialized bytes per image of ``batches`` as the server encodes them (default wire
    options), split into images / masks / the rest."""
    from types import SimpleNamespace

    from decal.server.pipelines import PIPELINES
    from decal.server.stream_service import encode_response
    from decal.server.wire import WireOptions

    plan = SimpleNamespace(pipeline=PIPELINES[pipeline], wire=WireOptions())
    totals: dict[str, float] = {}
    images = 0
    for batch in batches:
        _, count, parts = encode_response(batch, plan)
        images += count
        for key, value in parts.items():
            totals[key] = totals.get(key, 0) + value
    return {key: value / max(1, images) for key, value in totals.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from decal.bench.data import make_bench_dataset
    from decal.dali_pipes import BalancedCopyPasteLoader, CopyPasteLoader, CP2Loader, CutMixLoader, MosaicLoader, SelfTrainingLoader
    from decal.server.app import DecalServer
    from decal.server.config import DatasetEntry, Limits, ServerConfig
    from decal.server.remote_loader import RemoteLoader

    work = Path(args.data or tempfile.mkdtemp(prefix="decal-family-bench-"))
    annotations, images = make_bench_dataset(work / "coco", args.images, seed=0)
    folder = _image_folder(images, work / "folder")
    common = {"batch_size": args.batch_size, "output_size": args.output_size, "seed": 0}
    local = {"device": "cpu", "num_threads": args.threads}
    families: list[tuple[str, str, dict[str, Any], Callable[[], Any]]] = [
        ("copy-paste", "coco", {}, lambda: CopyPasteLoader(annotations, images, **common, **local)),
        ("balanced-copy-paste", "coco", {}, lambda: BalancedCopyPasteLoader(annotations, images, **common, **local)),
        ("self-training", "coco", {"second_dataset": "second"},
         lambda: SelfTrainingLoader(annotations, images, second_images=folder / "class_0", **common, **local)),
        ("mosaic", "coco", {}, lambda: MosaicLoader(annotations, images, **common, **local)),
        ("cutmix", "folder", {}, lambda: CutMixLoader(folder, **common, **local)),
        ("cp2", "folder", {}, lambda: CP2Loader(folder, **common, **local)),
    ]  # fmt: skip
    config = ServerConfig(
        datasets={
            "coco": DatasetEntry("coco", annotations, images),
            "folder": DatasetEntry("folder", None, folder),
            "second": DatasetEntry("second", None, folder / "class_0"),  # self-training's second set
        },
        host="127.0.0.1", grpc_port=0, http_port=-1,
        limits=Limits(max_output_size=4096, max_stream_bytes=1 << 40),
    )  # fmt: skip
    rows = []
    server = DecalServer(config, backend="cpu").start()
    try:
        address = f"127.0.0.1:{server.grpc_port}"
        for name, dataset, extra, make_local in families:
            if args.only and name not in args.only:
                continue
            with make_local() as local:
                seconds, kept = _timed(local, args.batches)
            wire = _wire_bytes(name, kept)
            local_images, kept = sum(len(b) for b in kept), []
            with RemoteLoader(address, dataset, pipeline=name, prefetch=2, **common, **extra) as remote:
                remote_seconds, remote_kept = _timed(remote, args.batches)
            row = {
                "pipeline": name,
                "local_images_per_s": local_images / seconds,
                "remote_images_per_s": sum(len(b) for b in remote_kept) / remote_seconds,
                "wire_bytes_per_image": wire,
            }
            rows.append(row)
            print(f"{name:>20}: local {row['local_images_per_s']:6.1f} img/s, remote {row['remote_images_per_s']:6.1f} img/s, "
                  f"{wire['total'] / 1e3:8.1f} kB/image on the wire ({wire['masks'] / 1e3:.1f} kB masks)", flush=True)  # fmt: skip
    finally:
        server.stop(grace=0.5)
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "options": {**common, "batches": args.batches, "images": args.images, "threads": args.threads},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per loader (after one warm-up batch)")
    parser.add_argument("--images", type=int, default=32, help="images of the synthetic COCO dataset")
    parser.add_argument("--threads", type=int, default=2, help="DALI CPU threads of the local loaders")
    parser.add_argument("--only", nargs="*", help="pipelines to run (default: all)")
    parser.add_argument("--data", help="folder for the synthetic data (default: a temporary one)")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args(argv)
    results = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
