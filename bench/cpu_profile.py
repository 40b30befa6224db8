"""Where the CPU loader's time goes: ``CopyPasteLoader(device="cpu")`` split into its stages.

Each stage is timed on its own, in one thread, over the same batches of the bench data
(``bench/data.py``), as CPU seconds per image (``time.process_time`` of this process):

* ``source``: ``CopyPasteSource`` calls (file bytes + pycocotools raster at the original size,
  instances outside the window dropped as the loader does), with the raster alone reported too;
* ``decode``: DALI's CPU JPEG decoder on the batch's bytes (``num_threads=1``);
* ``geometry``: decode + resize + crop + flip of images and masks (``num_threads=1``) minus
  decode; ``geometry_unpruned`` the same with every instance kept (the loader before issue 13);
* ``copy_paste_step``: :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep` on the
  geometry's outputs (NumPy): CPU seconds of the batched twins (the step before issue 13), then
  wall seconds of the batched twins, of the chunked step in one thread, and in ``--step-threads``;
* ``iterator``: the loader's ``_to_batch`` (DLPack to torch, the target dicts).

Run: ``python -m decal.bench.cpu_profile --data out/bench-data --batches 6`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["add_data_arguments", "profile_stages", "main"]


def _cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, list[Any]]:
    out = []
    t0 = time.process_time()
    for _ in range(repeats):
        out.append(fn())
    return time.process_time() - t0, out


def _wall(fn: Callable[[], Any], repeats: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - t0


def profile_stages(data: tuple[Path, Path], *, batch_size: int, output_size: int, batches: int,
                   step_threads: int, seed: int = 0) -> dict[str, Any]:
    """Seconds per image of each stage (see the module docstring); ``batches`` batches of
    ``batch_size`` images at ``output_size``², LSJ + Copy-Paste."""
    from nvidia.dali import fn, pipeline_def, types

    from decal.dali_pipes.copy_paste.pipeline import CopyPasteStep
    from decal.dali_pipes.copy_paste.source import CopyPasteSource
    from decal.dali_pipes.core.epoch_source import LoaderPosition
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
    from decal.kernels.copy_paste import CopyPasteParams

    loader = CopyPasteLoader(*data, batch_size=batch_size, output_size=output_size, jitter="lsj", seed=seed,
                             device="cpu", num_threads=1, drop_last=True)
    source: CopyPasteSource = loader.source
    images = batches * batch_size
    result: dict[str, Any] = {"batch_size": batch_size, "output_size": output_size, "batches": batches}

    source.prune_window_size = None
    _, unpruned = _cpu(source, batches)
    source.restart(LoaderPosition())
    source.prune_window_size = output_size
    source_cpu, columns = _cpu(source, batches)
    result["source"] = source_cpu / images
    dataset = loader.dataset
    indices = [i for produced in source.produced for i in produced.dataset_indices]
    raster_cpu, _ = _cpu(lambda: [dataset.rasterize_masks(dataset[i]) for i in indices], 1)
    result["source_raster"] = raster_cpu / images

    class Replay:
        def __init__(self, columns: list[Any]) -> None:
            self.columns = columns
            self.k = 0

        def __call__(self) -> tuple[list[Any], ...]:
            batch = self.columns[self.k % len(self.columns)]
            self.k += 1
            return batch

    def graph(geometry: bool, columns: list[Any]) -> Any:
        @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, prefetch_queue_depth=1,
                      exec_async=False, exec_pipelined=False)
        def pipe():
            enc, masks, labels, iscrowd, _, scale, cx, cy, flip, position = fn.external_source(
                source=Replay(columns), num_outputs=len(CopyPasteSource.column_names), batch=True,
                layout=["", "HWC", "", "", "", "", "", "", "", ""])
            img = fn.decoders.image(enc, device="cpu", output_type=types.RGB)
            if not geometry:
                return (img,)
            longer = scale * float(output_size)
            img = fn.resize(img, resize_longer=longer, antialias=True)
            masks = fn.resize(masks, resize_longer=longer, interp_type=types.INTERP_NN, antialias=False)
            win = dict(crop=(output_size, output_size), crop_pos_x=cx, crop_pos_y=cy, out_of_bounds_policy="pad")
            img = fn.flip(fn.crop(img, fill_values=114.0, **win), horizontal=flip)
            masks = fn.flip(fn.crop(masks, fill_values=0.0, **win), horizontal=flip)
            return img, masks, labels, iscrowd, position

        p = pipe()
        p.build()
        return p

    decode_pipe = graph(False, columns)
    decode_cpu, _ = _cpu(decode_pipe.run, batches)
    result["decode"] = decode_cpu / images
    geom_pipe = graph(True, columns)
    geom_cpu, outs = _cpu(geom_pipe.run, batches)
    result["geometry"] = max(0.0, geom_cpu - decode_cpu) / images
    unpruned_cpu, _ = _cpu(graph(True, unpruned).run, batches)
    result["geometry_unpruned"] = max(0.0, unpruned_cpu - decode_cpu) / images

    host = [[[np.array(t) for t in out] for out in o] for o in outs]
    serial = CopyPasteStep(CopyPasteParams())
    step_cpu, _ = _cpu(lambda: [serial(*b) for b in host], 1)
    result["copy_paste_step"] = step_cpu / images
    result["copy_paste_step_wall_serial"] = _wall(lambda: [serial(*b) for b in host], 1) / images
    one = CopyPasteStep(CopyPasteParams(), threads=1)
    result["copy_paste_step_wall_1_thread"] = _wall(lambda: [one(*b) for b in host], 1) / images
    threaded = CopyPasteStep(CopyPasteParams(), threads=step_threads)
    result["copy_paste_step_wall_threads"] = _wall(lambda: [threaded(*b) for b in host], 1) / images
    result["step_threads"] = step_threads

    loader_pipe_batches = []
    it = iter(loader)
    for _ in range(2):
        loader_pipe_batches.append(next(it))
    pipe = loader._pipeline
    raw = pipe.run()
    iter_cpu, _ = _cpu(lambda: loader._to_batch(raw), 20)
    result["iterator"] = iter_cpu / (20 * batch_size)
    loader.close()
    return result


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The CPU scripts' shared flags: bench data folder and size, batch, output size, batches."""
    p.add_argument("--data", type=Path, default=Path("out/bench-data"))
    p.add_argument("--num-images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--output-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=6)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(p)
    p.add_argument("--step-threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    from .data import make_bench_dataset

    data = make_bench_dataset(args.data, args.num_images)
    stages = profile_stages(data, batch_size=args.batch_size, output_size=args.output_size,
                            batches=args.batches, step_threads=args.step_threads)
    stages["loadavg"] = os.getloadavg()
    print(json.dumps({k: (round(v * 1000, 2) if isinstance(v, float) else v) for k, v in stages.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
