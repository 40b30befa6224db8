"""The CPU loader before and after issue 13's changes, interleaved in one process.

"Before" is :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoader` with its step replaced by
``CopyPasteStep(params)`` (the batched NumPy twins, one call each; with a step of its own the
source keeps every instance) and the source in DALI's thread; "after" is the loader with
``num_threads=T, source_workers=T`` (step threads = T, window pruning on). Same data, seed and
geometry, so the batches are the same (``tests/test_parallel_source.py``); prints one JSON line
per (round, T) with images/s and the 1-minute load average.

Run: ``python -m decal.bench.cpu_before_after --data out/bench-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

__all__ = ["main"]


def _images_per_s(loader: Any, batches: int, warmup: int, batch_size: int) -> float:
    """Images/s of ``loader`` over ``batches`` batches after ``warmup``; closes the loader."""
    with loader:
        it = iter(loader)
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        return round(batch_size * batches / (time.perf_counter() - t0), 2)


def main(argv: list[str] | None = None) -> int:
    from decal.dali_pipes.copy_paste.pipeline import CopyPasteStep
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    from .cpu_profile import add_data_arguments
    from .data import make_bench_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(p)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=str, default="1,2")
    args = p.parse_args(argv)
    data = make_bench_dataset(args.data, args.num_images)

    class Before(CopyPasteLoader):
        def _paste_step(self) -> Any:
            return CopyPasteStep(self._copy_paste)

    common = dict(batch_size=args.batch_size, output_size=args.output_size, jitter="lsj", seed=0, device="cpu", drop_last=True)
    for round_index in range(args.rounds):
        for threads in (int(t) for t in args.threads.split(",")):
            before = _images_per_s(Before(*data, num_threads=threads, **common), args.batches, 4, args.batch_size)
            after = _images_per_s(CopyPasteLoader(*data, num_threads=threads, source_workers=threads, **common),
                                  args.batches, 4, args.batch_size)
            print(json.dumps({"round": round_index, "threads": threads, "before": before, "after": after,
                              "load": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
