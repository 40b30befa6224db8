"""The balanced Copy-Paste step: paste instances drawn from a class-balanced
:class:`~decal.kernels.instance_bank.InstanceBank`, then feed the batch's own instances to the
bank (:func:`~decal.kernels.instance_bank.bank_copy_paste_batch`), and the bank's steps, one
per pipeline of a loader (:class:`BankSteps`, the family's ``steps`` part).

The step's core works on the batched form (:class:`~decal.dali_pipes.core.step_io.StackedBatch`),
so it runs in both copy-paste graphs: host masks (its ``__call__``) or mask descriptors
rasterised by the step (:class:`~decal.dali_pipes.core.step_io.FromDescriptors`). On the GPU
backend the bank's pixel pool is a CuPy array that stays on the device, and every pixel
operation runs on DALI's stream (``fn.python_function`` makes it CuPy's current stream).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ...kernels.copy_paste import CopyPasteParams
from ...kernels.instance_bank import BankParams, InstanceBank, bank_copy_paste_batch
from ..copy_paste.source import copy_paste_rng
from ..core.samplers import RepeatFactorSampler
from ..core.step_io import StackedBatch, split_result, stack_batch

__all__ = ["BalancedCopyPasteStep", "BankSteps", "category_repeat_factors"]


class BalancedCopyPasteStep:
    """The ``fn.python_function`` body (batch mode) of balanced Copy-Paste.

    Same inputs and outputs as :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`
    (host masks); its core :meth:`paste` takes the batched form, so the descriptor graph runs
    it too (:class:`~decal.dali_pipes.core.step_io.FromDescriptors`, masks rasterised by the
    step: the same batch bit for bit). Stateful: it uses the bank, so DALI must call it once per batch, in order (it does: one
    operator instance, iterations in sequence). With ``params=None`` nothing is pasted and
    the bank is not fed.

    A loader builds one step per pipeline. When it drops a pipeline (resume, recovery), it
    retires that pipeline's step (:meth:`retire`): batches the old pipeline still prefetches then
    neither draw from nor feed the bank. ``lock`` (shared by the steps of one bank)
    serialises a call with a retirement.
    """

    def __init__(
        self,
        bank: InstanceBank,
        params: CopyPasteParams | None,
        *,
        lock: threading.Lock | None = None,
        pasted_per_category: dict[int, int] | None = None,
    ) -> None:
        self.bank = bank
        self.params = params
        self.lock = lock or threading.Lock()
        #: pasted instances per category so far (host bookkeeping, for stats)
        self.pasted_per_category = {} if pasted_per_category is None else pasted_per_category
        self.active = True

    def retire(self) -> None:
        """Stop touching the bank (waits for a call in progress)."""
        with self.lock:
            self.active = False

    def __call__(self, images, masks, labels, iscrowd, positions):
        return self.paste(stack_batch(images, masks, labels, iscrowd, positions))

    def paste(self, batch: StackedBatch) -> tuple[list[Any], ...]:
        """Bank Copy-Paste over one batch in the batched form; the seven per-sample outputs."""
        with self.lock:
            live = self.active and self.params is not None
            result = bank_copy_paste_batch(
                batch.images,
                batch.masks,
                batch.offsets,
                batch.labels,
                batch.iscrowd,
                self.params if live else CopyPasteParams(max_num_pasted=0),
                self.bank if live else InstanceBank(self.bank.params),
                copy_paste_rng(batch.position),
                feed=live,
                areas=batch.areas,
                boxes=batch.boxes,
                areas_host=batch.areas_host,
            )
            if live:  # one step per category pasted in the batch, not per instance
                categories, counts = np.unique(result.labels[result.pasted], return_counts=True)
                for label, count in zip(categories.tolist(), counts.tolist()):
                    self.pasted_per_category[label] = self.pasted_per_category.get(label, 0) + count
        return split_result(batch.xp, result, len(batch.offsets) - 1)


def category_repeat_factors(dataset: Any, threshold: float) -> dict[int, float]:
    """LVIS ``r(c) = max(1, sqrt(t / f(c)))`` of every category of ``dataset`` (``f(c)`` the
    fraction of its images holding a non-crowd instance of ``c``)."""
    return RepeatFactorSampler.from_dataset(dataset, seed=0, threshold=threshold).category_repeat_factors


class BankSteps:
    """The instance bank of one balanced loader and the step of each of its pipelines (the
    family's ``steps`` part, see :class:`~decal.dali_pipes.core.assembly.Family`).

    ``config``: a :class:`~decal.dali_pipes.balanced.loader.BalancedCopyPasteLoaderConfig`.
    Calling it retires the current step (a pipeline being replaced must not touch the bank
    any more) and returns a new one over the same bank, lock and per-category counts.
    """

    def __init__(self, config: Any, dataset: Any) -> None:
        weights = None
        if config.bank_weighting == "repeat_factor":
            weights = category_repeat_factors(dataset, config.bank_repeat_threshold)
        self.bank = InstanceBank(
            BankParams(
                capacity=config.bank_capacity,
                max_bytes=config.bank_max_bytes,
                weighting=config.bank_weighting,
                power=config.bank_power,
                class_weights=weights,
                min_area=config.bank_min_area,
            )
        )
        self.params = config.copy_paste_params()
        self.lock = threading.Lock()
        #: pasted instances per category so far, over every step
        self.pasted_per_category: dict[int, int] = {}
        self.step = self._new_step()

    def _new_step(self) -> BalancedCopyPasteStep:
        return BalancedCopyPasteStep(self.bank, self.params, lock=self.lock, pasted_per_category=self.pasted_per_category)

    def __call__(self) -> BalancedCopyPasteStep:
        self.step.retire()
        self.step = self._new_step()
        return self.step

    def clear(self) -> None:
        """Retire the current step and empty the bank (a resume starts with an empty bank)."""
        self.step.retire()  # the dropped pipeline may still be prefetching
        with self.lock:
            self.bank.clear()
