"""The balanced loader's host bookkeeping per batch: the instance bank's draws and its feeding.

On the GPU path the bank's pixels stay on the device, but each batch's draws and the ring's
bookkeeping are made on the host, in the one thread that runs the pipeline's step. This times
them alone (``time.perf_counter``; the median round is printed):

* ``draw``: :meth:`~decal.kernels.instance_bank.InstanceBank.draw` for ``B`` destinations from
  a full bank (``capacity`` entries);
* ``add``: :meth:`~decal.kernels.instance_bank.InstanceBank.add` of the batch's instances,
  with 1-3 pixel crops in a NumPy pool, so that what is timed is the bookkeeping, not the pixel
  copy (the copy runs on the GPU there).

Labels are LVIS-like: 1,203 categories, the i-th drawn with weight ``1 / (i + 1)`` (a long
tail). It uses only the bank's public API, so it runs unchanged on an older checkout (put that
checkout first on ``PYTHONPATH``).

Run::

    python -m decal.bench.bank_host --batch-size 64 --instances 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from decal.kernels.instance_bank import BankParams, InstanceBank

__all__ = ["time_bank", "main"]

NUM_CATEGORIES = 1203


def _batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (n, 4) int64 xyxy of 1-3 pixel crops, labels (n,), areas (n,))."""
    x0, y0 = rng.integers(0, 4, n), rng.integers(0, 4, n)
    w, h = rng.integers(1, 4, n), rng.integers(1, 4, n)
    tail = 1.0 / np.arange(1, NUM_CATEGORIES + 1)
    labels = rng.choice(NUM_CATEGORIES, size=n, p=tail / tail.sum()).astype(np.int64) + 1
    return np.stack([x0, y0, x0 + w, y0 + h], 1).astype(np.int64), labels, (w * h).astype(np.int64)


def time_bank(
    batch_size: int, instances: int, capacity: int, weighting: str, max_num_pasted: int, batches: int, rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per batch of ``draw`` and of ``add``, one figure per round of ``batches``."""
    rng = np.random.default_rng(0)
    n = batch_size * instances
    weights = {c: float(1 + (c % 7)) for c in range(1, NUM_CATEGORIES + 1)} if weighting == "repeat_factor" else None
    bank = InstanceBank(BankParams(capacity=capacity, max_bytes=4 << 20, weighting=weighting, class_weights=weights))
    images = np.zeros((batch_size, 8, 8, 3), np.uint8)
    masks = np.ones((n, 8, 8), np.uint8)
    samples = np.repeat(np.arange(batch_size, dtype=np.int64), instances)
    feeds = [_batch(rng, n) for _ in range(8)]
    while len(bank) < capacity:  # a full bank, as in the steady state
        boxes, labels, areas = feeds[0]
        bank.add(images, masks, np.arange(n), samples, boxes, labels, areas)
    draw_ms, add_ms = [], []
    for r in range(rounds):
        draw_s = add_s = 0.0
        for k in range(batches):
            boxes, labels, areas = feeds[k % len(feeds)]
            t0 = time.perf_counter()
            bank.draw(np.random.default_rng([r, k]), batch_size, 1024, 1024, max_num_pasted)
            t1 = time.perf_counter()
            bank.add(images, masks, np.arange(n), samples, boxes, labels, areas)
            t2 = time.perf_counter()
            draw_s, add_s = draw_s + (t1 - t0), add_s + (t2 - t1)
        draw_ms.append(draw_s / batches * 1e3)
        add_ms.append(add_s / batches * 1e3)
    return {"draw_ms": draw_ms, "add_ms": add_ms}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decal.bench.bank_host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--instances", type=int, default=10, help="instances per image fed to the bank")
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--max-num-pasted", type=int, default=10)
    parser.add_argument("--weighting", default="inverse_frequency", choices=("inverse_frequency", "repeat_factor", "uniform"))
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    figures = time_bank(args.batch_size, args.instances, args.capacity, args.weighting, args.max_num_pasted,
                        args.batches, args.rounds)  # fmt: skip
    result = {"args": vars(args), **figures}
    for key in ("draw_ms", "add_ms"):
        result[key.replace("_ms", "_median_ms")] = statistics.median(figures[key])
    total = result["draw_median_ms"] + result["add_median_ms"]
    print(f"B={args.batch_size}, {args.instances} instances/image, bank {args.capacity}, {args.weighting}: "
          f"draw {result['draw_median_ms']:.3f} ms, add {result['add_median_ms']:.3f} ms per batch "
          f"({args.batch_size / total * 1e3:,.0f} images/s for the bookkeeping alone)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
