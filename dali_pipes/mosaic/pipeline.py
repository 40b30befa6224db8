"""The balanced Mosaic DALI pipeline with host masks and its source (the loader:
``dali_pipes/mosaic/loader.py``; the descriptor graph, the GPU default:
``dali_pipes/mosaic/descriptors.py``).

Semantics: :mod:`decal.dali_pipes.mosaic.twin` (YOLOv4 Mosaic; balanced after the LVIS 2021
challenge reports: the four images are drawn by repeat-factor sampling).

Graph (one per loader)::

    external_source(MosaicSource)        4 × (encoded, masks H×W×(N+1)), sizes, regions, ...
      ├─ decoders.image × 4  (mixed on GPU, cpu)
      ├─ resize × 4 to the planned tile sizes   linear + antialias; masks nearest
      └─ python_function(MosaicStep)            the canvas (tile 0's window, tiles 1–3 pasted
                                                over it, gray elsewhere, flipped), masks onto
                                                the canvas, boxes from masks
           → images 3×S×S, masks N×S×S, boxes N×4, labels, iscrowd, tile, tiles, ...

Every draw is made on the host (:func:`~decal.dali_pipes.mosaic.twin.draw_mosaic_plan`) from the
per-batch generators ``[seed, epoch, shard, k, stream]``: the single-image geometry from stream
0 (as copy-paste draws it), the mosaic from stream 2, replacements for unreadable extra
images from stream 3. So CPU and GPU pipelines, and a resumed run, make the same draws.
A sample that is not a mosaic still carries three tiles: a tiny gray placeholder JPEG with
empty regions, so that every sample has the same four inputs (decoding 8×8 pixels is free).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal, NamedTuple

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ..coco.index import instance_spans
from ..coco.reader import CocoDataset
from ..coco.records import ranges
from ..copy_paste.source import CopyPasteSource
from ..core.epoch_source import LoaderPosition
from .twin import NUM_TILES, MosaicPlan, MosaicStep, batch_regions, draw_mosaic_plan, resized_size
from ..core.graph import pipeline_arguments, source_outputs
from ..core.parallel_source import check_workers
from ..core.weighted_draw import WeightedDraw


__all__ = ["MosaicSource", "TileLayout", "build_mosaic_pipeline", "MosaicOutputs", "OUTPUT_NAMES"]

GEOMETRY_STREAM = 0
MOSAIC_STREAM = 2
REPLACEMENT_STREAM = 3
PLACEHOLDER_SIZE = 8

class MosaicOutputs(NamedTuple):
    """The mosaic pipeline's outputs, by name (B samples; N instances of a sample).

    Attributes:
        images: (3, S, S) uint8.
        masks: (N, S, S) uint8; boxes (N, 4) float32 xyxy px; areas (N,) int64;
            labels (N,) int64; iscrowd (N,) uint8.
        tile: (N,) the tile each instance came from; tiles: the tiles' boxes.
        image_id: () int64 of the first tile; tile_image_ids: (4,) int64.
        position: (POSITION_FIELDS,) int64, a :class:`~decal.dali_pipes.core.epoch_source.PositionRow`.
    """

    images: Any
    masks: Any
    boxes: Any
    areas: Any
    labels: Any
    iscrowd: Any
    tile: Any
    tiles: Any
    image_id: Any
    tile_image_ids: Any
    position: Any


#: Names of the pipeline's outputs, in order (``return_tiles`` appends debug outputs).
OUTPUT_NAMES = MosaicOutputs._fields


@lru_cache(maxsize=4)
def placeholder_jpeg(pad_value: int) -> bytes:
    """An 8×8 gray JPEG (the image of an unused tile)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), (pad_value,) * 3).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass(frozen=True)
class TileLayout:
    """Where a batch's tiles go (host arrays, B samples).

    Attributes:
        items: (B, 4) int64 dataset index of each tile, -1 for a placeholder.
        sizes: (B, 4, 2) int64 resized (h, w) of each tile (8×8 for a placeholder).
        regions: (B, 4, 6) int64 (:func:`~decal.dali_pipes.mosaic.twin.quadrant_regions`,
            :func:`~decal.dali_pipes.mosaic.twin.crop_regions`; zeros for unused tiles).
        flip: (B,) int32.
    """

    items: np.ndarray
    sizes: np.ndarray
    regions: np.ndarray
    flip: np.ndarray


class MosaicSource(CopyPasteSource):
    """Batch-mode ``external_source`` callable of the Mosaic pipeline.

    The epoch order (from the sampler) gives tile 0 of every sample; tiles 1–3 of a mosaic
    are drawn per batch in proportion to ``item_weights``. Columns, per sample:

    ================ ================================================ =========
    column           per-sample shape                                 dtype
    ================ ================================================ =========
    encoded0..3      (bytes,) tile k's file (placeholder if unused)   uint8
    masks0..3        (H_k, W_k, N_k + 1), last channel a dummy         uint8
    size0..3         (2,) resized (h, w) of tile k                     float32
    start0           (2,) (y, x) of the S×S window on tile 0           float32
    regions          (4, 6) every tile's region (see mosaic.py)        int64
    counts           (4,) instances per tile                           int64
    labels           (N,) category ids, tile by tile                   int64
    iscrowd          (N,)                                              uint8
    image_id         (1,) tile 0's image id                            int64
    tile_image_ids   (4,) image id of each tile, -1 if unused          int64
    flip             () 1 = flip the canvas horizontally                int32
    position         (POSITION_FIELDS,)                                int64
    ================ ================================================ =========
    """

    column_names = tuple(
        [f"encoded{k}" for k in range(NUM_TILES)]
        + [f"masks{k}" for k in range(NUM_TILES)]
        + [f"size{k}" for k in range(NUM_TILES)]
        + ["start0", "regions", "counts", "labels", "iscrowd",
           "image_id", "tile_image_ids", "flip", "position"]
    )  # fmt: skip

    def __init__(
        self,
        dataset: CocoDataset,
        sampler: Any,
        *,
        output_size: int,
        prob: float = 0.5,
        center_range: tuple[float, float] = (0.25, 0.75),
        pad_value: int = 114,
        item_weights: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler, **kwargs)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mosaic prob must be in [0, 1], got {prob}")
        lo, hi = (float(v) for v in center_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"center_range must satisfy 0 <= lo <= hi <= 1, got {center_range}")
        if output_size < 2:
            raise ValueError(f"output_size must be >= 2, got {output_size}")
        self.output_size = int(output_size)
        self.prob = float(prob)
        self.center_range = (lo, hi)
        self.pad_value = int(pad_value)
        weights = np.ones(len(dataset)) if item_weights is None else np.asarray(item_weights, dtype=np.float64)
        if weights.shape != (len(dataset),):
            raise ValueError(f"item_weights must be (num_items,) = ({len(dataset)},), got shape {weights.shape}")
        self.item_weights = weights
        # the extra tiles' (and replacements') draw: the weights' CDF, made once (r(i) is fixed)
        self.item_draw = WeightedDraw(weights, field="item_weights")
        self._placeholder = (
            -1,
            np.frombuffer(placeholder_jpeg(self.pad_value), dtype=np.uint8).copy(),
            np.zeros((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 1), dtype=np.uint8),
        )

    def _load_extra(self, index: int, replacement: Callable[[], np.random.Generator]) -> tuple[int, Any]:
        """Tile ``index``, or a replacement drawn from the generator ``replacement()`` when it
        is unreadable (``on_error="skip"``); ``(index, payload)``."""
        for _ in range(64):
            if index not in self.bad_indices:
                payload = self.load(index)
                if payload is not None:
                    return index, payload
            index = self.item_draw.draw_one(replacement())
        raise RuntimeError("MosaicSource: could not find a readable image for a mosaic tile in 64 draws")

    def plan(self, start: LoaderPosition, count: int) -> MosaicPlan:
        """The draws of the batch at ``start`` holding ``count`` samples (a function of the
        start alone: the same in DALI's thread and in a source worker)."""
        return draw_mosaic_plan(
            self.batch_rng(start, GEOMETRY_STREAM),
            self.batch_rng(start, MOSAIC_STREAM),
            count,
            prob=self.prob,
            jitter=(self.jitter.min_scale, self.jitter.max_scale),
            flip_prob=self.flip_prob,
            center_range=self.center_range,
            output_size=self.output_size,
            item_weights=self.item_draw,
        )

    def extra_items(self, start: LoaderPosition, count: int) -> tuple[tuple[Any, int], ...]:
        """The (dataset, index) of the extra tiles of the batch at ``start`` with ``count``
        samples, as :meth:`layout` reads them when all are readable (source workers need
        ``on_error="raise"``): what error recovery checks of the batches workers made."""
        plan = self.plan(start, count)
        return tuple((self.dataset, int(index)) for index in plan.extra[plan.mosaic].reshape(-1))

    def layout(self, start: LoaderPosition, payloads: list[Any]) -> tuple[list[list[Any]], TileLayout, tuple]:
        """The batch's mosaic: per sample the payloads of its four tiles (tile 0 from the epoch
        order, tiles 1–3 drawn, placeholders when it is not a mosaic), their
        :class:`TileLayout`, and the (dataset, index) of the extra tiles read."""
        b = len(payloads)
        s = self.output_size
        plan = self.plan(start, b)
        made: list[np.random.Generator] = []

        def replacement() -> np.random.Generator:  # made only when an extra tile is unreadable
            if not made:
                made.append(self.batch_rng(start, REPLACEMENT_STREAM))
            return made[0]

        tiles: list[list[Any]] = []
        extras: list[tuple[Any, int]] = []
        for i, payload in enumerate(payloads):  # file reads of the drawn tiles
            row = [payload]
            if plan.mosaic[i]:
                for k in range(NUM_TILES - 1):
                    index, extra = self._load_extra(int(plan.extra[i, k]), replacement)
                    row.append(extra)
                    extras.append((self.dataset, index))
            else:
                row += [self._placeholder] * (NUM_TILES - 1)
            tiles.append(row)
        items = np.array([[t[0] for t in row] for row in tiles], dtype=np.int64).reshape(b, NUM_TILES)
        index = self.index
        used = items >= 0
        at = np.where(used, items, 0)
        longer = plan.tile_scale * np.where(plan.mosaic, s / 2, s)[:, None]
        h, w = resized_size(np.asarray(index.heights)[at], np.asarray(index.widths)[at], longer)
        sizes = np.where(used[..., None], np.stack([h, w], axis=-1), PLACEHOLDER_SIZE).astype(np.int64)
        regions = batch_regions(sizes, plan.mosaic, plan.centre, plan.crop_pos, s)
        layout = TileLayout(items=items, sizes=sizes, regions=regions, flip=plan.flip.astype(np.int32))
        return tiles, layout, tuple(extras)

    def tile_columns(self, layout: TileLayout) -> dict[str, Any]:
        """The columns both mosaic sources share, by name: ``size0..3``, ``start0``,
        ``regions``, ``counts``, ``labels``, ``iscrowd``, ``image_id``, ``tile_image_ids``,
        ``flip``; gathered from the compiled index, with no loop over annotations."""
        index = self.index
        b = len(layout.items)
        first, counts = instance_spans(index, layout.items.reshape(-1))
        instances = ranges(first, counts)
        per_sample = counts.reshape(b, NUM_TILES).sum(axis=1)
        bounds = np.concatenate([[0], np.cumsum(per_sample)])
        labels = np.asarray(index.labels)[instances].astype(np.int64)
        crowd = np.asarray(index.iscrowd)[instances].astype(np.uint8)
        ids = np.where(layout.items >= 0, np.asarray(index.image_ids)[np.maximum(layout.items, 0)], -1).astype(np.int64)
        columns: dict[str, Any] = {
            f"size{k}": layout.sizes[:, k].astype(np.float32) for k in range(NUM_TILES)
        }  # fmt: skip
        columns.update(
            start0=(layout.regions[:, 0, :2] - layout.regions[:, 0, 2:4]).astype(np.float32),
            regions=layout.regions,
            counts=counts.reshape(b, NUM_TILES),
            labels=[labels[bounds[i] : bounds[i + 1]] for i in range(b)],
            iscrowd=[crowd[bounds[i] : bounds[i + 1]] for i in range(b)],
            image_id=ids[:, :1].copy(),
            tile_image_ids=ids,
            flip=layout.flip,
        )
        return columns

    def step(self) -> MosaicStep:
        """The graph's step for this source's columns (host masks placed on the canvas)."""
        return MosaicStep(self.output_size, self.pad_value)

    def mask_inputs(self, col: dict[str, Any], on_gpu: bool) -> list[Any]:
        """The step's mask inputs in a graph over this source (``col``: its columns by name):
        ``masks0..3`` resized with their tiles (nearest neighbour)."""
        masks = []
        for k in range(NUM_TILES):
            m = col[f"masks{k}"].gpu() if on_gpu else col[f"masks{k}"]
            masks.append(fn.resize(m, size=col[f"size{k}"], interp_type=types.INTERP_NN, antialias=False))
        return masks

    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[tuple[list[Any], ...], tuple]:
        tiles, layout, extras = self.layout(start, payloads)
        cols = self.tile_columns(layout)
        for k in range(NUM_TILES):
            cols[f"encoded{k}"] = [row[k][1] for row in tiles]
            cols[f"masks{k}"] = [row[k][2] for row in tiles]
        cols["position"] = self.position_column(start, cursor, len(payloads))
        return tuple(cols[name] for name in self.column_names), extras


def resized_tiles(col: dict[str, Any], on_gpu: bool) -> list[Any]:
    """The four tiles of a mosaic graph: ``encoded{k}`` decoded (mixed on the GPU) and resized
    to ``size{k}`` (linear, antialiased)."""
    tiles = []
    for k in range(NUM_TILES):
        image = fn.decoders.image(
            col[f"encoded{k}"], device="mixed" if on_gpu else "cpu", output_type=types.RGB,
            adjust_orientation=False,
        )  # fmt: skip
        tiles.append(fn.resize(image, size=col[f"size{k}"], antialias=True))
    return tiles


def step_outputs(step: Any, device: str, inputs: list[Any], col: dict[str, Any]) -> tuple[Any, ...]:
    """The end of a mosaic graph: ``step`` (a batched ``fn.python_function`` on ``device``)
    over ``inputs``, its eight outputs, the images transposed to 3×S×S, as a
    :class:`MosaicOutputs` tuple with the source's ``image_id``, ``tile_image_ids`` and
    ``position`` columns (from ``col``)."""
    images, masks, boxes, areas, labels, iscrowd, tile, tile_boxes = fn.python_function(
        *inputs, function=step, batch_processing=True, num_outputs=8, device=device,
    )  # fmt: skip
    images = fn.transpose(images, perm=[2, 0, 1], output_layout="CHW")
    return tuple(
        MosaicOutputs(
            images=images, masks=masks, boxes=boxes, areas=areas, labels=labels, iscrowd=iscrowd,
            tile=tile, tiles=tile_boxes, image_id=col["image_id"], tile_image_ids=col["tile_image_ids"],
            position=col["position"],
        )
    )  # fmt: skip


#: The small columns every mosaic step takes after its tiles and masks, in order.
STEP_COLUMNS = ("start0", "regions", "counts", "flip", "labels", "iscrowd")


def build_mosaic_pipeline(
    source: MosaicSource,
    *,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
    return_tiles: bool = False,
    source_workers: int = 0,
    source_start_method: str = "spawn",
) -> Pipeline:
    """Build (not yet run) the Mosaic pipeline over ``source``; outputs are
    :data:`OUTPUT_NAMES` (then, with ``return_tiles``, the four resized tiles and the
    ``start0``, ``regions`` and ``flip`` columns, for the twin test). Output size and gray
    level come from the source; its masks and step from the source too
    (:meth:`MosaicSource.mask_inputs`, :meth:`MosaicSource.step`): host masks here,
    descriptors for a :class:`~decal.dali_pipes.mosaic.descriptors.MosaicDescriptorSource`.
    ``source_workers``: 0 calls ``source`` in DALI's thread; N runs it in N worker processes
    (the same batches: a mosaic's extra tiles are drawn from its batch's start)."""
    check_workers(source_workers, source_start_method, source.on_error)
    arguments = pipeline_arguments(
        source, device, device_id, num_threads, prefetch_queue_depth, source_workers, source_start_method
    )
    on_gpu = device == "gpu"
    step = source.step()
    names = source.column_names

    @pipeline_def(**arguments)
    def mosaic_pipeline():
        layouts = ["HWC" if n.startswith("masks") else "" for n in names]
        col = dict(zip(names, source_outputs(source, len(names), source_workers, layout=layouts)))
        tiles = resized_tiles(col, on_gpu)
        small = [col[n] for n in STEP_COLUMNS]
        if on_gpu:  # the step's inputs must share its backend; these are small
            small = [x.gpu() for x in small]
        outputs = step_outputs(step, device, [*tiles, *source.mask_inputs(col, on_gpu), *small], col)
        if return_tiles:  # for the twin test: the resized tiles and the plan columns
            return outputs + tuple(tiles) + (col["start0"], col["regions"], col["flip"])
        return outputs

    return mosaic_pipeline()
