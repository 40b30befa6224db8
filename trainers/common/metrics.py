"""Metrics: a JSONL log (always), TensorBoard events (when importable), windowed averages.

One JSON object per line in ``<out_dir>/metrics.jsonl``::

    {"split": "train", "step": 20, "epoch": 0, "time": 12.3, "loss": 1.52, "lr": 0.01, ...}
    {"split": "eval", "step": 200, "epoch": 1, "bbox/AP": 0.12, ...}

Only the main rank writes. :func:`read_jsonl` reads a log back (tests, plots).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["MetricLogger", "WindowAverage", "read_jsonl", "to_float"]


def to_float(value: Any) -> float:
    """A Python float from a number or a one-element tensor/array."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricLogger:
    """Write metric records to ``metrics.jsonl`` (and TensorBoard when available).

    Args:
        out_dir: the run directory.
        enabled: False on non-main ranks: every call is then a no-op.
        tensorboard: also write TensorBoard events if ``torch.utils.tensorboard`` imports
            (it needs the ``tensorboard`` package, which decal does not require).
        filename: name of the JSONL file.
    """

    def __init__(
        self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, filename: str = "metrics.jsonl"
    ) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / filename
        self._start = time.time()
        self._handle = None
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:  # optional dependency
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))
            except Exception:  # ImportError, or tensorboard missing underneath
                self._writer = None

    @property
    def tensorboard_enabled(self) -> bool:
        return self._writer is not None

    def log(self, split: str, step: int, metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any] | None:
        """Append one record; numbers are converted with :func:`to_float`. Returns it."""
        if not self.enabled:
            return None
        record: dict[str, Any] = {"split": split, "step": int(step), "time": round(time.time() - self._start, 3)}
        record.update(extra)
        for key, value in metrics.items():
            try:
                record[key] = _json_safe(to_float(value))
            except (TypeError, ValueError):
                record[key] = value
        assert self._handle is not None
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key in ("split", "step", "time") or not isinstance(value, (int, float)):
                    continue
                self._writer.add_scalar(f"{split}/{key}", value, int(step))
        return record

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WindowAverage:
    """Running means of named scalars since the last :meth:`reset` (the logging window)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def update(self, values: Mapping[str, Any], weight: int = 1) -> None:
        for key, value in values.items():
            self._sums[key] += to_float(value) * weight
            self._counts[key] += weight

    def averages(self) -> dict[str, float]:
        return {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}

    def state(self) -> tuple[dict[str, float], dict[str, int]]:
        """Sums and counts (to combine windows across ranks)."""
        return dict(self._sums), dict(self._counts)

    @staticmethod
    def combine(states: Iterable[tuple[dict[str, float], dict[str, int]]]) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for s, c in states:
            for k, v in s.items():
                sums[k] += v
                counts[k] += c.get(k, 0)
        return {k: sums[k] / counts[k] for k in sums if counts[k]}

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()


def read_jsonl(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file (only those of ``split`` when given)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if split is None or record.get("split") == split:
                records.append(record)
    return records
