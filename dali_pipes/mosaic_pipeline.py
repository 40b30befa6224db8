"""The balanced Mosaic DALI pipeline, its source and its torch iterator (``MosaicLoader``).

Semantics: :mod:`decal.dali_pipes.mosaic` (YOLOv4 Mosaic; balanced after the LVIS 2021
challenge reports: the four images are drawn by repeat-factor sampling).

Graph (one per loader)::

    external_source(MosaicSource)        4 × (encoded, masks H×W×(N+1)), sizes, regions, ...
      ├─ decoders.image × 4  (mixed on GPU, cpu)
      ├─ resize × 4 to the planned tile sizes   linear + antialias; masks nearest
      ├─ slice(tile 0, S×S window, pad gray)    the canvas (tile 0 in place, gray elsewhere)
      ├─ multi_paste(canvas, tiles 1–3)         regions from the plan (empty when no mosaic)
      ├─ flip(horizontal)
      └─ python_function(MosaicStep)            masks onto the canvas, boxes from masks
           → images 3×S×S, masks N×S×S, boxes N×4, labels, iscrowd, tile, tiles, ...

Every draw is made on the host (:func:`~decal.dali_pipes.mosaic.draw_mosaic_plan`) from the
per-batch generators ``[seed, epoch, shard, k, stream]``: the single-image geometry from stream
0 (as copy-paste draws it), the mosaic from stream 2, replacements for unreadable extra
images from stream 3. So CPU and GPU pipelines, and a resumed run, make the same draws.
A sample that is not a mosaic still carries three tiles: a tiny gray placeholder JPEG with
empty regions, so that every sample has the same four inputs (decoding 8×8 pixels is free).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from .backend import resolve_backend
from .coco_reader import CocoDataset
from .copy_paste_source import CopyPasteSource
from .epoch_source import LoaderPosition
from .common_options import DEVICE_OPTIONS, RUN_OPTIONS
from .loader_config import check_loader_config
from .loader_parts import epoch_sampler, pipeline_device_options, source_options
from .option_schema import with_options
from .loader_base import check_options, dense, position_after
from .mosaic import NUM_TILES, MosaicStep, crop_regions, draw_mosaic_plan, quadrant_regions, resized_size
from .samplers import RepeatFactorSampler
from .torch_iterator import Batch, CocoPipelineLoader, instance_targets

__all__ = [
    "MosaicSource",
    "MosaicLoader",
    "MosaicLoaderConfig",
    "build_mosaic_pipeline",
    "MosaicOutputs",
    "OUTPUT_NAMES",
    "preview_mosaic",
    "render_mosaic_grid",
]

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
        position: (POSITION_FIELDS,) int64, a :class:`~decal.dali_pipes.epoch_source.PositionRow`.
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
    in_anchors       (4, 2) multi_paste: canvas, tiles 1–3 (y, x)      int32
    out_anchors      (4, 2)                                            int32
    shapes           (4, 2)                                            int32
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
        + ["start0", "in_anchors", "out_anchors", "shapes", "regions", "counts", "labels", "iscrowd",
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
        if weights.shape != (len(dataset),) or not (np.all(weights >= 0) and weights.sum() > 0):
            raise ValueError("item_weights must be (num_items,), >= 0, with a positive sum")
        self.item_weights = weights
        self._placeholder = (
            -1,
            np.frombuffer(placeholder_jpeg(self.pad_value), dtype=np.uint8).copy(),
            np.zeros((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 1), dtype=np.uint8),
        )

    def _load_extra(self, index: int, replacement: np.random.Generator) -> tuple[int, Any]:
        """Tile ``index``, or a replacement drawn from ``replacement`` when it is unreadable
        (``on_error="skip"``); ``(index, payload)``."""
        prob = self.item_weights / self.item_weights.sum()
        for _ in range(64):
            if index not in self.bad_indices:
                payload = self.load(index)
                if payload is not None:
                    return index, payload
            index = int(replacement.choice(len(prob), p=prob))
        raise RuntimeError("MosaicSource: could not find a readable image for a mosaic tile in 64 draws")

    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[tuple[list[Any], ...], tuple]:
        b = len(payloads)
        s = self.output_size
        jitter = (self.jitter.min_scale, self.jitter.max_scale)
        plan = draw_mosaic_plan(
            self.batch_rng(start, GEOMETRY_STREAM),
            self.batch_rng(start, MOSAIC_STREAM),
            b,
            prob=self.prob,
            jitter=jitter,
            flip_prob=self.flip_prob,
            center_range=self.center_range,
            output_size=s,
            item_weights=self.item_weights,
        )
        replacement = self.batch_rng(start, REPLACEMENT_STREAM)
        cols: dict[str, list[Any]] = {name: [] for name in self.column_names}
        extras: list[tuple[Any, int]] = []
        for i, payload in enumerate(payloads):  # host work per sample: records and small arrays
            tiles = [payload]
            if plan.mosaic[i]:
                for k in range(NUM_TILES - 1):
                    index, extra = self._load_extra(int(plan.extra[i, k]), replacement)
                    tiles.append(extra)
                    extras.append((self.dataset, index))
            else:
                tiles += [self._placeholder] * (NUM_TILES - 1)
            records = [self.dataset[t[0]] if t[0] >= 0 else None for t in tiles]
            sizes = np.zeros((NUM_TILES, 2), dtype=np.int64)
            for k, (t, rec) in enumerate(zip(tiles, records)):
                if rec is None:
                    sizes[k] = (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE)
                    continue
                longer = plan.tile_scale[i, k] * (s / 2 if plan.mosaic[i] else s)
                h, w = resized_size(rec.height, rec.width, longer)
                sizes[k] = (int(h), int(w))
            if plan.mosaic[i]:
                regions = quadrant_regions(sizes, (int(plan.centre[i, 0]), int(plan.centre[i, 1])), s)
            else:
                regions = np.zeros((NUM_TILES, 6), dtype=np.int64)
                _, regions[0] = crop_regions((int(sizes[0, 0]), int(sizes[0, 1])), tuple(plan.crop_pos[i]), s)
            start0 = regions[0, :2] - regions[0, 2:4]
            in_anchors = np.zeros((NUM_TILES, 2), dtype=np.int32)
            out_anchors = np.zeros((NUM_TILES, 2), dtype=np.int32)
            shapes = np.zeros((NUM_TILES, 2), dtype=np.int32)
            shapes[0] = (s, s)  # region 0: the canvas onto itself
            in_anchors[1:], out_anchors[1:], shapes[1:] = regions[1:, 0:2], regions[1:, 2:4], regions[1:, 4:6]
            labels, crowd, counts = [], [], np.zeros(NUM_TILES, dtype=np.int64)
            for k, rec in enumerate(records):
                if rec is not None:
                    labels += [a.category_id for a in rec.annotations]
                    crowd += [a.iscrowd for a in rec.annotations]
                    counts[k] = len(rec.annotations)
            for k, t in enumerate(tiles):
                cols[f"encoded{k}"].append(t[1])
                cols[f"masks{k}"].append(t[2])
                cols[f"size{k}"].append(sizes[k].astype(np.float32))
            cols["start0"].append(start0.astype(np.float32))
            cols["in_anchors"].append(in_anchors)
            cols["out_anchors"].append(out_anchors)
            cols["shapes"].append(shapes)
            cols["regions"].append(regions)
            cols["counts"].append(counts)
            cols["labels"].append(np.array(labels, dtype=np.int64))
            cols["iscrowd"].append(np.array(crowd, dtype=np.uint8))
            cols["image_id"].append(np.array([records[0].image_id], dtype=np.int64))
            cols["tile_image_ids"].append(
                np.array([rec.image_id if rec is not None else -1 for rec in records], dtype=np.int64)
            )
            cols["flip"].append(np.int32(plan.flip[i]))
        cols["position"] = self.position_column(start, cursor, b)
        return tuple(cols[name] for name in self.column_names), tuple(extras)


def build_mosaic_pipeline(
    source: MosaicSource,
    *,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
    return_tiles: bool = False,
) -> Pipeline:
    """Build (not yet run) the Mosaic pipeline over ``source``; outputs are
    :data:`OUTPUT_NAMES` (then, with ``return_tiles``, the four resized tiles and the
    ``start0``, ``regions`` and ``flip`` columns, for the twin test). Output size and gray
    level come from the source."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    on_gpu = device == "gpu"
    s = source.output_size
    step = MosaicStep(s)
    names = source.column_names

    @pipeline_def(
        batch_size=source.batch_size,
        num_threads=num_threads,
        device_id=device_id if on_gpu else None,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    def mosaic_pipeline():
        layouts = ["HWC" if n.startswith("masks") else "" for n in names]
        col = dict(zip(names, fn.external_source(source=source, num_outputs=len(names), batch=True, layout=layouts)))
        tiles, masks = [], []
        for k in range(NUM_TILES):
            image = fn.decoders.image(
                col[f"encoded{k}"], device="mixed" if on_gpu else "cpu", output_type=types.RGB,
                adjust_orientation=False,
            )  # fmt: skip
            m = col[f"masks{k}"].gpu() if on_gpu else col[f"masks{k}"]
            tiles.append(fn.resize(image, size=col[f"size{k}"], antialias=True))
            masks.append(fn.resize(m, size=col[f"size{k}"], interp_type=types.INTERP_NN, antialias=False))
        canvas = fn.slice(
            tiles[0], col["start0"], [float(s), float(s)], axis_names="HW", out_of_bounds_policy="pad",
            fill_values=float(source.pad_value), normalized_anchor=False, normalized_shape=False,
        )  # fmt: skip
        images = fn.multi_paste(
            canvas, tiles[1], tiles[2], tiles[3],
            in_anchors=col["in_anchors"], out_anchors=col["out_anchors"], shapes=col["shapes"], output_size=[s, s],
        )  # fmt: skip
        images = fn.flip(images, horizontal=col["flip"])
        small = [col[n] for n in ("regions", "counts", "flip", "labels", "iscrowd")]
        if on_gpu:
            small = [x.gpu() for x in small]
        out_masks, boxes, areas, labels, iscrowd, tile, tile_boxes = fn.python_function(
            *masks, *small, function=step, batch_processing=True, num_outputs=7, device=device,
        )  # fmt: skip
        images = fn.transpose(images, perm=[2, 0, 1], output_layout="CHW")
        outputs = tuple(
            MosaicOutputs(
                images=images, masks=out_masks, boxes=boxes, areas=areas, labels=labels, iscrowd=iscrowd,
                tile=tile, tiles=tile_boxes, image_id=col["image_id"], tile_image_ids=col["tile_image_ids"],
                position=col["position"],
            )
        )  # fmt: skip
        if return_tiles:  # for the twin test: the resized tiles and the plan columns
            return outputs + tuple(tiles) + (col["start0"], col["regions"], col["flip"])
        return outputs

    return mosaic_pipeline()


@dataclass(frozen=True)
@with_options(RUN_OPTIONS + DEVICE_OPTIONS, first=False)
class MosaicLoaderConfig:
    """Every parameter of :class:`MosaicLoader`, with its default.

    Attributes:
        batch_size, output_size, flip_prob, pad_value, paste_by_box, seed, shuffle,
        shard_id, num_shards, drop_last, on_error, device, device_id, num_threads,
        prefetch_queue_depth: as :class:`~decal.dali_pipes.torch_iterator.CopyPasteLoaderConfig`.
        jitter: range of r; a tile's longer side is r·S/2 in a mosaic, r·S alone
            (``"none"``, ``"ssj"``, ``"lsj"`` or a (min, max) pair).
        mosaic_prob: probability that a sample is a mosaic (0.5).
        center_range: the mosaic centre is uniform in this range times S, per axis.
        repeat_factor_threshold: t of repeat-factor sampling (0.001, LVIS), which draws
            the epoch order and weighs the three extra images by r(i); None for uniform.
    """

    batch_size: int = 8
    output_size: int = 640
    jitter: Any = "none"
    flip_prob: float = 0.5
    pad_value: int = 114
    mosaic_prob: float = 0.5
    center_range: tuple[float, float] = (0.25, 0.75)
    paste_by_box: bool = False
    repeat_factor_threshold: float | None = 0.001

    def __post_init__(self) -> None:
        check_loader_config(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class MosaicLoader(CocoPipelineLoader):
    """Iterate over balanced-Mosaic batches of a COCO/LVIS instance dataset.

    Yields :class:`~decal.dali_pipes.torch_iterator.Batch` objects; each target carries,
    besides ``boxes``, ``labels``, ``masks``, ``area``, ``iscrowd``, ``pasted`` (all zeros)
    and ``image_id`` (tile 0's): ``tile`` (N,) int64 the tile each instance came from,
    ``tiles`` (4, 4) int32 each tile's box on the canvas (zeros when unused) and
    ``tile_image_ids`` (4,) int64 (-1 when unused; only tile 0 is used when the sample is not
    a mosaic).

    Keyword arguments are the fields of :class:`MosaicLoaderConfig`.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, **options: Any) -> None:
        super().__init__()
        check_options("MosaicLoader", options, MosaicLoaderConfig.field_names())
        self.config = MosaicLoaderConfig(**options)
        cfg = self.config
        self.backend = resolve_backend(cfg.device)
        self.dataset = CocoDataset.open(annotation_file, image_dir, on_error=cfg.on_error, require_segmentation=not cfg.paste_by_box)
        self.sampler = sampler = epoch_sampler(self.dataset, cfg)
        weights = sampler.repeat_factors if isinstance(sampler, RepeatFactorSampler) else np.ones(len(self.dataset))
        self.source = MosaicSource(
            self.dataset,
            sampler,
            output_size=cfg.output_size,
            prob=cfg.mosaic_prob,
            center_range=tuple(cfg.center_range),
            pad_value=cfg.pad_value,
            item_weights=weights,
            **source_options(cfg),
        )

    def _build_pipeline(self) -> Any:
        cfg = self.config
        return build_mosaic_pipeline(
            self.source,
            **pipeline_device_options(cfg, self.backend),
        )

    def _to_batch(self, outputs: tuple[Any, ...]) -> Batch:
        named = MosaicOutputs(*outputs[: len(MosaicOutputs._fields)])
        images = dense(named.images)
        batch_size = images.shape[0]
        targets = instance_targets(named._asdict(), batch_size, extra=("tile", "tiles"))
        tile_ids = np.array(named.tile_image_ids.as_tensor()).reshape(batch_size, NUM_TILES)
        for target, ids in zip(targets, tile_ids):
            target["tile_image_ids"] = torch.from_numpy(ids.copy())
        return Batch(images=images, targets=targets, position=position_after(named.position))


def render_mosaic_grid(
    samples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    path: str | Path,
    *,
    category_names: dict[int, str] | None = None,
    columns: int = 4,
    tile_size: int = 320,
    title: str = "",
) -> Path:
    """A PNG grid of Mosaic samples: instances as in the copy-paste preview (green), each
    tile's region outlined in yellow with its number, and the mosaic centre marked."""
    from PIL import Image, ImageDraw

    from .preview import render_sample

    if not samples:
        raise ValueError("render_mosaic_grid: no samples to draw")
    rendered = []
    for image, target in samples:
        picture = render_sample(image, target, category_names)
        draw = ImageDraw.Draw(picture)
        tiles = target["tiles"].cpu().numpy()
        used = [k for k in range(NUM_TILES) if tiles[k, 2] > tiles[k, 0]]
        for k in used:
            x0, y0, x1, y1 = (int(v) for v in tiles[k])
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 210, 0), width=2)
            draw.text((x0 + 3, y0 + 2), f"tile {k}", fill=(255, 210, 0))
        if len(used) > 1:  # the centre is the corner the four tiles share
            cx = int(tiles[0, 0] if tiles[0, 0] == tiles[1, 2] else tiles[0, 2])
            cy = int(tiles[0, 3])
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], outline=(255, 60, 60), width=2)
        rendered.append(picture.resize((tile_size, tile_size)))
    columns = min(columns, len(rendered))
    rows = -(-len(rendered) // columns)
    header = 22
    grid = Image.new("RGB", (columns * tile_size, rows * tile_size + header), (20, 20, 20))
    ImageDraw.Draw(grid).text(
        (6, 5), f"{title}   yellow: tile regions   red circle: mosaic centre   green: instances", fill=(230, 230, 230)
    )
    for k, tile in enumerate(rendered):
        grid.paste(tile, ((k % columns) * tile_size, header + (k // columns) * tile_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def preview_mosaic(
    path: str | Path,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    images: int = 8,
    tile_size: int = 320,
    **options: Any,
) -> Path:
    """Write a PNG grid of balanced-Mosaic samples (defaults: the embedded sample dataset,
    384 px, mosaic probability 0.5)."""
    if annotation_file is None:
        from .sample_data import ensure_sample_dataset

        annotation_file, image_dir = ensure_sample_dataset()
    defaults = dict(batch_size=4, output_size=384, seed=0)
    loader = MosaicLoader(annotation_file, image_dir, **{**defaults, **options})
    shown: list[tuple[Any, dict]] = []
    while len(shown) < images:
        for batch in loader:
            shown.extend(zip(batch.images, batch.targets))
            if len(shown) >= images:
                break
    names = {cid: str(c.get("name", cid)) for cid, c in loader.categories.items()}
    title = f"balanced mosaic (p={loader.config.mosaic_prob})"
    return render_mosaic_grid(shown[:images], path, category_names=names, tile_size=tile_size, title=title)
