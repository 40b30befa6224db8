"""Self-training Copy-Paste's step: Copy-Paste whose partners are the labelled images of the
batch (:func:`~decal.dali_pipes.self_training.twin.draw_labelled_paste_plan`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ...kernels.copy_paste import CopyPasteParams
from ..copy_paste.pipeline import paste_stacked
from ..core.step_io import StackedBatch, stack_batch
from .twin import draw_labelled_paste_plan, split_counts

__all__ = ["SelfTrainingStep"]


@dataclass(frozen=True)
class SelfTrainingStep:
    """The ``fn.python_function`` body (batch mode): Copy-Paste whose partners are the
    labelled images of the batch. Inputs and outputs as
    :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`; the labelled/second split
    of a batch of T is ``split_counts(T, ratio)`` (labelled first). Its core :meth:`paste`
    takes the batched form, so the descriptor graph runs it too
    (:class:`~decal.dali_pipes.core.step_io.FromDescriptors`; the same batch bit for bit)."""

    params: CopyPasteParams | None
    ratio: float
    paste_into_labelled: bool = True

    def __call__(self, images, masks, labels, iscrowd, positions):
        return self.paste(stack_batch(images, masks, labels, iscrowd, positions))

    def paste(self, batch: StackedBatch) -> tuple[list[Any], ...]:
        """Copy-Paste with labelled partners over one batch in the batched form."""
        n_labelled, n_second = split_counts(len(batch.offsets) - 1, self.ratio)
        is_labelled = np.r_[np.ones(n_labelled, bool), np.zeros(n_second, bool)]
        draw_plan = partial(draw_labelled_paste_plan, is_labelled=is_labelled, paste_into_labelled=self.paste_into_labelled)
        return paste_stacked(batch, self.params, draw_plan=draw_plan)
