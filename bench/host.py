"""Host mode of the benchmark: the copy-paste sources alone, no GPU needed.

What caps a GPU pipeline on the host is its ``external_source`` callable. This module times it
without decoding anything:

* **per thread**: the source called in a loop in one thread, ``time.thread_time`` CPU seconds
  per image, for the default :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource`
  (pycocotools masks at the original size) and the GPU-mask
  :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource` (descriptors gathered
  from the compiled index); for the latter also its ``columns`` step alone (no file reads);
* **workers**: a DALI pipeline made of the source alone, in DALI's thread (0) and in 1, 2, …
  worker processes (:mod:`decal.dali_pipes.core.parallel_source`), wall-clock images/s;
* **families** (:mod:`bench.host_families`): every copy-paste-family source (copy-paste,
  balanced, self-training, mosaic) as its loader builds it, host masks and descriptors, alone
  in DALI's thread: images per CPU second and per wall second, files read per sample;
* **LVIS-sized index** (``--lvis-images``/``--lvis-instances``, :mod:`bench.lvis_synth`), each
  step in a fresh process (:data:`LVIS_STEPS`): ``json.loads`` alone (the floor every reader
  pays); ``pycocotools.coco.COCO`` load time and memory; the index build (``CocoDataset``:
  parse, validate and compile; hash and save); its reopen (memory-mapped) and the GPU path's
  per-batch host work on it (descriptors, labels, crowd flags, no file reads), CPU time per
  image; and a ``GpuMaskCopyPasteLoader`` opened on the cached index with its source in two
  spawned worker processes, the memory of each worker; for comparison, the dataset's records
  as Python objects (what each worker held before it mapped the index) — with each process's
  resident and anonymous (heap) memory.

Entry points: :func:`main` (``python -m decal.bench.host``) and :func:`mode_host`, the ``host``
mode of :mod:`decal.bench.throughput` (bench data only). Results go to ``--out`` as JSON and, with
``--append-results``, as Markdown (device, date, command) to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .host_families import family_markdown, family_rows

__all__ = [
    "source_thread_rate", "columns_thread_rate", "workers_wall_rate", "main_thread_cost", "mode_host", "lvis_figures",
    "main",
]  # fmt: skip


def memory(pid: int | str = "self") -> dict[str, float]:
    """A process's memory in MiB (this one by default): ``rss`` and peak ``hwm``
    (``/proc/<pid>/status``); of the resident pages (``smaps_rollup``) the ``anonymous`` ones
    (heap: this process's alone) and the ``private``/``shared`` split (a memory-mapped index's
    pages count as private while no other process maps them, yet they are clean page-cache
    pages that any process shares); ``pss`` (proportional set size: each resident page divided
    by the number of processes mapping it, so N workers' PSS add up to what they hold together)
    and ``uss`` (unique set size: the pages no other process maps, what ending this process
    frees; equal to ``private``)."""
    out: dict[str, float] = {}
    keys = {"VmRSS": "rss", "VmHWM": "hwm"}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name = line.split(":")[0]
            if name in keys:
                out[keys[name]] = round(int(line.split()[1]) / 1024, 1)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in handle if line.endswith("kB\n")}
        out["private"] = round((fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024, 1)
        out["shared"] = round((fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)) / 1024, 1)
        out["anonymous"] = round(fields.get("Anonymous", 0) / 1024, 1)
        out["pss"] = round(fields.get("Pss", 0) / 1024, 1)
        out["uss"] = out["private"]
    except OSError:
        pass
    return out


def mapped_mib(pid: int | str, directory: str | Path) -> float:
    """Resident MiB of a process's file mappings under ``directory`` (``/proc/<pid>/smaps``):
    the pages of a memory-mapped index it has touched (page cache, shared by every process)."""
    prefix, inside, total = str(directory).rstrip("/") + "/", False, 0
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):  # a mapping's header line
                inside = line.rstrip("\n").split(None, 5)[-1].startswith(prefix)
            elif inside and head == "Rss:":
                total += int(line.split()[1])
    return round(total / 1024, 1)


def maps_file(pid: int | str, name_part: str) -> bool:
    """Whether a process maps a file whose name contains ``name_part`` (``/proc/<pid>/maps``):
    ``"libtorch"`` tells whether it imported torch."""
    with open(f"/proc/{pid}/maps") as handle:
        return any(name_part in line.rsplit("/", 1)[-1] for line in handle if "/" in line)


def child_pids() -> list[int]:
    """The ids of this process's children (``/proc/self/task/*/children``)."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(pids))


def _next_batch(source: Callable[[], Any]) -> Any:
    try:
        return source()
    except StopIteration:  # end of an epoch: the next call starts the next one
        return source()


def source_thread_rate(source: Any, batches: int, warmup: int = 1) -> dict[str, Any]:
    """Images per CPU second of ``source()`` in this thread (and per wall second)."""
    for _ in range(warmup):
        _next_batch(source)
    images, cpu0, wall0 = 0, time.thread_time(), time.perf_counter()
    for _ in range(batches):
        images += len(_next_batch(source)[0])
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return {"images": images, "cpu_s": round(cpu, 4), "images_per_cpu_s": round(images / cpu, 1),
            "images_per_wall_s": round(images / wall, 1)}


def columns_thread_rate(source: Any, batches: int) -> dict[str, Any]:
    """Images per CPU second of the source's ``columns`` step alone (payloads read before)."""
    from decal.dali_pipes.core.epoch_source import LoaderPosition

    order = source.epoch_order(0)
    work = []
    for k in range(batches):
        start = LoaderPosition(0, (k * source.batch_size) % max(1, len(order) - source.batch_size), k)
        items = order[start.cursor : start.cursor + source.batch_size].tolist()
        work.append((start, [source.read(source.dataset, i) for i in items]))
    images, cpu0 = 0, time.thread_time()
    for start, payloads in work:
        source.columns(start, start.cursor + len(payloads), payloads)
        images += len(payloads)
    cpu = time.thread_time() - cpu0
    return {"images": images, "cpu_s": round(cpu, 4), "images_per_cpu_s": round(images / cpu, 1)}


def workers_wall_rate(source: Any, workers: int, batches: int, warmup: int = 2, *,
                      start_method: str = "spawn", index_dir: str | Path | None = None) -> dict[str, Any]:
    """Wall-clock images/s of a DALI pipeline that only runs ``source`` (in DALI's thread with
    ``workers=0``, else in that many worker processes started with ``start_method``; spawn by
    default: the bench runs this mode after the GPU modes, and DALI refuses to fork once CUDA
    is initialised), and the memory of each worker process (:func:`memory`; with ``index_dir``, ``index`` is the
    resident part of its mapping of the index there, :func:`mapped_mib`) after the timed
    batches."""
    from nvidia.dali import fn, pipeline_def

    from decal.dali_pipes.core.epoch_source import LoaderPosition
    from decal.dali_pipes.core.parallel_source import BatchInfoSource

    source.restart(LoaderPosition())
    n = len(source.column_names)

    @pipeline_def(batch_size=source.batch_size, num_threads=1, device_id=None, prefetch_queue_depth=2,
                  py_num_workers=workers, py_start_method=start_method)
    def only_source():
        if workers:
            outs = fn.external_source(source=BatchInfoSource(source, LoaderPosition()), num_outputs=n, batch=True,
                                      batch_info=True, parallel=True, prefetch_queue_depth=max(2, workers))
        else:
            outs = fn.external_source(source=source, num_outputs=n, batch=True)
        return tuple(outs)

    pipe = only_source()
    pipe.build()

    def run() -> int:
        try:
            return len(pipe.run()[0])
        except StopIteration:
            pipe.reset()
            return len(pipe.run()[0])

    for _ in range(warmup):
        run()
    images, wall0 = 0, time.perf_counter()
    for _ in range(batches):
        images += run()
    wall = time.perf_counter() - wall0
    worker_memory = []
    for pid in child_pids():
        try:
            if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # multiprocessing's helper, not a worker
            worker_memory.append(memory(pid))
            worker_memory[-1]["torch"] = maps_file(pid, "libtorch")
            if index_dir is not None:
                worker_memory[-1]["index"] = mapped_mib(pid, index_dir)
        except OSError:  # exited meanwhile
            continue
    del pipe
    out = {"workers": workers, "images": images, "wall_s": round(wall, 3), "images_per_s": round(images / wall, 1)}
    if workers:
        out["worker_memory_mib"] = worker_memory
    return out


class _ThreadClock:
    """CPU seconds (``time.thread_time``) spent inside timed calls, in the calling thread."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def time(self, function: Callable[..., Any], *args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return function(*args)
        finally:
            self.seconds += time.thread_time() - t0


def main_thread_cost(loader: Any, batches: int, warmup: int = 2) -> dict[str, Any]:
    """Milliseconds of CPU time per batch that the thread iterating ``loader`` spends (its own
    ``time.thread_time``: DALI's worker threads, where decoding and the step run, are not
    counted), in three buckets: ``source`` (the ``external_source`` callable, which DALI calls
    in the thread that runs the pipeline), ``to_batch`` (DALI outputs to torch tensors) and
    ``feed`` (the rest: DALI's Python feeding of the columns, ``run``'s own work).

    On the GPU backend the same Python runs per batch, so this is the host's per-batch cap
    of the main thread, measured without a GPU. ``batches`` timed batches after ``warmup``
    (epochs wrap around)."""
    source, family = loader.source, loader.parts.family
    source_clock, batch_clock = _ThreadClock(), _ThreadClock()
    untimed = type(source)

    def timed_call(self: Any) -> Any:  # no arguments: DALI's batch-mode callable
        return source_clock.time(untimed.__call__, self)

    # a call looks ``__call__`` up on the type: give this one source a timed subclass
    source.__class__ = type(untimed.__name__, (untimed,), {"__call__": timed_call})
    loader._to_batch = lambda outputs: batch_clock.time(family.to_batch, outputs, loader.config)
    iterator, images = iter(loader), 0

    def next_batch() -> Any:
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(loader)
            return next(iterator)

    for _ in range(warmup):
        next_batch()
    source_clock.seconds = batch_clock.seconds = 0.0
    cpu0 = time.thread_time()
    for _ in range(batches):
        images += next_batch().images.shape[0]
    total = time.thread_time() - cpu0
    per_batch = 1000.0 / batches
    return {
        "batches": batches, "images": images,
        "ms_per_batch": round(total * per_batch, 2),
        "source_ms": round(source_clock.seconds * per_batch, 2),
        "feed_ms": round((total - source_clock.seconds - batch_clock.seconds) * per_batch, 2),
        "to_batch_ms": round(batch_clock.seconds * per_batch, 2),
    }  # fmt: skip


def main_thread_figures(data: tuple[Path, Path], batch_size: int, output_size: int, batches: int) -> dict[str, Any]:
    """:func:`main_thread_cost` of the GPU-mask loader and of the default loader on the CPU
    backend (``num_threads=2``)."""
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader, GpuMaskCopyPasteLoader

    options = dict(batch_size=batch_size, output_size=output_size, device="cpu", seed=0, num_threads=2)
    with GpuMaskCopyPasteLoader(*data, **options) as gpu_masks, CopyPasteLoader(*data, mask_source="host", **options) as host_masks:
        return {
            "GpuMaskCopyPasteLoader": main_thread_cost(gpu_masks, batches),
            "CopyPasteLoader (host masks)": main_thread_cost(host_masks, batches),
        }


def _sources(data: tuple[Path, Path], batch_size: int, output_size: int) -> tuple[Any, Any]:
    from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    options = dict(batch_size=batch_size, output_size=output_size, device="cpu", seed=0)
    with CopyPasteLoader(*data, **options) as host_masks, GpuMaskCopyPasteLoader(*data, **options) as gpu_masks:
        return host_masks.source, gpu_masks.source  # a source outlives its loader's pipeline


def mode_host(args: argparse.Namespace, data: tuple[Path, Path]) -> dict[str, Any]:
    """The per-thread and worker figures on the bench data (``--cpu-batch-size``,
    ``--output-size``; ``--host-batches`` batches of the GPU-mask source, fewer of the
    default one, which is ~30× slower), and the family rows (:func:`~bench.host_families.family_rows`,
    ``--family-batches``, default ``--host-batches``; 0 skips them) under ``families``."""
    batch_size, output_size = args.cpu_batch_size, args.output_size
    batches = getattr(args, "host_batches", 40)
    default, gpu_masks = _sources(data, batch_size, output_size)
    result: dict[str, Any] = {"batch_size": batch_size, "output_size": output_size}
    result["per_thread"] = {
        "CopyPasteSource": source_thread_rate(default, max(1, batches // 10)),
        "GpuMaskCopyPasteSource": source_thread_rate(gpu_masks, batches),
        "GpuMaskCopyPasteSource.columns": columns_thread_rate(gpu_masks, batches),
    }
    counts = [0] + [int(w) for w in str(getattr(args, "host_workers", "1,2")).split(",") if w.strip()]
    result["workers"] = [workers_wall_rate(gpu_masks, w, batches) for w in counts]
    result["images_per_s"] = result["per_thread"]["GpuMaskCopyPasteSource"]["images_per_cpu_s"]
    main_batches = getattr(args, "main_thread_batches", 8)
    if main_batches:
        result["main_thread"] = main_thread_figures(data, batch_size, output_size, main_batches)
    family_batches = getattr(args, "family_batches", None)
    family_batches = batches if family_batches is None else family_batches
    if family_batches:  # every copy-paste-family source, host masks and descriptors
        result["families"] = family_rows(data, batch_size, output_size, family_batches)
    return result


# --------------------------------------------------------------------------- LVIS-sized


def child(kind: str, json_path: str, image_dir: str, cache_dir: str, batch_size: int, output_size: int, batches: int) -> None:
    """One LVIS step in this (fresh) process; prints its figures as one JSON line."""
    import contextlib
    import io

    out: dict[str, Any] = {"kind": kind}
    t0 = time.perf_counter()
    if kind == "pycocotools":
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(json_path)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        out["instances"] = len(coco.anns)
    elif kind == "json":
        with open(json_path, "rb") as handle:
            json.loads(handle.read())
        out["load_s"] = round(time.perf_counter() - t0, 2)
    elif kind == "build":
        from decal.dali_pipes.coco.index import index_key
        from decal.dali_pipes.coco.reader import CocoDataset

        dataset = CocoDataset(json_path, image_dir)  # json, validation and compile in one
        t1 = time.perf_counter()
        index = dataset.index
        key = index_key(json_path, image_dir, "raise", Path(cache_dir))
        index.save(Path(cache_dir) / key)
        t2 = time.perf_counter()
        out.update(compile_s=round(t1 - t0, 2), hash_and_save_s=round(t2 - t1, 2),
                   total_s=round(t2 - t0, 2), images=len(index), instances=index.num_instances,
                   vertices=len(index.verts))
        out["index_bytes"] = sum(f.stat().st_size for f in (Path(cache_dir) / key).iterdir())
    elif kind == "reopen":
        from decal.dali_pipes.coco.index import batch_descriptors, open_index
        from decal.dali_pipes.core.scale_jitter import ScaleJitter, draw_geometry
        from decal.kernels.geometry_batch import jitter_geometries

        index = open_index(json_path, image_dir, cache_dir=cache_dir)
        out["open_s"] = round(time.perf_counter() - t0, 3)
        out["memory_after_open_mib"] = memory()
        rng = np.random.default_rng(0)
        jitter = ScaleJitter.parse("lsj")
        images_done, cpu0 = 0, time.thread_time()
        for _ in range(batches):
            images = rng.integers(0, len(index), batch_size)
            draws = draw_geometry(rng, batch_size, jitter, 0.5)
            geometries = jitter_geometries(index.heights[images], index.widths[images], draws.scale,
                                           draws.crop_x, draws.crop_y, draws.flip, output_size)
            desc, bounds = batch_descriptors(index, images, geometries)
            desc.split(bounds)
            ranges = np.stack([index.inst_offsets[images], index.inst_offsets[images + 1]], axis=1).tolist()
            [np.array(index.labels[b:e]) for b, e in ranges]
            [np.array(index.iscrowd[b:e]) for b, e in ranges]
            images_done += batch_size
        cpu = time.thread_time() - cpu0
        out.update(images=images_done, cpu_s=round(cpu, 3), images_per_cpu_s=round(images_done / cpu, 1))
    elif kind == "workers":
        os.environ["DECAL_INDEX_DIR"] = cache_dir  # the loader opens the index built above
        from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader

        loader = GpuMaskCopyPasteLoader(json_path, image_dir, batch_size=batch_size, output_size=output_size,
                                        device="cpu", seed=0)
        out["loader_open_s"] = round(time.perf_counter() - t0, 3)
        out["memory_after_open_mib"] = memory()
        with loader:
            out.update(workers_wall_rate(loader.source, 2, batches, start_method="spawn",
                                         index_dir=loader.dataset.index.directory))
    elif kind == "objects":
        from decal.dali_pipes.coco.reader import CocoDataset

        dataset = CocoDataset.open(json_path, image_dir, cache_dir=cache_dir)
        records = list(dataset.records)  # what each worker held before: a CocoDataset of Python objects
        out.update(objects_s=round(time.perf_counter() - t0, 2), images=len(records))
    out["memory_mib"] = memory()
    print(json.dumps(out), flush=True)


def _in_child(kind: str, json_path: Path, image_dir: Path, cache_dir: Path, batch_size: int, output_size: int, batches: int) -> dict[str, Any]:
    code = (f"from decal.bench.host import child; child({kind!r}, {str(json_path)!r}, {str(image_dir)!r}, "
            f"{str(cache_dir)!r}, {batch_size}, {output_size}, {batches})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


#: The LVIS-sized steps, each in a fresh process, in this order (``build`` makes the index the
#: later ones open).
LVIS_STEPS = ("json", "pycocotools", "build", "reopen", "workers", "objects")


def lvis_figures(root: Path, num_images: int, num_instances: int, *, batch_size: int, output_size: int, batches: int,
                 ab_rounds: int = 0) -> dict[str, Any]:
    """Generate (once) the LVIS-sized json and time the :data:`LVIS_STEPS`, each in a fresh
    process. The index cache is emptied first, so the build is a cold one. Then ``ab_rounds``
    rounds of pycocotools' load and a cold build, alternating (on a shared machine one pair of
    figures says little)."""
    import shutil

    from .lvis_synth import make_lvis_like

    t0 = time.perf_counter()
    json_path, image_dir = make_lvis_like(root, num_images, num_instances)
    result: dict[str, Any] = {"generate_s": round(time.perf_counter() - t0, 1), "json_mib": round(json_path.stat().st_size / 2**20, 1)}
    cache = root / "index_cache"
    shutil.rmtree(cache, ignore_errors=True)
    for kind in LVIS_STEPS:
        print(f"decal bench host: LVIS-sized {kind} ...", flush=True)
        result[kind] = _in_child(kind, json_path, image_dir, cache, batch_size, output_size, batches)
    if "load_s" in result["pycocotools"] and "total_s" in result["build"]:
        result["build_over_pycocotools"] = round(result["build"]["total_s"] / result["pycocotools"]["load_s"], 2)
    rounds = []
    for k in range(ab_rounds):
        print(f"decal bench host: LVIS-sized A/B round {k + 1} of {ab_rounds} ...", flush=True)
        pair: dict[str, Any] = {}
        for kind in ("pycocotools", "build"):
            if kind == "build":
                shutil.rmtree(cache, ignore_errors=True)
            pair[f"load_before_{kind}"] = round(os.getloadavg()[0], 1)
            pair[kind] = _in_child(kind, json_path, image_dir, cache, batch_size, output_size, batches)
        rounds.append(pair)
    if rounds:
        result["ab_rounds"] = rounds
    return result


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    """The figures as a Markdown section (device, date, command first)."""
    host = results["host"]
    lines = [
        f"### {results['date']} — host mode, {results['device']} ({results['cpu']})",
        "",
        f"Command: `{results['command']}`  ",
        f"Bench data: {results['data']}; batch {host['batch_size']}, output {host['output_size']}².  ",
        f"Load average (1, 5, 15 min) before / after: {results['load_before']} / {results['load_after']}.",
        "",
        "| source (one thread) | images/s per CPU second |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {r['images_per_cpu_s']} |" for name, r in host["per_thread"].items()]
    lines += ["", "| GpuMaskCopyPasteSource in DALI | images/s (wall) |", "| --- | ---: |"]
    lines += [f"| {'in DALI thread' if r['workers'] == 0 else str(r['workers']) + ' worker(s)'} | {r['images_per_s']} |"
              for r in host["workers"]]
    if host.get("main_thread"):
        lines += ["", "| loader, CPU backend (the iterating thread only) | main-thread ms per batch | source | feed | to batch |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {name} | {r['ms_per_batch']} | {r['source_ms']} | {r['feed_ms']} | {r['to_batch_ms']} |"
                  for name, r in host["main_thread"].items()]
    if host.get("families"):
        lines += family_markdown(host["families"])
    lvis = results.get("lvis")
    if lvis:
        build, reopen, coco = lvis["build"], lvis["reopen"], lvis["pycocotools"]
        parse, workers = lvis["json"], lvis["workers"]
        lines += ["", f"LVIS-sized json ({results['lvis_size']}, {lvis['json_mib']} MiB; generated in {lvis['generate_s']} s):", "",
                  "| step | seconds | RSS MiB (peak) | anonymous MiB |", "| --- | ---: | ---: | ---: |"]
        if "error" not in parse:
            lines.append(f"| json.loads alone (what every loader pays) | {parse['load_s']} | {parse['memory_mib']['rss']} ({parse['memory_mib']['hwm']}) | {parse['memory_mib'].get('anonymous', '—')} |")
        if "error" not in coco:
            lines.append(f"| pycocotools.coco.COCO load | {coco['load_s']} | {coco['memory_mib']['rss']} ({coco['memory_mib']['hwm']}) | {coco['memory_mib'].get('anonymous', '—')} |")
        if "error" not in build:
            lines.append(f"| index build: CocoDataset (parse, validate, compile) {build['compile_s']} s + hash/save {build['hash_and_save_s']} s | {build['total_s']} | {build['memory_mib']['rss']} ({build['memory_mib']['hwm']}) | {build['memory_mib'].get('anonymous', '—')} |")
        if "error" not in reopen:
            lines.append(f"| index reopen (mmap) | {reopen['open_s']} | {reopen['memory_after_open_mib']['rss']} | {reopen['memory_after_open_mib'].get('anonymous', '—')} |")
            lines.append(f"| + {reopen['images']} images of GPU-path host work ({reopen['images_per_cpu_s']} images/s per CPU second) | {reopen['cpu_s']} | {reopen['memory_mib']['rss']} ({reopen['memory_mib']['hwm']}) | {reopen['memory_mib'].get('anonymous', '—')} |")
        if "error" not in workers:
            lines.append(f"| GpuMaskCopyPasteLoader opened on the cached index (main process) | {workers['loader_open_s']} | {workers['memory_after_open_mib']['rss']} | {workers['memory_after_open_mib'].get('anonymous', '—')} |")
            for k, mem in enumerate(workers.get("worker_memory_mib", [])):
                lines.append(f"| its source worker {k + 1} of 2 (spawn), after {workers['images']} timed images; of its RSS, index pages: {mem.get('index', '—')} MiB; torch {'imported' if mem.get('torch') else 'not imported'}; PSS {mem.get('pss', '—')} MiB, USS {mem.get('uss', '—')} MiB | | {mem['rss']} ({mem['hwm']}) | {mem.get('anonymous', '—')} |")
        objects = lvis["objects"]
        if "error" not in objects:
            lines.append(f"| for comparison: the same records as Python objects (ImageRecord, InstanceAnnotation, polygon lists), what each worker held before | {objects['objects_s']} | {objects['memory_mib']['rss']} ({objects['memory_mib']['hwm']}) | {objects['memory_mib'].get('anonymous', '—')} |")
        for name in LVIS_STEPS:
            if "error" in lvis[name]:
                lines.append(f"| {name} | error: {lvis[name]['error']} | | |")
        rounds = [r for r in lvis.get("ab_rounds", []) if "load_s" in r["pycocotools"] and "total_s" in r["build"]]
        if rounds:
            lines += ["", "Alternating rounds (each step in a fresh process, cold build):", "",
                      "| round | pycocotools load s | index build s | build / pycocotools | 1-min load before (pycocotools / build) |",
                      "| --- | ---: | ---: | ---: | ---: |"]
            for k, r in enumerate(rounds, 1):
                c, b = r["pycocotools"]["load_s"], r["build"]["total_s"]
                lines.append(f"| {k} | {c} | {b} | {round(b / c, 2)} | {r['load_before_pycocotools']} / {r['load_before_build']} |")
            total_c = sum(r["pycocotools"]["load_s"] for r in rounds)
            total_b = sum(r["build"]["total_s"] for r in rounds)
            lines.append(f"| all | {round(total_c, 2)} | {round(total_b, 2)} | {round(total_b / total_c, 2)} | |")
        if "build_over_pycocotools" in lvis:
            lines += ["", f"Index build / pycocotools load = {lvis['build_over_pycocotools']}; index on disk "
                          f"{round(build['index_bytes'] / 2**20, 1)} MiB."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m decal.bench.host", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("bench/data"), help="bench dataset directory (made if missing)")
    p.add_argument("--num-images", type=int, default=128, help="bench dataset size")
    p.add_argument("--cpu-batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--output-size", type=int, default=1024, help="S, output side")
    p.add_argument("--host-batches", type=int, default=40, help="timed batches per figure")
    p.add_argument("--host-workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--main-thread-batches", type=int, default=8,
                   help="timed batches of each loader for the main-thread figure (0: skip it)")
    p.add_argument("--family-batches", type=int, default=None,
                   help="timed batches of each family's descriptor source (host masks: a tenth); "
                        "default --host-batches, 0: skip the family rows")
    p.add_argument("--lvis-images", type=int, default=0, help="LVIS-sized json: images (0: skip that part)")
    p.add_argument("--lvis-instances", type=int, default=1_200_000, help="LVIS-sized json: instances")
    p.add_argument("--lvis-ab-rounds", type=int, default=0,
                   help="then this many alternating rounds of pycocotools load / cold index build")
    p.add_argument("--lvis-root", type=Path, default=Path("bench/lvis_like"), help="where the LVIS-sized json goes")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for host.json")
    p.add_argument("--append-results", type=Path, default=None, help="append the Markdown to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .data import make_bench_dataset

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.cpu_batch_size < 1 or args.host_batches < 1 or args.output_size < 1 or args.main_thread_batches < 0:
        print("decal bench host: --cpu-batch-size, --host-batches and --output-size must be >= 1", file=sys.stderr)
        return 2
    if args.family_batches is not None and args.family_batches < 0:
        print("decal bench host: --family-batches must be >= 0", file=sys.stderr)
        return 2
    if args.lvis_ab_rounds < 0:
        print("decal bench host: --lvis-ab-rounds must be >= 0", file=sys.stderr)
        return 2
    data = make_bench_dataset(args.data, args.num_images)
    cpu = f"{os.cpu_count()}-core CPU {platform.processor() or platform.machine()}"
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m decal.bench.host " + shlex.join(argv),
        "device": "no GPU", "cpu": cpu,
        "data": f"bench.data, {args.num_images} images ~640x480", "load_before": [round(v, 2) for v in os.getloadavg()],
    }
    results["host"] = mode_host(args, data)
    if args.lvis_images:
        results["lvis_size"] = f"{args.lvis_images} images, {args.lvis_instances} instances"
        results["lvis"] = lvis_figures(args.lvis_root, args.lvis_images, args.lvis_instances,
                                       batch_size=args.cpu_batch_size, output_size=args.output_size,
                                       batches=args.host_batches, ab_rounds=args.lvis_ab_rounds)
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    print(table)
    if args.append_results:
        with open(args.append_results, "a") as handle:
            handle.write("\n" + table + "\n")
    return 1 if results.get("lvis") and any("error" in results["lvis"][k] for k in LVIS_STEPS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
