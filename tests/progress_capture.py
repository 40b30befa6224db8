"""Test helpers for the training loop's output: count the tqdm bars a run makes, and read the
loss lines it writes (decal.trainers.common.loop.progress_line) back from captured stderr."""

from __future__ import annotations

import re
from typing import Any

import pytest
import tqdm

from decal.trainers.common import loop as loop_module


class CountingTqdm(tqdm.tqdm):
    """tqdm that records every bar made (what the loop creates, not how it draws)."""

    made: list["CountingTqdm"] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CountingTqdm.made.append(self)


def count_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tqdm bar made from now on lands in ``CountingTqdm.made``."""
    monkeypatch.setattr(CountingTqdm, "made", [])
    monkeypatch.setattr(tqdm, "tqdm", CountingTqdm)
    monkeypatch.setattr(loop_module, "tqdm", CountingTqdm, raising=False)


LINE = re.compile(r"step (\d+)/(\d+)  epoch (\d+)  loss (\d+\.\d{4})  (\d+\.\d) img/s  lr ")


def progress_lines(text: str) -> list[tuple[int, int, int, float]]:
    """(step, total, epoch, loss) of every loss line in captured stderr."""
    return [(int(m[1]), int(m[2]), int(m[3]), float(m[4])) for m in LINE.finditer(text)]
