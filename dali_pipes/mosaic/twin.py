"""Balanced Mosaic: the host-side plan, the NumPy twin of the image composition, and the
mask placement step (NumPy or CuPy through the array module; no DALI import here).

Semantics (YOLOv4, Bochkovskiy et al. 2020, §3.3 "Mosaic"; mmdetection ``Mosaic``; *balanced*
after the LVIS 2021 challenge reports: the four images are drawn by repeat-factor sampling):

* With probability ``prob`` (0.5) a sample is a mosaic of four images: its own (the one the
  epoch order gives, drawn by the sampler) and three more drawn with probability proportional
  to their repeat factor r(i) (the stationary distribution of repeat-factor sampling; uniform
  with the uniform sampler).
* The output canvas is S×S (the model's input), gray (``pad_value``) where no image lands.
  A centre ``(cx, cy)`` is drawn uniformly in ``center_range × S`` (default [0.25, 0.75] of
  S: mmdetection's ``center_ratio_range=(0.5, 1.5)`` of the tile size on a canvas of two
  tiles, here with tiles of size S/2).
* Each of the four images is resized, keeping its aspect ratio, so that its longer side is
  ``r · S / 2`` (r from the scale jitter; 1 with ``jitter="none"``), and placed in its quadrant
  with a corner on the centre: image 0 top-left (its bottom-right corner on the centre),
  1 top-right (bottom-left corner), 2 bottom-left (top-right corner), 3 bottom-right (top-left
  corner). What falls outside the canvas is cut off (mmdetection ``_mosaic_combine``).
* A sample that is not a mosaic gets the copy-paste geometry of its own image: longer side
  ``r · S``, an S×S window at ``crop_pos · (resized − S)`` (DALI ``fn.crop`` semantics, padded
  with gray where the image is smaller).
* Then a horizontal flip with probability ``flip_prob``, of the whole canvas.
* Masks travel with their image (nearest-neighbour resize, then the same shift and clip);
  instances clipped to nothing are dropped, and boxes are re-derived from the masks.

The images are composed and the masks placed by :class:`MosaicStep`, the same code on both
backends (:func:`compose_images` and :func:`place_masks`: a few strided copies per sample);
the descriptor graph's step (``dali_pipes/mosaic/descriptors.py``) rasterises the masks onto
the canvas instead, through :func:`tile_geometry_batch` (whose per-tile specification is
:func:`tile_geometries`), and shares the rest
(:func:`host_inputs`, :func:`compose_batch`, :func:`finish_instances`);
:func:`compose_images_numpy` is the composition's NumPy twin. DALI's ``fn.multi_paste`` is not
used: on the GPU backend (DALI 2.4, H200) it returned wrong canvases for this graph's inputs
(tiles of different sizes, 8×8 placeholders with empty regions), while the CPU backend was right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...kernels.mask_boxes import mask_boxes
from ...kernels.geometry_batch import GeometryBatch, placed_geometries
from ...kernels.mask_geometry import SampleGeometry, placed_geometry
from ...kernels.array_module import cupy_module, to_host
from ..core.step_io import host_int64
from ..core.weighted_draw import WeightedDraw

__all__ = [
    "NUM_TILES",
    "MosaicPlan",
    "round_half_up",
    "resized_size",
    "draw_mosaic_plan",
    "quadrant_regions",
    "crop_regions",
    "batch_regions",
    "compose_images",
    "compose_images_numpy",
    "place_masks",
    "tile_boxes",
    "tile_geometries",
    "tile_geometry_batch",
    "StepInputs",
    "host_inputs",
    "compose_batch",
    "finish_instances",
    "MosaicStep",
]

NUM_TILES = 4
#: Region columns: in_y, in_x (top-left inside the resized tile), out_y, out_x (in the
#: canvas), height, width.
REGION_FIELDS = 6


def round_half_up(value: np.ndarray | float) -> np.ndarray:
    """Nearest integer, halves up (DALI rounds crop anchors to nearest)."""
    return np.floor(np.asarray(value, dtype=np.float64) + 0.5).astype(np.int64)


def resized_size(height: np.ndarray, width: np.ndarray, longer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (h, w) of images resized, aspect kept, to a longer side of ``longer`` px (>= 1)."""
    height = np.asarray(height, dtype=np.float64)
    width = np.asarray(width, dtype=np.float64)
    scale = np.asarray(longer, dtype=np.float64) / np.maximum(height, width)
    return (
        np.maximum(1, round_half_up(height * scale)),
        np.maximum(1, round_half_up(width * scale)),
    )


def _axis_span(centre: int, size: int, limit: int, before: bool) -> tuple[int, int, int]:
    """Along one axis, a tile of ``size`` px at the mosaic centre: (start on the canvas,
    extent, start in the tile). Before the centre (left, top) it ends there, else it starts
    there; either way clipped to the canvas [0, ``limit``)."""
    if before:
        out = max(centre - size, 0)
        extent = centre - out
        return out, extent, size - extent
    return centre, min(size, limit - centre), 0


def quadrant_regions(sizes: np.ndarray, centre: tuple[int, int], output_size: int) -> np.ndarray:
    """(4, 6) regions of the four resized tiles ``sizes`` (4, 2) (h, w) around ``centre``
    (cx, cy) on an S×S canvas; see the module docstring. A tile whose region is empty gets
    height or width 0."""
    s = int(output_size)
    cx, cy = int(centre[0]), int(centre[1])
    regions = np.zeros((NUM_TILES, REGION_FIELDS), dtype=np.int64)
    for k in range(NUM_TILES):  # four fixed cases: host arithmetic on 4 rows
        h, w = int(sizes[k][0]), int(sizes[k][1])
        out_x, rw, in_x = _axis_span(cx, w, s, before=k in (0, 2))  # left tiles
        out_y, rh, in_y = _axis_span(cy, h, s, before=k in (0, 1))  # top tiles
        regions[k] = (in_y, in_x, out_y, out_x, max(rh, 0), max(rw, 0))
    return regions


def crop_regions(size: tuple[int, int], crop_pos: tuple[float, float], output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The single-image geometry: ``(start (2,) (y, x) of the S×S window in the resized image,
    possibly negative; region (6,) of the image inside the window)``."""
    s = int(output_size)
    h, w = int(size[0]), int(size[1])
    start = np.array(
        [int(round_half_up(crop_pos[1] * (h - s))), int(round_half_up(crop_pos[0] * (w - s)))], dtype=np.int64
    )
    in_y, in_x = max(int(start[0]), 0), max(int(start[1]), 0)
    out_y, out_x = max(-int(start[0]), 0), max(-int(start[1]), 0)
    region = np.array([in_y, in_x, out_y, out_x, min(h - in_y, s - out_y), min(w - in_x, s - out_x)], dtype=np.int64)
    return start, region


def batch_regions(
    sizes: np.ndarray, mosaic: np.ndarray, centre: np.ndarray, crop_pos: np.ndarray, output_size: int
) -> np.ndarray:
    """The (B, 4, 6) int64 regions of a batch in one pass over its tiles: a mosaic sample's
    rows are :func:`quadrant_regions` of its ``sizes`` around its ``centre``; a single
    image's tile 0 is :func:`crop_regions` of its size at ``crop_pos`` and tiles 1–3 are
    zeros. Equal to those per-sample functions (``tests/test_mosaic_layout.py``).

    Args:
        sizes: (B, 4, 2) resized (h, w) of the tiles (>= 1).
        mosaic: (B,) bool; centre: (B, 2) (cx, cy) in [0, S]; crop_pos: (B, 2) float64 (x, y).
        output_size: S.
    """
    s = int(output_size)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, NUM_TILES, 2)
    mosaic = np.asarray(mosaic, dtype=bool).reshape(-1)
    centre = np.asarray(centre, dtype=np.int64).reshape(-1, 2)
    h, w = sizes[..., 0], sizes[..., 1]
    cx, cy = centre[:, :1], centre[:, 1:]
    left = np.array([True, False, True, False])  # tiles 0, 2 end at the centre along x
    top = np.array([True, True, False, False])  # tiles 0, 1 end at the centre along y
    out_x = np.where(left, np.maximum(cx - w, 0), cx)
    out_y = np.where(top, np.maximum(cy - h, 0), cy)
    rw = np.where(left, cx - out_x, np.minimum(w, s - cx))
    rh = np.where(top, cy - out_y, np.minimum(h, s - cy))
    in_x = np.where(left, w - rw, 0)
    in_y = np.where(top, h - rh, 0)
    regions = np.stack([in_y, in_x, out_y, out_x, np.maximum(rh, 0), np.maximum(rw, 0)], axis=-1)
    # single images: tile 0's window at crop_pos (float64 products, halves up, as crop_regions)
    h0, w0 = h[:, 0], w[:, 0]
    crop_pos = np.asarray(crop_pos, dtype=np.float64).reshape(-1, 2)
    start_y = round_half_up(crop_pos[:, 1] * (h0 - s))
    start_x = round_half_up(crop_pos[:, 0] * (w0 - s))
    iy, ix = np.maximum(start_y, 0), np.maximum(start_x, 0)
    oy, ox = np.maximum(-start_y, 0), np.maximum(-start_x, 0)
    single = np.zeros_like(regions)
    single[:, 0] = np.stack([iy, ix, oy, ox, np.minimum(h0 - iy, s - oy), np.minimum(w0 - ix, s - ox)], axis=-1)
    return np.where(mosaic[:, None, None], regions, single)


@dataclass(frozen=True)
class MosaicPlan:
    """The draws of one batch (host arrays, B samples).

    Attributes:
        mosaic: (B,) bool, the sample is a mosaic.
        centre: (B, 2) int64 (cx, cy); (0, 0) for a single image.
        extra: (B, 3) int64 dataset indices of tiles 1–3, -1 for a single image.
        tile_scale: (B, 4) float64 r of each tile (its longer side is r·S/2 in a mosaic, r·S
            for a single image).
        crop_pos: (B, 2) float64 (x, y) window anchor fraction of a single image.
        flip: (B,) int32.
    """

    mosaic: np.ndarray
    centre: np.ndarray
    extra: np.ndarray
    tile_scale: np.ndarray
    crop_pos: np.ndarray
    flip: np.ndarray


def draw_mosaic_plan(
    geometry_rng: np.random.Generator,
    mosaic_rng: np.random.Generator,
    batch_size: int,
    *,
    prob: float,
    jitter: tuple[float, float],
    flip_prob: float,
    center_range: tuple[float, float],
    output_size: int,
    item_weights: np.ndarray | WeightedDraw,
) -> MosaicPlan:
    """Draw a batch's plan. The single-image draws (scale, crop position, flip) come from
    ``geometry_rng`` exactly as the copy-paste source draws them
    (:func:`~decal.dali_pipes.core.scale_jitter.draw_geometry`); the mosaic draws (coin, centre,
    three more images, their scales) from ``mosaic_rng``.

    ``item_weights`` are the draw weights of the extra images, (num_items,) (the repeat
    factors with RFS, ones with the uniform sampler), or their :class:`WeightedDraw` made
    once: the extra tiles are then drawn in O(B log num_items) instead of cumulating the
    weights on every batch, with the same indices and generator state as
    ``mosaic_rng.choice(num_items, (B, 3), p=weights / weights.sum())``.
    """
    from ..core.scale_jitter import ScaleJitter, draw_geometry

    geometry = draw_geometry(geometry_rng, batch_size, ScaleJitter(*jitter), flip_prob)
    coin = mosaic_rng.random(batch_size) < prob
    lo, hi = center_range
    centre = round_half_up(mosaic_rng.uniform(lo, hi, size=(batch_size, 2)) * output_size)
    draw = item_weights if isinstance(item_weights, WeightedDraw) else WeightedDraw(item_weights, field="item_weights")
    extra = draw.draw(mosaic_rng, (batch_size, NUM_TILES - 1))
    scales = mosaic_rng.uniform(jitter[0], jitter[1], size=(batch_size, NUM_TILES - 1))
    tile_scale = np.concatenate([geometry.scale.astype(np.float64)[:, None], scales], axis=1)
    return MosaicPlan(
        mosaic=coin,
        centre=np.where(coin[:, None], centre, 0).astype(np.int64),
        extra=np.where(coin[:, None], extra, -1).astype(np.int64),
        tile_scale=tile_scale,
        crop_pos=np.stack([geometry.crop_x, geometry.crop_y], axis=1).astype(np.float64),
        flip=geometry.flip.astype(np.int32),
    )


def compose_images(
    xp: Any,
    tiles: Sequence[Any],
    start0: np.ndarray,
    regions: np.ndarray,
    output_size: int,
    pad_value: int,
    flip: int,
) -> Any:
    """The image of one mosaic sample on its S×S canvas (NumPy or CuPy, same code).

    Args:
        xp: ``numpy`` or ``cupy`` (the module of ``tiles``).
        tiles: the four resized tiles (h_k, w_k, 3) uint8 (unused ones are ignored).
        start0: (2,) (y, x) of the S×S window on tile 0 (gray padding where it leaves tile 0).
        regions: (4, 6) tile regions; tiles 1–3 are pasted over the canvas in order;
            tile 0's region lies inside its window by construction.
        output_size: S.
        pad_value: gray level where no tile lands.
        flip: 1 to flip the result horizontally.

    Returns:
        (S, S, 3) uint8 on the device of ``tiles``.
    """
    s = int(output_size)
    canvas = xp.full((s, s, 3), pad_value, dtype=xp.uint8)
    y0, x0 = int(start0[0]), int(start0[1])
    t0 = tiles[0]
    ys, xs = slice(max(y0, 0), min(y0 + s, t0.shape[0])), slice(max(x0, 0), min(x0 + s, t0.shape[1]))
    if ys.stop > ys.start and xs.stop > xs.start:
        canvas[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = t0[ys, xs]
    for k in range(1, NUM_TILES):
        in_y, in_x, out_y, out_x, h, w = (int(v) for v in regions[k])
        if h > 0 and w > 0:
            canvas[out_y : out_y + h, out_x : out_x + w] = tiles[k][in_y : in_y + h, in_x : in_x + w]
    return xp.ascontiguousarray(canvas[:, ::-1]) if flip else canvas


def compose_images_numpy(
    tiles: Sequence[np.ndarray],
    start0: np.ndarray,
    regions: np.ndarray,
    output_size: int,
    pad_value: int,
    flip: int,
) -> np.ndarray:
    """NumPy twin of the image composition of one sample: :func:`compose_images` with NumPy
    (the arguments and result as there)."""
    return compose_images(np, tiles, start0, regions, output_size, pad_value, flip)


def place_masks(
    xp: Any, tile_masks: Sequence[Any], counts: np.ndarray, regions: np.ndarray, output_size: int, flip: int
) -> tuple[Any, np.ndarray]:
    """The instance masks of one sample on its canvas.

    Args:
        xp: ``numpy`` or ``cupy``.
        tile_masks: four (h_k, w_k, C_k) uint8 resized masks (C_k >= counts[k]; extra
            channels, like the dummy one, are ignored).
        counts: (4,) instances of each tile.
        regions: (4, 6) as :func:`quadrant_regions` / :func:`crop_regions`.
        output_size: S.
        flip: 1 to flip horizontally.

    Returns:
        ``(masks (N, S, S) uint8, tile (N,) int64)``, N = counts.sum(), tile by tile.
    """
    s = int(output_size)
    counts = np.asarray(counts, dtype=np.int64)
    out = xp.zeros((int(counts.sum()), s, s), dtype=xp.uint8)
    row = 0
    for k in range(NUM_TILES):  # four strided copies per sample
        n = int(counts[k])
        in_y, in_x, out_y, out_x, h, w = (int(v) for v in regions[k])
        if n and h > 0 and w > 0:
            block = tile_masks[k][in_y : in_y + h, in_x : in_x + w, :n]
            out[row : row + n, out_y : out_y + h, out_x : out_x + w] = xp.moveaxis(block, 2, 0)
        row += n
    if flip:
        out = xp.ascontiguousarray(out[:, :, ::-1])
    return out, np.repeat(np.arange(NUM_TILES, dtype=np.int64), counts)


def tile_boxes(regions: np.ndarray, output_size: int, flip: int) -> np.ndarray:
    """(4, 4) int32 xyxy (max exclusive) of each tile's region on the output canvas, after
    the flip; all zeros for an unused tile."""
    s = int(output_size)
    boxes = np.zeros((NUM_TILES, 4), dtype=np.int32)
    for k in range(NUM_TILES):
        _, _, out_y, out_x, h, w = (int(v) for v in regions[k])
        if h > 0 and w > 0:
            x0, x1 = (s - out_x - w, s - out_x) if flip else (out_x, out_x + w)
            boxes[k] = (x0, out_y, x1, out_y + h)
    return boxes


def tile_geometries(
    heights: np.ndarray, widths: np.ndarray, sizes: np.ndarray, regions: np.ndarray, flips: np.ndarray, output_size: int
) -> list[SampleGeometry]:
    """The mask geometry of every tile of a batch, sample by sample, tile by tile (4·B).

    A tile resized to ``sizes[b, k]`` (h, w) and placed by its region ``regions[b, k]`` shows
    resized pixel (y + in_y - out_y, x + in_x - out_x) at canvas pixel (y, x) inside the
    region, which is exactly where that anchor's window meets the tile (the regions are the
    tile clipped to the canvas); the canvas is then flipped by ``flips[b]``. A tile with an
    empty region (or unused) gets a window that shows nothing. :func:`place_masks` is what
    these geometries reproduce (``tests/test_mosaic_descriptors.py``).

    Args:
        heights, widths: (B, 4) source sizes in pixels (>= 1; anything for unused tiles).
        sizes: (B, 4, 2) resized (h, w); regions: (B, 4, 6); flips: (B,).
        output_size: S.
    """
    geometries = []
    for b in range(len(flips)):
        for k in range(NUM_TILES):
            in_y, in_x, out_y, out_x, h, w = (int(v) for v in regions[b, k])
            size = (int(sizes[b, k, 0]), int(sizes[b, k, 1]))
            anchor = (in_y - out_y, in_x - out_x) if h > 0 and w > 0 else size
            geometries.append(
                placed_geometry(int(heights[b, k]), int(widths[b, k]), size, anchor, output_size, int(flips[b]))
            )
    return geometries


def tile_geometry_batch(
    heights: np.ndarray, widths: np.ndarray, sizes: np.ndarray, regions: np.ndarray, flips: np.ndarray, output_size: int
) -> GeometryBatch:
    """:func:`tile_geometries` as one :class:`~decal.kernels.geometry_batch.GeometryBatch`
    of the 4·B tiles (same order, same arguments), computed with array operations; equal to
    it tile for tile (``tests/test_geometry_batch.py``)."""
    regions = np.asarray(regions, dtype=np.int64).reshape(-1, 6)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    shown = (regions[:, 4] > 0) & (regions[:, 5] > 0)
    anchors = np.where(shown[:, None], regions[:, 0:2] - regions[:, 2:4], sizes)
    flips = np.repeat(np.asarray(flips).reshape(-1), NUM_TILES)
    return placed_geometries(heights, widths, sizes, anchors, output_size, flips)


@dataclass(frozen=True)
class StepInputs:
    """A batch's small per-sample step inputs on the host (B samples, N instances).

    Attributes:
        start0: (B, 2) int64 (y, x) of the S×S window on tile 0.
        regions: (B, 4, 6) int64 tile regions.
        counts: (B, 4) int64 instances of each tile.
        flips: (B,) int64.
        labels: (N,) int64, tile by tile, sample by sample.
        iscrowd: (N,) uint8.
        areas: (N,) int64 pixels of each instance on the canvas, when the step had them
            before the copy (the descriptor step: rasterised first); None otherwise.
    """

    start0: np.ndarray
    regions: np.ndarray
    counts: np.ndarray
    flips: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray | None = None


def host_inputs(xp: Any, start0, regions, counts, flips, labels, iscrowd, areas: Any = None) -> StepInputs:
    """The step's small per-sample inputs (lists of B arrays of ``xp``) on the host, in one
    device-to-host transfer on the GPU (none on the CPU), with ``areas`` ((N,) of ``xp``) when
    given. The sizes are read from the arrays' shapes, which live on the host."""
    batch = len(start0)
    extra = [[areas]] if areas is not None else []
    start, region, count, flip, label, crowd, *areas_host = host_int64(
        xp, start0, regions, counts, flips, labels, iscrowd, *extra
    )
    return StepInputs(
        start0=start.reshape(batch, 2),
        regions=region.reshape(batch, NUM_TILES, REGION_FIELDS),
        counts=count.reshape(batch, NUM_TILES),
        flips=flip.reshape(batch),
        labels=label,
        iscrowd=crowd.astype(np.uint8),
        areas=areas_host[0] if areas_host else None,
    )


def compose_batch(xp: Any, tiles: Sequence[Sequence[Any]], host: StepInputs, output_size: int, pad_value: int) -> list[Any]:
    """:func:`compose_images` of every sample: ``tiles`` are the four lists of B resized tiles."""
    return [
        compose_images(xp, [column[b] for column in tiles], host.start0[b], host.regions[b], output_size, pad_value,
                       int(host.flips[b]))
        for b in range(len(host.flips))
    ]  # fmt: skip


def finish_instances(
    xp: Any, masks: Any, areas: Any, boxes: Any, host: StepInputs, output_size: int
) -> tuple[list[Any], ...]:
    """What the mosaic steps do once the instances are on the canvas: drop the empty ones and
    hand out the ragged per-sample outputs.

    Args:
        xp: ``numpy`` or ``cupy`` (the module of ``masks``).
        masks: (N, S, S) uint8 every instance of the batch on its canvas, tile by tile,
            sample by sample (``host.counts`` of them per tile).
        areas: (N,) int64 and boxes (N, 4) float32 xyxy of ``masks``
            (:func:`~decal.kernels.mask_boxes.mask_boxes`).
        host: the batch's :class:`StepInputs`.
        output_size: S.

    Returns:
        Seven lists of B arrays: masks (N', S, S) uint8, boxes (N', 4) float32, areas (N',)
        int64, labels (N',) int64, iscrowd (N',) uint8, tile (N',) int64 and tiles (4, 4)
        int32 (:func:`tile_boxes`). On the GPU: one synchronisation for the areas (none when
        ``host.areas`` came with the step's inputs) and two uploads per batch (the per-instance metadata, the tile boxes; a third, the kept rows,
        when some instance is dropped).
    """
    batch = len(host.flips)
    keep = (host.areas if host.areas is not None else to_host(areas)) > 0
    per_tile = host.counts.reshape(-1)
    tile = np.repeat(np.tile(np.arange(NUM_TILES, dtype=np.int64), batch), per_tile)
    sample = np.repeat(np.arange(batch, dtype=np.int64), host.counts.sum(axis=1))
    kept = np.flatnonzero(keep)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sample[kept], minlength=batch))]).astype(np.int64)
    small = np.stack([host.labels[kept], host.iscrowd[kept].astype(np.int64), tile[kept]])
    boxes_of_tiles = np.stack([tile_boxes(host.regions[b], output_size, int(host.flips[b])) for b in range(batch)])
    if xp is not np:  # one upload each
        small, boxes_of_tiles = xp.asarray(small), xp.asarray(boxes_of_tiles)
    crowd = small[1].astype(xp.uint8)  # one cast for the batch
    if len(kept) != len(keep):
        rows = xp.asarray(kept)
        masks, boxes, areas = masks[rows], boxes[rows], areas[rows]
    out = tuple([] for _ in range(7))
    for b in range(batch):
        r = slice(int(offsets[b]), int(offsets[b + 1]))
        out[0].append(masks[r])
        out[1].append(boxes[r])
        out[2].append(areas[r])
        out[3].append(small[0, r])
        out[4].append(crowd[r])
        out[5].append(small[2, r])
        out[6].append(boxes_of_tiles[b])
    return out


class MosaicStep:
    """The ``fn.python_function`` body (batch mode) of the host-mask graph: the images
    composed, masks onto the canvas, boxes from masks.

    Inputs per sample: the four resized tiles (h_k, w_k, 3) uint8, the four resized tile masks
    (h_k, w_k, N_k + 1) uint8 (last channel a dummy), start0 (2,) float32, regions (4, 6)
    int64, counts (4,) int64, flip () int32, labels (N,) int64, iscrowd (N,) uint8
    (N = counts.sum(), tile by tile). Outputs per sample: image (S, S, 3) uint8, masks
    (N', S, S) uint8, boxes (N', 4) float32, areas (N',) int64, labels (N',), iscrowd (N',),
    tile (N',) int64 (which tile each instance came from) and tiles (4, 4) int32 (each tile's
    box on the canvas); N' drops the instances clipped to nothing (:func:`finish_instances`).
    """

    def __init__(self, output_size: int, pad_value: int = 114) -> None:
        self.output_size = int(output_size)
        self.pad_value = int(pad_value)

    def __call__(
        self, tiles0, tiles1, tiles2, tiles3, masks0, masks1, masks2, masks3, start0, regions, counts, flips, labels, iscrowd
    ):
        xp = np if isinstance(masks0[0], np.ndarray) else cupy_module()
        host = host_inputs(xp, start0, regions, counts, flips, labels, iscrowd)
        images = compose_batch(xp, (tiles0, tiles1, tiles2, tiles3), host, self.output_size, self.pad_value)
        placed = [
            place_masks(xp, (masks0[b], masks1[b], masks2[b], masks3[b]), host.counts[b], host.regions[b],
                        self.output_size, int(host.flips[b]))[0]
            for b in range(len(masks0))  # a few strided copies per sample
        ]  # fmt: skip
        s = self.output_size
        all_masks = xp.concatenate(placed) if placed else xp.zeros((0, s, s), xp.uint8)
        areas, boxes = mask_boxes(all_masks)
        return (images, *finish_instances(xp, all_masks, areas, boxes, host, s))
