"""Checkpoints: atomic writes, a ``last_checkpoint`` pointer, pruning, resume lookup.

A checkpoint is one ``torch.save`` dict written by the main rank. The training loop stores
everything a resumed run needs to continue as if never stopped (see
:meth:`decal.trainers.common.loop.TrainLoop.state_dict`): the model, the optimiser, the LR
schedule, the AMP scaler, the EMA weights, the hooks' state (e.g. FASA's sampling
probabilities), the torch RNG state, the step, and every rank's loader position.

Files: ``<dir>/checkpoint_<step:08d>.pt`` plus ``<dir>/last_checkpoint`` (a text file with
the newest file's name, updated after the file is complete, so a crash mid-write never
leaves a pointer to a broken file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["Checkpointer", "load_checkpoint"]

_PATTERN = re.compile(r"^checkpoint_(\d{8,})\.pt$")
_POINTER = "last_checkpoint"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict (on the CPU by default)."""
    return torch.load(path, map_location=map_location, weights_only=False)


class Checkpointer:
    """Save and find checkpoints in one directory.

    Args:
        directory: where checkpoints go (created on the first save).
        keep_last: keep this many step checkpoints (0 = keep all); files named otherwise
            (e.g. ``final.pt``) are never deleted.
        enabled: False on non-main ranks (``save`` then does nothing).
    """

    def __init__(self, directory: str | Path, *, keep_last: int = 3, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.enabled = enabled

    def save(self, state: dict[str, Any], step: int, *, name: str | None = None) -> Path | None:
        """Write ``state`` atomically as ``checkpoint_<step>.pt`` (or ``name``); returns its path."""
        if not self.enabled:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        filename = name or f"checkpoint_{int(step):08d}.pt"
        path = self.directory / filename
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        pointer_tmp = self.directory / (_POINTER + ".tmp")
        pointer_tmp.write_text(filename + "\n")
        os.replace(pointer_tmp, self.directory / _POINTER)
        self._prune()
        return path

    def checkpoints(self) -> list[Path]:
        """Step checkpoints in the directory, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _PATTERN.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint: the pointer's target, else the highest step."""
        pointer = self.directory / _POINTER
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if candidate.is_file():
                return candidate
        found = self.checkpoints()
        return found[-1] if found else None

    def resolve(self, resume: str | Path | None) -> Path | None:
        """What ``RunConfig.resume`` means: None/"" → None, "auto" → :meth:`latest`, else the path."""
        if not resume:
            return None
        if str(resume) == "auto":
            return self.latest()
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint {path} does not exist")
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        found = self.checkpoints()
        keep = set(found[-self.keep_last :])
        latest = self.latest()
        for path in found:
            if path not in keep and path != latest:
                path.unlink(missing_ok=True)
