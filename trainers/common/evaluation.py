"""A periodic evaluation hook for the training loop (used by every trainer; the detection
trainer's ``EvalHook`` supplies its COCO evaluation to this one).

The trainer supplies ``evaluate(loop) -> {name: value}`` (collective under DDP: every rank
calls it and the function reduces over ranks); the hook calls it every ``every_epochs``
epochs and once at the end of training (unless the last epoch already did), logs the result
(split ``"eval"``), writes ``<out_dir>/eval/step_<n>.json`` on the main rank, and keeps the
history in checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .loop import Hook, TrainLoop
from .metrics import MetricLogger

__all__ = ["EvalHook"]


class EvalHook(Hook):
    """Call ``evaluate`` after every ``every_epochs`` epochs (0 = never during training) and
    at the end of training.

    Args:
        evaluate: ``evaluate(loop) -> metrics``; runs on every rank.
        logger: the run's metric logger.
        out_dir: the run directory (results go to ``<out_dir>/eval``).
        every_epochs: evaluation period in epochs (0 = only at the end).
    """

    name = "eval"

    def __init__(
        self,
        evaluate: Callable[[TrainLoop], dict[str, float]],
        *,
        logger: MetricLogger,
        out_dir: str | Path,
        every_epochs: int = 0,
    ) -> None:
        self.evaluate_fn = evaluate
        self.logger = logger
        self.out_dir = Path(out_dir)
        self.every_epochs = int(every_epochs)
        self.history: list[dict[str, Any]] = []
        self._last_step = -1

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.history[-1]["metrics"] if self.history else {}

    def evaluate(self, loop: TrainLoop) -> dict[str, float]:
        metrics = self.evaluate_fn(loop)
        self._last_step = loop.step
        self.history.append({"step": loop.step, "epoch": loop.epoch, "metrics": metrics})
        self.logger.log("eval", loop.step, metrics, epoch=loop.epoch)
        if loop.info.is_main:
            out = self.out_dir / "eval" / f"step_{loop.step:08d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"step": loop.step, "metrics": metrics}, indent=2))
        return metrics

    def after_epoch(self, loop: TrainLoop, epoch: int) -> None:
        if self.every_epochs > 0 and (epoch + 1) % self.every_epochs == 0:
            self.evaluate(loop)

    def after_train(self, loop: TrainLoop) -> None:
        if self._last_step != loop.step:
            self.evaluate(loop)

    def state_dict(self) -> Any:
        return {"history": self.history}

    def load_state_dict(self, state: Any) -> None:
        self.history = list(state.get("history", []))
