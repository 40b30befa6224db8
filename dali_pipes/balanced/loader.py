"""Balanced Copy-Paste: the copy-paste pipeline with a class-balanced instance bank as the
paste source (LVIS 2021 challenge reports, instance-level re-sampling; Ghiasi et al. 2021).

The DALI graph is a copy-paste one (:func:`~decal.dali_pipes.copy_paste.loader.copy_paste_graph`:
decode → scale jitter → crop/pad → flip; masks from the host or from descriptors, option
``mask_source``) with :class:`~decal.dali_pipes.balanced.step.BalancedCopyPasteStep` as its
batch step: it pastes instances drawn from an :class:`~decal.kernels.instance_bank.InstanceBank`
with class-balanced probability (see :mod:`decal.kernels.instance_bank` for the semantics),
then feeds the batch's own instances to the bank. This module holds the config, the family's
parts (:data:`BALANCED`) and the loader.

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

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from ...kernels.instance_bank import InstanceBank
from ..coco.loader import CocoPipelineLoader, coco_dataset
from ..copy_paste.loader import COPY_PASTE, CopyPasteLoaderConfig, copy_paste_source
from ..core.assembly import assemble
from ..core.option_schema import with_options
from .options import BALANCED_COPY_PASTE_OPTIONS
from .step import BalancedCopyPasteStep, BankSteps

__all__ = ["BALANCED", "BalancedCopyPasteLoader", "BalancedCopyPasteLoaderConfig"]


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



#: The balanced family: copy-paste's parts with the config, the bank's steps, and a source
#: that keeps every instance (the bank takes them whole). Its masks come from
#: ``mask_source`` as copy-paste's do (:func:`~decal.dali_pipes.copy_paste.loader.mask_source`:
#: descriptors on the GPU backend, host masks on the CPU, the same batches either way); the
#: bank's step takes both forms (``dali_pipes/balanced/step.py``).
BALANCED = replace(
    COPY_PASTE,
    name="BalancedCopyPasteLoader",
    config_type=BalancedCopyPasteLoaderConfig,
    source=partial(copy_paste_source, prune_window=False),
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
