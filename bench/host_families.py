"""Host mode, per family: every copy-paste-family source alone in DALI's thread.

The host side of each instance family (copy-paste, balanced, self-training, mosaic) is its
``external_source`` callable. :func:`family_rows` builds each family's source the way its
public loader does (the loader class itself: its constructor only assembles the family's
parts, :func:`~decal.dali_pipes.core.assembly.assemble`, and builds no DALI pipeline), once
with host masks (``mask_source="host"``: pycocotools rasters at the original size) and once
with mask descriptors (``mask_source="descriptors"``: what the GPU backend ships), and runs
it in a DALI pipeline made of that source alone, in DALI's thread (no workers):
:func:`source_in_dali_thread`.

Each row gives samples (output images) per CPU second of the source calls (``time.thread_time``
of the thread DALI calls it in), per wall second of the pipeline, and the files a sample reads
on average (a mosaic reads 1 file, or 4 when it is a 2×2 mosaic; a self-training sample reads
one file of either set). Self-training's second set is the bench data's image directory read
as unlabelled images (``second_images``, no ``second_annotations``).

Entry point: :func:`family_rows`, called by :func:`bench.host.mode_host`; :func:`family_markdown`
is its table in the mode's Markdown (``bench/host.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

__all__ = ["MASK_SOURCES", "family_sources", "source_in_dali_thread", "family_rows", "family_markdown"]

#: The two mask sources every copy-paste-family loader takes (option ``mask_source``).
MASK_SOURCES: tuple[Literal["host"], Literal["descriptors"]] = ("host", "descriptors")

#: Samples per CPU second of the host side per core that issue 10 asks for (a bench target).
TARGET_PER_CORE = 5000


def family_sources(
    data: tuple[Path, Path], masks: Literal["host", "descriptors"], batch_size: int, output_size: int
) -> dict[str, Any]:
    """Each family's source, by loader name, as that loader builds it on the CPU backend with
    ``mask_source=masks`` (seed 0, the loaders' defaults otherwise). ``data`` is the bench
    data's ``(json_path, image_dir)``; self-training's second set is ``image_dir`` as a
    directory of unlabelled images."""
    from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
    from decal.dali_pipes.mosaic.loader import MosaicLoader
    from decal.dali_pipes.self_training.loader import SelfTrainingLoader

    options = dict(batch_size=batch_size, output_size=output_size, device="cpu", seed=0, mask_source=masks)
    return {
        "CopyPasteLoader": CopyPasteLoader(*data, **options).source,
        "BalancedCopyPasteLoader": BalancedCopyPasteLoader(*data, **options).source,
        "SelfTrainingLoader (second set: image directory)": SelfTrainingLoader(
            *data, second_images=data[1], **options
        ).source,
        "MosaicLoader": MosaicLoader(*data, **options).source,
    }


class _CountedSource:
    """``source()`` with, per call, the CPU seconds of the calling thread, the samples made
    and the files read (the batch's epoch-order items plus the further items it holds: a
    mosaic's extra tiles, self-training's second-set images; from the source's own
    ``produced`` / ``produced_extra`` records)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.reset()

    def reset(self) -> None:
        self.cpu_s, self.samples, self.files = 0.0, 0, 0

    def __call__(self) -> Any:
        t0 = time.thread_time()
        try:
            columns = self.source()
        finally:
            self.cpu_s += time.thread_time() - t0
        self.samples += len(columns[0])
        self.files += len(self.source.produced[-1].dataset_indices) + len(self.source.produced_extra[-1])
        return columns


def source_in_dali_thread(source: Any, batches: int, warmup: int = 2) -> dict[str, Any]:
    """``source`` alone in a DALI pipeline (CPU, one thread, its callable in DALI's thread):
    after ``warmup`` runs, ``batches`` timed runs (epochs wrap around). Returns ``samples``
    (made by the source calls in the timed window; DALI calls it ahead of the runs),
    ``cpu_s``, ``images_per_cpu_s`` (samples / CPU seconds of those calls), ``images``,
    ``wall_s`` and ``images_per_wall_s`` (samples delivered by the timed runs / their wall
    seconds) and ``files_per_sample`` (files read per sample made)."""
    from nvidia.dali import fn, pipeline_def

    from decal.dali_pipes.core.epoch_source import LoaderPosition

    source.restart(LoaderPosition())
    counted = _CountedSource(source)

    @pipeline_def(batch_size=source.batch_size, num_threads=1, device_id=None, prefetch_queue_depth=2)
    def source_alone():
        return tuple(fn.external_source(source=counted, num_outputs=len(source.column_names), batch=True))

    pipe = source_alone()
    pipe.build()

    def delivered() -> int:
        try:
            return len(pipe.run()[0])
        except StopIteration:  # end of an epoch: the next run starts the next one
            pipe.reset()
            return len(pipe.run()[0])

    for _ in range(warmup):
        delivered()
    counted.reset()
    images, wall0 = 0, time.perf_counter()
    for _ in range(batches):
        images += delivered()
    wall = time.perf_counter() - wall0
    del pipe
    return {
        "samples": counted.samples, "cpu_s": round(counted.cpu_s, 4),
        "images_per_cpu_s": round(counted.samples / counted.cpu_s, 1),
        "images": images, "wall_s": round(wall, 3), "images_per_wall_s": round(images / wall, 1),
        "files_per_sample": round(counted.files / counted.samples, 2),
    }  # fmt: skip


def family_rows(data: tuple[Path, Path], batch_size: int, output_size: int, batches: int) -> dict[str, dict[str, Any]]:
    """:func:`source_in_dali_thread` of every family's source (:func:`family_sources`), by
    loader name, then by mask source: ``batches`` timed batches with descriptors, a tenth as
    many (at least 1) with host masks, which are 30–60× slower."""
    rows: dict[str, dict[str, Any]] = {}
    for masks in MASK_SOURCES:
        count = batches if masks == "descriptors" else max(1, batches // 10)
        for name, source in family_sources(data, masks, batch_size, output_size).items():
            rows.setdefault(name, {})[masks] = source_in_dali_thread(source, count)
    return rows


def family_markdown(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown lines of :func:`family_rows`: one row per family, host masks then
    descriptors (samples per CPU second / per wall second), files read per sample, and
    whether the descriptor source reaches :data:`TARGET_PER_CORE` per CPU second."""
    lines = [
        "", "| family source in DALI's thread | host masks: images/s per CPU s | wall | descriptors: images/s per CPU s "
        f"| wall | files per sample | descriptors ≥ {TARGET_PER_CORE:,}/CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]  # fmt: skip
    for name, by_masks in rows.items():
        host, desc = by_masks["host"], by_masks["descriptors"]
        meets = "yes" if desc["images_per_cpu_s"] >= TARGET_PER_CORE else "no"
        lines.append(f"| {name} | {host['images_per_cpu_s']} | {host['images_per_wall_s']} | {desc['images_per_cpu_s']} "
                     f"| {desc['images_per_wall_s']} | {desc['files_per_sample']} | {meets} |")  # fmt: skip
    return lines
