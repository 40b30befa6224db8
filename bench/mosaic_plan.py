"""Mosaic's per-batch plan (:func:`~decal.dali_pipes.mosaic.twin.draw_mosaic_plan`) at the
bench data's size and at an LVIS-sized number of images.

The plan's extra tiles are drawn in proportion to the images' repeat factors. Timed per batch
(``time.perf_counter``, the plan alone, no file reads), in rounds; the median round is printed:

* ``weights``: the plan given the raw weight array, as ``MosaicSource`` passed it before the
  weights' CDF was kept (run on an older checkout this is that checkout's code);
* ``draw``: the plan given the source's :class:`~decal.dali_pipes.core.weighted_draw.WeightedDraw`
  (the CDF made once), when this checkout has it.

Weights: with ``--data`` the repeat factors (t = 0.001) of the bench data made by
:func:`bench.data.make_bench_dataset`; with ``--synthetic N`` repeat-factor-like weights of N
images, ``r = max(1, sqrt(t / f))`` with ``f`` drawn log-uniform in [1e-5, 0.3] (LVIS's
long tail: most images r = 1, rare-category images up to r ≈ 10).

Run::

    python -m decal.bench.mosaic_plan --data /tmp/bench_data --num-images 128
    python -m decal.bench.mosaic_plan --synthetic 100000
    python -m decal.bench.mosaic_plan --synthetic 100000 --weights-only   # on an older checkout
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np

from decal.dali_pipes.mosaic.twin import draw_mosaic_plan

try:  # absent on checkouts older than the kept CDF, where only ``weights`` is timed
    from decal.dali_pipes.core.weighted_draw import WeightedDraw
except ImportError:  # pragma: no cover - older checkouts
    WeightedDraw = None  # type: ignore[assignment,misc]

__all__ = ["bench_weights", "synthetic_weights", "time_plan", "main"]


def synthetic_weights(num_images: int, threshold: float = 0.001, seed: int = 0) -> np.ndarray:
    """(num_images,) float64 repeat-factor-like weights (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frequency = np.exp(rng.uniform(np.log(1e-5), np.log(0.3), num_images))
    return np.maximum(1.0, np.sqrt(threshold / frequency))


def bench_weights(root: str, num_images: int, threshold: float = 0.001) -> np.ndarray:
    """(num_images,) repeat factors r(i) of the bench data (made once under ``root``)."""
    from decal.dali_pipes.coco.reader import CocoDataset
    from decal.dali_pipes.core.samplers import RepeatFactorSampler

    from .data import make_bench_dataset

    dataset = CocoDataset(*make_bench_dataset(root, num_images))
    return RepeatFactorSampler.from_dataset(dataset, seed=0, threshold=threshold).repeat_factors


def time_plan(item_weights: Any, batch_size: int, batches: int, rounds: int) -> list[float]:
    """Microseconds per plan of ``batch_size`` samples, one figure per round of ``batches``
    plans (fresh generators per batch, as the source makes them)."""
    options = dict(prob=0.5, jitter=(0.1, 2.0), flip_prob=0.5, center_range=(0.25, 0.75), output_size=1024)
    plan: Callable[[int], Any] = lambda k: draw_mosaic_plan(  # noqa: E731
        np.random.default_rng([0, k, 0]), np.random.default_rng([0, k, 2]), batch_size,
        item_weights=item_weights, **options,
    )  # fmt: skip
    for k in range(5):  # warm-up
        plan(k)
    figures = []
    for r in range(rounds):
        start = time.perf_counter()
        for k in range(batches):
            plan(r * batches + k)
        figures.append((time.perf_counter() - start) / batches * 1e6)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decal.bench.mosaic_plan", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="bench data directory (made if absent)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic repeat-factor weights")
    parser.add_argument("--num-images", type=int, default=128, help="images of the bench data (128)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=200, help="plans per round (200)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--weights-only", action="store_true", help="time only the raw-weights plan (older checkouts)")
    args = parser.parse_args(argv)
    weights = bench_weights(args.data, args.num_images) if args.data else synthetic_weights(args.synthetic)
    result: dict[str, Any] = {"num_images": len(weights), "batch_size": args.batch_size}
    kinds = {"weights": weights}
    if WeightedDraw is not None and not args.weights_only:
        kinds["draw"] = WeightedDraw(weights, field="item_weights")
    for name, item_weights in kinds.items():
        figures = time_plan(item_weights, args.batch_size, args.batches, args.rounds)
        result[f"{name}_us_per_batch"] = {"median": round(statistics.median(figures), 1),
                                          "min": round(min(figures), 1), "max": round(max(figures), 1)}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
