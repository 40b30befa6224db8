"""Balanced Copy-Paste: the copy-paste pipeline with a class-balanced instance bank as the
paste source (LVIS 2021 challenge reports, instance-level re-sampling; Ghiasi et al. 2021).

The DALI graph is the copy-paste one (:func:`~decal.dali_pipes.copy_paste.pipeline.build_copy_paste_pipeline`:
decode → scale jitter → crop/pad → flip) with :class:`BalancedCopyPasteStep` as its batch
step. The step stacks the batch, pastes instances drawn from an
:class:`~decal.kernels.instance_bank.InstanceBank` with class-balanced probability (see
:mod:`decal.kernels.instance_bank` for the semantics), then feeds the batch's own instances
to the bank. On the GPU backend the bank's pixel pool is a CuPy array that stays on the
device, and every pixel operation runs on DALI's stream (``fn.python_function`` makes it
CuPy's current stream).

Determinism and resume: the draws of batch k come from the same per-batch generator as
copy-paste (``[seed, epoch, shard, k, 1]``), and the bank's content is a function of the
batches before k, so a run is a function of its seed. The bank is *not* part of
``state_dict()``: a resumed loader (or one after :meth:`load_state_dict`) starts with an
empty bank, so its first batches paste less than the uninterrupted run did until the bank
refills (at most ``bank_capacity`` instances, a few batches). The same holds after the loader
rebuilds its pipeline to skip a corrupt image: the batches DALI had prefetched already fed
the bank.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from ...kernels.copy_paste import CopyPasteParams
from ...kernels.instance_bank import BankParams, InstanceBank, bank_copy_paste_batch
from ..coco.loader import CocoPipelineLoader, coco_dataset
from ..copy_paste.loader import COPY_PASTE, CopyPasteLoaderConfig, copy_paste_source
from ..copy_paste.source import copy_paste_rng
from ..core.assembly import assemble
from ..core.option_schema import with_options
from ..core.samplers import RepeatFactorSampler
from ..core.step_io import split_result, stack_batch, to_host
from .options import BALANCED_COPY_PASTE_OPTIONS

__all__ = [
    "BALANCED",
    "BalancedCopyPasteStep",
    "BalancedCopyPasteLoader",
    "BalancedCopyPasteLoaderConfig",
    "BankSteps",
    "category_repeat_factors",
]


class BalancedCopyPasteStep:
    """The ``fn.python_function`` body (batch mode) of balanced Copy-Paste.

    Same inputs and outputs as :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`.
    Stateful: it uses the bank, so DALI must call it once per batch, in order (it does: one
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
        batch = stack_batch(images, masks, labels, iscrowd)
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
                copy_paste_rng(to_host(positions[0])),
                feed=live,
            )
            if live:
                for label in result.labels[result.pasted]:
                    self.pasted_per_category[int(label)] = self.pasted_per_category.get(int(label), 0) + 1
        return split_result(batch.xp, result, len(images))


def category_repeat_factors(dataset: Any, threshold: float) -> dict[int, float]:
    """LVIS ``r(c) = max(1, sqrt(t / f(c)))`` of every category of ``dataset`` (``f(c)`` the
    fraction of its images holding a non-crowd instance of ``c``)."""
    return RepeatFactorSampler.from_dataset(dataset, seed=0, threshold=threshold).category_repeat_factors


@dataclass(frozen=True)
@with_options(BALANCED_COPY_PASTE_OPTIONS)
class BalancedCopyPasteLoaderConfig(CopyPasteLoaderConfig):
    """:class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoaderConfig` plus the bank.

    Attributes:
        max_num_pasted: as in copy-paste (n uniform in ``[0, min(len(bank), cap)]``), but
            10 by default rather than mmdetection's 100: a partner image holds a handful of
            instances, a bank holds hundreds, and 100 would bury the destination (our
            choice; set 100 for the literal mmdetection count rule).
        bank_capacity: the most instances the bank holds.
        bank_max_bytes: the bank's memory cap (crop pixels, 4 bytes each), allocated once on
            the pipeline's device.
        bank_weighting: ``"repeat_factor"`` (r(c) of the category, from the dataset's image
            frequencies with threshold ``bank_repeat_threshold``), ``"inverse_frequency"``
            (1 / f(c)^p, f the category's share of the bank) or ``"uniform"``.
        bank_power: p of ``"inverse_frequency"``.
        bank_repeat_threshold: t of ``"repeat_factor"`` (0.001 in LVIS).
        bank_min_area: instances with fewer pixels after the geometric transforms are not
            banked.
    """



class BankSteps:
    """The instance bank of one balanced loader and the step of each of its pipelines (the
    family's ``steps`` part, see :class:`~decal.dali_pipes.core.assembly.Family`).

    Calling it retires the current step (a pipeline being replaced must not touch the bank
    any more) and returns a new one over the same bank, lock and per-category counts.
    """

    def __init__(self, config: BalancedCopyPasteLoaderConfig, dataset: Any) -> None:
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


#: The balanced family: copy-paste's parts with the config, the bank's steps, and a source
#: that keeps every instance (the bank takes them whole) with host masks on either backend
#: (the bank's step takes H×W×(N+1) masks; ``mask_source="descriptors"`` is an error).
BALANCED = replace(
    COPY_PASTE,
    name="BalancedCopyPasteLoader",
    config_type=BalancedCopyPasteLoaderConfig,
    source=partial(copy_paste_source, masks="host", prune_window=False),
    steps=BankSteps,
)


class BalancedCopyPasteLoader(CocoPipelineLoader):
    """Copy-Paste whose pasted instances come from a class-balanced bank of recent instances.

    Example::

        loader = BalancedCopyPasteLoader("lvis_v1_train.json", "train2017/", batch_size=8,
                                         output_size=1024, bank_weighting="repeat_factor",
                                         repeat_factor_threshold=0.001)
        for batch in loader:          # a decal.Batch, as CopyPasteLoader yields
            batch.targets[0]["pasted"]

    Keyword arguments are the fields of :class:`BalancedCopyPasteLoaderConfig` (parsed once,
    into it, so the paste parameters come from the balanced defaults: ``max_num_pasted=10``),
    plus ``dataset`` as in :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoader`.
    """

    config: BalancedCopyPasteLoaderConfig

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, **options: Any) -> None:
        dataset = coco_dataset(annotation_file, image_dir, options.pop("dataset", None))
        super().__init__(assemble(BALANCED, options, dataset))
        self.steps: BankSteps = self.parts.steps  # type: ignore[assignment]

    @property
    def bank(self) -> InstanceBank:
        """The instance bank (shared by every pipeline of this loader)."""
        return self.steps.bank

    @property
    def step(self) -> BalancedCopyPasteStep:
        """The step of the current (or next) pipeline."""
        return self.steps.step

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As :meth:`PipelineLoader.load_state_dict`; the bank starts empty again (see the
        module docstring)."""
        super().load_state_dict(state)
        self.steps.clear()

    @property
    def stats(self) -> dict[str, Any]:
        """The copy-paste loader's stats plus the bank's (size, bytes, added, evicted,
        rejected) and the pasted instances per category so far."""
        base = dict(super().stats)
        bank = self.bank
        base["bank"] = {
            "instances": len(bank),
            "bytes": bank.nbytes,
            "added": bank.added,
            "evicted": bank.evicted,
            "rejected": bank.rejected,
        }
        base["pasted_per_category"] = dict(self.steps.pasted_per_category)
        return base
