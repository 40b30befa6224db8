"""The training loop shared by the trainers.

A trainer supplies a *step function* ``step_fn(model, batch) -> StepOutput`` (forward pass
and loss for one batch) and optional :class:`Hook` objects (evaluation, FASA's per-epoch
adaptation, a momentum encoder update, ...). :class:`TrainLoop` does the rest:

* iterates the loader epoch by epoch (a decal loader yields one epoch per ``iter()``),
  until ``RunConfig.max_iters`` iterations or ``RunConfig.epochs`` epochs;
* AMP (``torch.autocast`` + ``GradScaler`` for float16) on CUDA only, optional gradient
  clipping, the optimiser and a per-iteration LR schedule, an optional weight EMA;
* one tqdm bar per run (main rank; ``RunConfig.progress``) over all the run's iterations,
  its description the current epoch, its postfix the loss and images/s of the last window;
* every ``RunConfig.log_every`` iterations, one line on stderr (main rank, with or without the
  bar; :func:`progress_line`) with the step, epoch, loss, images/s and lr, and the windowed
  metrics (every loss term, lr, images/s, data-wait and step time) to the JSONL/TensorBoard
  logger;
* checkpoints every N iterations and/or epochs, and exact resume: the model, optimiser,
  schedule, scaler, EMA, hooks' state, RNG states, the step, and every rank's loader
  position, so a resumed run sees the batches an uninterrupted run would have seen;
* under DDP, ranks stop an epoch together (one tiny all-reduce per iteration), and metrics
  are averaged over ranks before logging.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import Checkpointer, load_checkpoint
from .config import RunConfig
from .distributed import DistInfo, all_gather_object, all_ranks_true, unwrap_model
from .ema import ModelEma
from .metrics import MetricLogger, WindowAverage, to_float

__all__ = ["StepOutput", "Hook", "TrainLoop", "StepFn", "planned_steps", "progress_line", "resume_and_run"]


def planned_steps(run: RunConfig, loader: Any) -> int:
    """Optimiser steps of a run: ``run.max_iters`` when set, else ``run.epochs`` × batches per
    epoch of ``loader`` (per rank). Raises ValueError when neither is set or an epoch is empty."""
    if len(loader) == 0:
        raise ValueError(
            "the loader has no batch in an epoch (fewer images per rank than loader.batch_size with "
            "loader.drop_last): lower the batch size or add images"
        )
    if run.max_iters > 0:
        return run.max_iters
    if run.epochs <= 0:
        raise ValueError("set run.epochs or run.max_iters")
    return run.epochs * len(loader)


def progress_line(step: int, total_steps: int, epoch: int, averages: dict[str, float]) -> str:
    """The line logged every ``log_every`` iterations, from the window's averages, e.g.
    ``step 20/60  epoch 3  loss 1.2345  12.3 img/s  lr 1.00e-03  data 4 ms``
    (loss: the mean of the window's losses; img/s over all ranks; data: mean wait for a batch)."""
    parts = [f"step {step}/{total_steps}", f"epoch {epoch}", f"loss {averages.get('loss', math.nan):.4f}"]
    parts.append(f"{averages.get('images_per_s', math.nan):.1f} img/s")
    if "lr" in averages:
        parts.append(f"lr {averages['lr']:.2e}")
    if "data_time" in averages:
        parts.append(f"data {1000 * averages['data_time']:.0f} ms")
    return "  ".join(parts)


@dataclass
class StepOutput:
    """What a step function returns.

    Attributes:
        loss: the scalar to back-propagate.
        metrics: scalars to log (e.g. each loss term); tensors are detached on logging.
        batch_size: images in this rank's batch (for images/s).
    """

    loss: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0


StepFn = Callable[[nn.Module, Any], StepOutput]


class Hook:
    """Callbacks of the loop; override what you need. Every rank calls every hook, so a
    hook may use collectives. ``state_dict`` is saved in checkpoints under ``name``."""

    name: str = ""

    def before_train(self, loop: "TrainLoop") -> None: ...

    def before_epoch(self, loop: "TrainLoop", epoch: int) -> None: ...

    def after_step(self, loop: "TrainLoop", output: StepOutput) -> None: ...

    def after_epoch(self, loop: "TrainLoop", epoch: int) -> None: ...

    def after_train(self, loop: "TrainLoop") -> None: ...

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None: ...

    @property
    def key(self) -> str:
        return self.name or type(self).__name__


_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class TrainLoop:
    """Run a training job.

    Args:
        model: the model (DDP-wrapped when distributed; the step function gets it as is).
        optimizer, scheduler: the optimiser and a per-iteration LR scheduler.
        loader: a decal loader (local or remote).
        step_fn: forward + loss for one batch.
        run: the :class:`RunConfig`.
        info: this process's :class:`DistInfo`.
        device: the model's device.
        total_steps: iterations to run (the schedule's length).
        grad_clip_norm: clip the global gradient norm (0 = off).
        ema: an optional :class:`ModelEma`, updated after every optimiser step.
        logger: the metric logger (a disabled one on non-main ranks).
        checkpointer: where checkpoints go (None = never save).
        hooks: :class:`Hook` objects, called in order.
        extra_state: saved verbatim in every checkpoint (e.g. the config, the categories).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loader: Any,
        step_fn: StepFn,
        run: RunConfig,
        info: DistInfo,
        device: torch.device,
        total_steps: int,
        grad_clip_norm: float = 0.0,
        ema: ModelEma | None = None,
        logger: MetricLogger | None = None,
        checkpointer: Checkpointer | None = None,
        hooks: Sequence[Hook] = (),
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.step_fn = step_fn
        self.run_config = run
        self.info = info
        self.device = device
        self.total_steps = int(total_steps)
        self.grad_clip_norm = float(grad_clip_norm)
        self.ema = ema
        self.logger = logger or MetricLogger(run.out_dir, enabled=False)
        self.checkpointer = checkpointer
        self.hooks = list(hooks)
        self.extra_state = dict(extra_state or {})
        self.step = 0
        self.epochs_done = 0
        self.amp_enabled = bool(run.amp) and device.type == "cuda"
        self.amp_dtype = _AMP_DTYPES[run.amp_dtype]
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_enabled and self.amp_dtype == torch.float16
        )
        self.last_metrics: dict[str, float] = {}
        self._last_saved_step = -1
        self._window = WindowAverage()
        self._window_images = 0
        self._window_start = time.perf_counter()
        self._progress: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def model_without_ddp(self) -> nn.Module:
        return unwrap_model(self.model)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return int(getattr(self.loader, "epoch", self.epochs_done))

    @property
    def eval_model(self) -> nn.Module:
        """The model to evaluate: the EMA copy when there is one, else the raw model."""
        return self.ema.module if self.ema is not None else self.model_without_ddp

    def _params(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ one iteration
    def train_step(self, batch: Any) -> StepOutput:
        """Forward, backward, (clip), optimiser and schedule step, EMA update."""
        self.model.train()
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_enabled):
            output = self.step_fn(self.model, batch)
        loss = output.loss
        if not torch.isfinite(loss.detach()).all():
            values = {k: round(to_float(v), 4) for k, v in output.metrics.items()}
            raise FloatingPointError(f"non-finite loss {to_float(loss)} at step {self.step}: {values}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        metrics = {k: v for k, v in output.metrics.items()}
        metrics.setdefault("loss", loss.detach())
        if self.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params(), self.grad_clip_norm)
            metrics["grad_norm"] = grad_norm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model_without_ddp)
        output.metrics = metrics
        return output

    # ------------------------------------------------------------------ the run
    def _stop_by_epochs(self) -> bool:
        return self.run_config.max_iters <= 0 and self.run_config.epochs > 0 and self.epoch >= self.run_config.epochs

    def run(self) -> dict[str, Any]:
        """Train until ``total_steps`` (or the epoch budget); returns a summary."""
        for hook in self.hooks:
            hook.before_train(self)
        self._progress = tqdm(
            total=self.total_steps,
            initial=min(self.step, self.total_steps),
            desc="train",
            unit="it",
            disable=not (self.run_config.progress and self.info.is_main),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            while self.step < self.total_steps and not self._stop_by_epochs():
                epoch = self.epoch
                for hook in self.hooks:
                    hook.before_epoch(self, epoch)
                completed = self._run_epoch(epoch)
                if completed:
                    self.epochs_done += 1
                    for hook in self.hooks:
                        hook.after_epoch(self, epoch)
                    every = self.run_config.checkpoint_every_epochs
                    if every > 0 and (epoch + 1) % every == 0:
                        self.save_checkpoint()
            if self.checkpointer is not None and self._last_saved_step != self.step:
                self.save_checkpoint()
            for hook in self.hooks:
                hook.after_train(self)
        finally:
            if self._progress is not None:
                self._progress.close()
                self._progress = None
        return {"step": self.step, "epoch": self.epoch, "metrics": dict(self.last_metrics)}

    def _at_epoch_end(self, epoch: int) -> bool:
        """True when the loader says the current epoch has no batch left."""
        state_fn = getattr(self.loader, "state_dict", None)
        if state_fn is None:
            return False
        try:
            state = state_fn()
            return int(state.get("epoch", epoch)) > epoch or int(state.get("batch_index", 0)) >= len(self.loader)
        except (TypeError, ValueError, KeyError, AttributeError):
            return False

    def _run_epoch(self, epoch: int) -> bool:
        """Iterate the loader's current epoch; True when the epoch ran to its end."""
        self._progress.set_description(f"epoch {epoch}", refresh=False)
        iterator = iter(self.loader)
        while True:
            start = time.perf_counter()
            batch = next(iterator, None)
            if not all_ranks_true(batch is not None, self.info, self.device):
                return True  # this epoch is over (on every rank)
            data_time = time.perf_counter() - start
            output = self.train_step(batch)
            self.step += 1
            metrics = dict(output.metrics)
            metrics["data_time"] = data_time
            metrics["step_time"] = time.perf_counter() - start
            self._window.update(metrics)
            self._window_images += int(output.batch_size)
            self._progress.update(1)
            for hook in self.hooks:
                hook.after_step(self, output)
            if self.step % max(1, self.run_config.log_every) == 0 or self.step >= self.total_steps:
                self._log_window(epoch)
            every = self.run_config.checkpoint_every
            if every > 0 and self.step % every == 0:
                self.save_checkpoint()
            if self.step >= self.total_steps:
                # the last batch of the run may also be the last of its epoch: then let the
                # loader finish the epoch (no batch is produced), so the epoch hooks run
                if self._at_epoch_end(epoch) and next(iterator, None) is None:
                    return True
                return False

    def _log_window(self, epoch: int) -> None:
        elapsed = time.perf_counter() - self._window_start
        states = all_gather_object((self._window.state(), self._window_images, elapsed), self.info)
        averages = WindowAverage.combine(s for s, _, _ in states)
        images = sum(n for _, n, _ in states)
        slowest = max(t for _, _, t in states)
        averages["images_per_s"] = images / slowest if slowest > 0 else math.nan
        averages["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.ema is not None:
            averages["ema_decay"] = self.ema.current_decay()
        self.last_metrics = averages
        self.logger.log("train", self.step, averages, epoch=epoch)
        if self.info.is_main:
            self._progress.set_postfix(
                loss=f"{averages.get('loss', math.nan):.4f}", img_s=f"{averages['images_per_s']:.1f}", refresh=False
            )
            tqdm.write(progress_line(self.step, self.total_steps, epoch, averages), file=sys.stderr)
        self._window.reset()
        self._window_images = 0
        self._window_start = time.perf_counter()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (collective under DDP: call it on every rank)."""
        loader_state = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        per_rank = all_gather_object({"loader": loader_state, "rng": rng}, self.info)
        return {
            "step": self.step,
            "epochs_done": self.epochs_done,
            "world_size": self.info.world_size,
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "hooks": {hook.key: hook.state_dict() for hook in self.hooks},
            "loader": [p["loader"] for p in per_rank],
            "rng": [p["rng"] for p in per_rank],
            **self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any], *, restore_rng: bool = True) -> None:
        """Restore a :meth:`state_dict` (same world size for the loader positions)."""
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        hook_states = state.get("hooks") or {}
        for hook in self.hooks:
            if hook.key in hook_states and hook_states[hook.key] is not None:
                hook.load_state_dict(hook_states[hook.key])
        self.step = int(state["step"])
        self.epochs_done = int(state.get("epochs_done", 0))
        self._last_saved_step = self.step
        loaders = state.get("loader") or []
        if loaders and hasattr(self.loader, "load_state_dict"):
            if len(loaders) != self.info.world_size:
                raise ValueError(
                    f"checkpoint was written by {len(loaders)} ranks, this run has {self.info.world_size}: "
                    "the loader positions cannot be restored"
                )
            if loaders[self.info.rank] is not None:
                self.loader.load_state_dict(loaders[self.info.rank])
        rngs = state.get("rng") or []
        if restore_rng and len(rngs) == self.info.world_size:
            mine = rngs[self.info.rank]
            torch.set_rng_state(mine["torch"].cpu())
            if self.device.type == "cuda" and "cuda" in mine:
                torch.cuda.set_rng_state(mine["cuda"].cpu(), self.device)

    def save_checkpoint(self, name: str | None = None) -> Any:
        """Save a checkpoint now (call on every rank under DDP; the main rank writes)."""
        if self.checkpointer is None:
            return None
        state = self.state_dict()
        path = self.checkpointer.save(state, self.step, name=name)
        self._last_saved_step = self.step
        return path

    def resume(self, path: Any) -> None:
        """Load a checkpoint file written by :meth:`save_checkpoint`."""
        self.load_state_dict(load_checkpoint(path, map_location="cpu"))


def resume_and_run(loop: "TrainLoop", checkpointer: Checkpointer, logger: MetricLogger, run: RunConfig, out_dir: Any) -> dict[str, Any]:
    """Resume ``loop`` from ``run.resume`` (``"auto"``, a path, or nothing), run it to the
    end, close ``logger``, and return the loop's summary plus ``out_dir``, ``checkpoint``
    (the latest), ``resumed_from`` and ``loop``: the tail every trainer shares."""
    resume = checkpointer.resolve(run.resume)
    try:
        if resume is not None:
            loop.resume(resume)
        summary = loop.run()
    finally:
        logger.close()
    latest = checkpointer.latest()
    return {
        **summary,
        "out_dir": str(out_dir),
        "checkpoint": str(latest) if latest else None,
        "resumed_from": str(resume) if resume else None,
        "loop": loop,
    }
