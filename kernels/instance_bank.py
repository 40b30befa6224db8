"""Balanced Copy-Paste: a device-resident bank of recent instances, drawn class-balanced.

Semantics follow the *balanced copy-paste* of the LVIS 2021 challenge reports (instance-level
re-sampling: instances of rare categories are pasted more often than their share of the data,
with the repeat factor of their category or an inverse-frequency weight), on top of the
Copy-Paste of Ghiasi et al. 2021 ("Simple Copy-Paste is a Strong Data Augmentation Method for
Instance Segmentation"). The pasted instances do not come from a partner image of the batch
but from an :class:`InstanceBank` of recent instances:

* **Feeding.** After the geometric transforms (scale jitter, crop, flip), every non-crowd
  instance of the batch with at least ``min_area`` pixels goes into the bank as its *crop*: the
  image pixels (RGB) and the mask bit inside its tight box, with its category id. The bank
  is fed *after* the batch's own draws, so an image never receives its own instances and the
  very first batch pastes nothing (the bank is empty).
* **Bounds.** The bank holds at most ``capacity`` instances and ``max_bytes`` bytes of crops
  (4 bytes per crop pixel: R, G, B, mask). It is a FIFO ring: the oldest instances are evicted
  first, whichever bound is hit. The pixel pool is allocated once, at the first batch, with
  the size of the memory cap, on the device of the batch (CuPy on the GPU, NumPy on the CPU),
  and never leaves it.
* **Drawing** (host, over metadata only). Each destination image receives ``n`` instances,
  ``n`` uniform in ``[0, min(len(bank), max_num_pasted)]`` (mmdetection's ``CopyPaste`` count
  rule, as in partner mode), drawn without replacement with probability proportional to
  the weight of their category (successive sampling, the law of NumPy's
  ``choice(replace=False, p=...)``; one array pass for the whole batch in
  :mod:`~decal.kernels.successive_sampling`):

  - ``"repeat_factor"``: ``w(c) = r(c) = max(1, sqrt(t / f(c)))``, the LVIS repeat factor of the
    category (``f(c)`` the fraction of the *dataset's* images holding ``c``; supplied by the
    caller as ``class_weights``, e.g. :attr:`RepeatFactorSampler.category_repeat_factors`);
  - ``"inverse_frequency"``: ``w(c) = 1 / f(c)^p``, ``f(c)`` the share of category ``c`` among
    the instances in the bank at draw time (or a fixed ``class_frequency`` table when given).
    With ``p = 1`` every category present in the bank is equally likely; ``p = 0.5`` is
    square-root balancing; ``p = 0`` is uniform over instances (no balancing);
  - ``"uniform"``: every banked instance equally likely.

  Each drawn crop is placed at a uniformly random position where it lies fully inside the
  image (``x0`` uniform in ``[0, W - w]``, ``y0`` in ``[0, H - h]``).
* **Compositing.** Crops are painted in draw order (a later one lies on top of an earlier one);
  the hard alpha of an image is the union of its painted crop masks. The image blend, the
  optional Gaussian-smoothed alpha, the occlusion of destination instances (with the
  mmdetection keep rule) and the re-derived boxes are those of
  :func:`~decal.kernels.copy_paste.copy_paste_batch`, through the same kernels
  (:mod:`~decal.kernels.composite`, :mod:`~decal.kernels.gaussian_blur`,
  :mod:`~decal.kernels.occlusion_update`, :mod:`~decal.kernels.mask_boxes`). A pasted crop
  hidden by a later crop of the same image follows the same keep rule; it is dropped when
  nothing of it is left.

Everything pixel-sized is done with whole-batch array operations of the array module of the
inputs (``numpy`` or ``cupy``): one code path for the CPU and the GPU, a constant number of
operations per batch (per chunk of ``chunk_pixels`` crop pixels), no Python loop over
instances or pixels. Host synchronisation: the per-instance boxes and areas (a few hundred
numbers) come to the host once per batch, for the draws and the bank's bookkeeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Mapping

import numpy as np

from ._cuda import get_array_module, to_host
from .composite import composite
from .copy_paste import CopyPasteParams, PastedBatch
from .crop_ring import CropRing
from .gaussian_blur import gaussian_blur
from .mask_boxes import mask_boxes
from .occlusion_update import occlusion_keep, occlusion_update
from .output_order import output_order, place_rows
from .successive_sampling import draw_without_replacement

__all__ = [
    "BankParams",
    "BankDraws",
    "BankPasteResult",
    "InstanceBank",
    "bank_copy_paste_batch",
    "BYTES_PER_PIXEL",
]

#: Bytes stored per crop pixel: R, G, B and the mask bit (one uint8 each).
BYTES_PER_PIXEL = 4

Weighting = Literal["repeat_factor", "inverse_frequency", "uniform"]


@dataclass(frozen=True)
class BankParams:
    """Parameters of the bank and of its class-balanced draws.

    Attributes:
        capacity: the most instances the bank holds (FIFO eviction beyond).
        max_bytes: the memory cap of the crop pool in bytes (4 bytes per crop pixel),
            allocated once at the first batch; the oldest crops are evicted to make room.
            A crop larger than the whole pool is never banked.
        weighting: ``"repeat_factor"``, ``"inverse_frequency"`` or ``"uniform"`` (module
            docstring).
        power: ``p`` of ``1 / f(c)^p`` (``"inverse_frequency"`` only).
        class_weights: category id -> weight for ``"repeat_factor"`` (the LVIS ``r(c)``);
            categories missing from it weigh 1.
        class_frequency: optional fixed category id -> frequency for
            ``"inverse_frequency"``; by default the share of each category in the bank at draw
            time. Categories missing from a given table use the smallest frequency in it.
        min_area: instances with fewer mask pixels (after the geometric transforms) are not
            banked.
        chunk_pixels: crop pixels handled per vectorised chunk (bounds the temporary index
            arrays at about 40 bytes per pixel).
    """

    capacity: int = 1024
    max_bytes: int = 64 << 20
    weighting: Weighting = "inverse_frequency"
    power: float = 1.0
    class_weights: Mapping[int, float] | None = None
    class_frequency: Mapping[int, float] | None = None
    min_area: int = 16
    chunk_pixels: int = 1 << 22

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.max_bytes < BYTES_PER_PIXEL:
            raise ValueError(f"max_bytes must be >= {BYTES_PER_PIXEL}, got {self.max_bytes}")
        if self.weighting not in ("repeat_factor", "inverse_frequency", "uniform"):
            raise ValueError(
                f"weighting must be 'repeat_factor', 'inverse_frequency' or 'uniform', got {self.weighting!r}"
            )
        if not (math.isfinite(self.power) and self.power >= 0):
            raise ValueError(f"power must be a finite number >= 0, got {self.power}")
        if self.min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {self.min_area}")
        if self.chunk_pixels < 1:
            raise ValueError(f"chunk_pixels must be >= 1, got {self.chunk_pixels}")
        for name, table in (("class_weights", self.class_weights), ("class_frequency", self.class_frequency)):
            if table is not None and any(not (math.isfinite(v) and v > 0) for v in table.values()):
                raise ValueError(f"{name} values must be finite and > 0")

    @property
    def max_pixels(self) -> int:
        """Crop pixels the pool holds."""
        return self.max_bytes // BYTES_PER_PIXEL


@dataclass(frozen=True)
class BankDraws:
    """What one batch pasted from the bank (host arrays; P = instances pasted).

    Attributes:
        offsets: (B + 1,) int64 CSR offsets of each destination's pasted instances.
        uid: (P,) int64 the bank entries drawn (their unique insertion numbers).
        labels: (P,) int64 category ids.
        x0, y0: (P,) int64 top-left corner of each placed crop in its destination.
        height, width: (P,) int64 crop size.
        area: (P,) int64 crop mask pixels (before any occlusion).
        pool_offset: (P,) int64 first pool pixel of each crop.
    """

    offsets: np.ndarray
    uid: np.ndarray
    labels: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    height: np.ndarray
    width: np.ndarray
    area: np.ndarray
    pool_offset: np.ndarray

    @property
    def num_pasted(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def empty(cls, batch_size: int) -> "BankDraws":
        z = np.zeros(0, dtype=np.int64)
        return cls(np.zeros(batch_size + 1, dtype=np.int64), z, z, z, z, z, z, z, z)


def _box_pixel_chunks(
    xp: Any, heights: np.ndarray, widths: np.ndarray, chunk: int
) -> Iterator[tuple[Any, Any, Any, Any]]:
    """Enumerate the pixels of n boxes (row-major inside each box), in chunks.

    Yields ``(k, inst, ly, lx)`` device arrays (int64): the running pixel number ``k`` over
    all boxes, the box it belongs to, and its row and column inside that box.
    """
    sizes = heights.astype(np.int64) * widths.astype(np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    if total == 0:
        return
    ends_x = xp.asarray(ends)
    starts_x = xp.asarray(ends - sizes)
    widths_x = xp.asarray(widths.astype(np.int64))
    for c0 in range(0, total, chunk):
        k = xp.arange(c0, min(total, c0 + chunk), dtype=xp.int64)
        inst = xp.searchsorted(ends_x, k, side="right")
        local = k - starts_x[inst]
        w = widths_x[inst]
        ly = local // w
        yield k, inst, ly, local - ly * w


def _scatter_max(xp: Any, target: Any, index: Any, values: Any) -> None:
    """``target[index] = max(target[index], values)`` with repeated indices (in place)."""
    if xp is np:
        np.maximum.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_max(target, index, values)


class _LabelTable:
    """A category id -> value table as sorted arrays, for whole-array lookups."""

    def __init__(self, table: Mapping[int, float] | None) -> None:
        items = sorted((int(k), float(v)) for k, v in (table or {}).items())
        self.keys = np.array([k for k, _ in items], dtype=np.int64)
        self.values = np.array([v for _, v in items], dtype=np.float64)

    def smallest(self, default: float) -> float:
        """The smallest value in the table, ``default`` when it is empty."""
        return float(self.values.min()) if len(self.values) else default

    def lookup(self, labels: np.ndarray, default: float) -> np.ndarray:
        """(n,) float64 the value of each label, ``default`` for a label not in the table."""
        out = np.full(len(labels), default, dtype=np.float64)
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, labels), len(self.keys) - 1)
            found = self.keys[at] == labels
            out[found] = self.values[at[found]]
        return out


class InstanceBank:
    """A FIFO bank of instance crops (RGB + mask) in one device-resident pixel pool.

    The pool is a ``(max_pixels, 4)`` uint8 array of the array module of the first batch
    added (allocated then); entry metadata (pool offset, crop size, label, area) lives on the
    host as arrays (:class:`~decal.kernels.crop_ring.CropRing`). See the module docstring for
    the semantics.
    """

    def __init__(self, params: BankParams) -> None:
        self.params = params
        self.pool: Any = None
        self._ring = CropRing(params.max_pixels, params.capacity)
        self._class_weights = _LabelTable(params.class_weights)
        self._class_frequency = _LabelTable(params.class_frequency)

    # -- inspection ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ring)

    @property
    def added(self) -> int:
        """Instances banked so far (later evictions included)."""
        return self._ring.added

    @property
    def evicted(self) -> int:
        """Entries evicted so far (by the FIFO ring or the capacity)."""
        return self._ring.evicted

    @property
    def rejected(self) -> int:
        """Crops never banked: larger than the whole pool, or of no pixels."""
        return self._ring.rejected

    @property
    def labels(self) -> np.ndarray:
        """(L,) int64 category ids of the live entries, oldest first."""
        return self._ring.label.copy()

    @property
    def uids(self) -> np.ndarray:
        """(L,) int64 insertion numbers of the live entries, oldest first."""
        return self._ring.uid.copy()

    @property
    def nbytes(self) -> int:
        """Bytes of crop pixels held by the live entries."""
        return BYTES_PER_PIXEL * int(np.sum(self._ring.pixels))

    def entry_spans(self) -> list[tuple[int, int]]:
        """``(first pixel, end pixel)`` of each live entry in the pool, oldest first."""
        offset = self._ring.offset
        return list(zip(offset.tolist(), (offset + self._ring.pixels).tolist()))

    def crop(self, uid: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (h, w, 3), mask (h, w))`` uint8 host copies of a live entry (for tests and
        previews)."""
        ring = self._ring
        found = np.flatnonzero(ring.uid == uid)
        if len(found) == 0:
            raise KeyError(f"no live bank entry {uid}")
        i = int(found[0])
        h, w, offset = int(ring.height[i]), int(ring.width[i]), int(ring.offset[i])
        block = self.pool[offset : offset + h * w].reshape(h, w, BYTES_PER_PIXEL)
        block = block if isinstance(block, np.ndarray) else block.get()
        return block[..., :3].copy(), block[..., 3].copy()

    def clear(self) -> None:
        """Forget every entry (the pool stays allocated)."""
        self._ring.clear()

    # -- feeding -------------------------------------------------------------------------
    def add(
        self,
        images: Any,
        masks: Any,
        rows: np.ndarray,
        samples: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        areas: np.ndarray,
    ) -> int:
        """Bank instances of a batch: their crops inside their tight boxes.

        Args:
            images: (B, H, W, 3) uint8 (NumPy or CuPy), before any paste.
            masks: (M, H, W) uint8 instance masks of the batch (same array module).
            rows: (n,) int64 rows of ``masks`` to bank, in insertion order.
            samples: (n,) int64 the image of each.
            boxes: (n, 4) host xyxy tight boxes (integers, max exclusive).
            labels: (n,) int64 category ids.
            areas: (n,) int64 mask pixels.

        Returns:
            how many were banked (crops larger than the pool are rejected).
        """
        xp = get_array_module(images)
        if self.pool is None:
            self.pool = xp.zeros((self.params.max_pixels, BYTES_PER_PIXEL), dtype=xp.uint8)
        elif get_array_module(self.pool) is not xp:
            raise ValueError("InstanceBank: a batch on another device than the bank's pool")
        boxes = np.asarray(boxes).astype(np.int64).reshape(-1, 4)
        if len(boxes) == 0:
            return 0
        # host bookkeeping as arrays (kernels/crop_ring.py); the pixels are moved below.
        # Only what is still live after the whole batch is written: a crop evicted by a later
        # crop of the same batch would otherwise race with it for the same pixels.
        where = self._ring.push(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0], labels, areas)
        keep_a = np.flatnonzero(where >= 0)
        if len(keep_a) == 0:
            return 0
        b = boxes[keep_a]
        heights, widths = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
        offsets_x = xp.asarray(where[keep_a])
        x0_x, y0_x = xp.asarray(b[:, 0]), xp.asarray(b[:, 1])
        rows_x = xp.asarray(np.asarray(rows, dtype=np.int64)[keep_a])
        samples_x = xp.asarray(np.asarray(samples, dtype=np.int64)[keep_a])
        starts = np.concatenate([[0], np.cumsum(heights * widths)[:-1]]).astype(np.int64)
        starts_x = xp.asarray(starts)
        for k, inst, ly, lx in _box_pixel_chunks(xp, heights, widths, self.params.chunk_pixels):
            y, x = y0_x[inst] + ly, x0_x[inst] + lx
            dest = offsets_x[inst] + (k - starts_x[inst])
            self.pool[dest, :3] = images[samples_x[inst], y, x]
            self.pool[dest, 3] = (masks[rows_x[inst], y, x] != 0).astype(xp.uint8)
        return len(keep_a)

    # -- drawing (host) ------------------------------------------------------------------
    def weights(self) -> np.ndarray:
        """(L,) float64 unnormalised draw weight of every live entry."""
        labels = self._ring.label
        p = self.params
        if len(labels) == 0 or p.weighting == "uniform":
            return np.ones(len(labels), dtype=np.float64)
        if p.weighting == "repeat_factor":
            return self._class_weights.lookup(labels, default=1.0)
        if p.class_frequency is not None:
            freq = self._class_frequency.lookup(labels, default=self._class_frequency.smallest(1.0))
        else:
            classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
            freq = counts[inverse] / len(labels)
        return freq.astype(np.float64) ** -p.power

    def draw(
        self, rng: np.random.Generator, batch_size: int, height: int, width: int, max_num_pasted: int
    ) -> BankDraws:
        """Draw what each of ``batch_size`` destinations (H×W) pastes (see module docstring):
        whole-batch array operations over the entries' metadata, no Python step per entry."""
        ring = self._ring
        if len(ring) == 0 or max_num_pasted == 0:
            return BankDraws.empty(batch_size)
        weights = self.weights() * ((ring.height <= height) & (ring.width <= width))
        candidates = np.flatnonzero(weights > 0)
        if len(candidates) == 0:
            return BankDraws.empty(batch_size)
        counts = rng.integers(0, min(len(candidates), max_num_pasted) + 1, size=batch_size)
        picks = candidates[draw_without_replacement(rng, weights[candidates], counts)]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        h, w = ring.height[picks], ring.width[picks]
        x0 = np.floor(rng.random(len(picks)) * (width - w + 1)).astype(np.int64)
        y0 = np.floor(rng.random(len(picks)) * (height - h + 1)).astype(np.int64)
        return BankDraws(
            offsets=offsets,
            uid=ring.uid[picks],
            labels=ring.label[picks],
            x0=x0,
            y0=y0,
            height=h,
            width=w,
            area=ring.area[picks],
            pool_offset=ring.offset[picks],
        )

    # -- rendering (device) --------------------------------------------------------------
    def render(self, draws: BankDraws, batch_size: int, height: int, width: int, xp: Any) -> tuple[Any, Any]:
        """Paint the drawn crops: ``(src (B, H, W, 3) uint8, top (B, H, W) int32)``.

        ``top`` is the index (into the draws) of the topmost crop whose mask covers each pixel,
        -1 where none does (a later draw lies on top); ``src`` holds that crop's RGB there and
        0 elsewhere.
        """
        plane = height * width
        top = xp.full(batch_size * plane, -1, dtype=xp.int32)
        src = xp.zeros((batch_size * plane, 3), dtype=xp.uint8)
        total = len(draws.uid)
        if total:
            sample = np.repeat(np.arange(batch_size, dtype=np.int64), draws.num_pasted)
            sample_x, x0_x, y0_x = xp.asarray(sample), xp.asarray(draws.x0), xp.asarray(draws.y0)
            off_x = xp.asarray(draws.pool_offset)
            starts = np.concatenate([[0], np.cumsum(draws.height * draws.width)[:-1]]).astype(np.int64)
            starts_x = xp.asarray(starts)
            for k, inst, ly, lx in _box_pixel_chunks(xp, draws.height, draws.width, self.params.chunk_pixels):
                flat = sample_x[inst] * plane + (y0_x[inst] + ly) * width + (x0_x[inst] + lx)
                covered = self.pool[off_x[inst] + (k - starts_x[inst]), 3] != 0
                _scatter_max(xp, top, flat, xp.where(covered, inst.astype(xp.int32), xp.int32(-1)))
            where = xp.nonzero(top >= 0)[0]
            p = top[where].astype(xp.int64)
            pix = where % plane
            y, x = pix // width, pix % width
            local = (y - y0_x[p]) * xp.asarray(draws.width)[p] + (x - x0_x[p])
            src[where] = self.pool[off_x[p] + local, :3]
        return src.reshape(batch_size, height, width, 3), top.reshape(batch_size, height, width)


@dataclass(frozen=True)
class BankPasteResult(PastedBatch):
    """A batch after balanced Copy-Paste: the :class:`~decal.kernels.copy_paste.PastedBatch`
    fields, and ``draws``.

    ``pasted_uid`` is (M',) int64 host: the bank entry of each pasted instance, -1 for a
    destination instance.
    """

    pasted_uid: np.ndarray
    draws: BankDraws


def bank_copy_paste_batch(
    images: Any,
    masks: Any,
    instance_offsets: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    params: CopyPasteParams,
    bank: InstanceBank,
    rng: np.random.Generator,
    *,
    feed: bool = True,
    areas: Any = None,
    boxes: Any = None,
    areas_host: np.ndarray | None = None,
) -> BankPasteResult:
    """Balanced Copy-Paste over a batch: paste from ``bank``, then feed the batch to it.

    Args:
        images: (B, H, W, 3) uint8, NumPy or CuPy (after the geometric transforms).
        masks: (M, H, W) uint8 in {0, 1}, same array module; rows
            ``instance_offsets[b]:instance_offsets[b + 1]`` belong to image b.
        instance_offsets: (B + 1,) int64 host.
        labels: (M,) int64 host category ids.
        iscrowd: (M,) bool host; crowd regions are never banked.
        params: ``max_num_pasted``, ``blend_sigma`` and the occlusion thresholds
            (``paste_by_box`` only matters upstream, where masks are made).
        bank: the bank (mutated: fed with this batch's instances when ``feed``).
        rng: the batch's generator; all draws are made on the host from it.
        feed: add this batch's instances to the bank after pasting.
        areas, boxes: (M,) int64 and (M, 4) float32 xyxy of ``masks``
            (:func:`~decal.kernels.mask_boxes.mask_boxes`), same array module, when the caller
            has them already (masks rasterised with them); computed here when None.
        areas_host: ``areas`` on the host, when the caller copied them already.
    """
    xp = get_array_module(images)
    instance_offsets = np.asarray(instance_offsets, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    iscrowd = np.asarray(iscrowd, dtype=bool)
    batch_size, height, width = images.shape[:3]
    if masks.shape[0] != instance_offsets[-1] or len(labels) != masks.shape[0]:
        raise ValueError(
            f"masks ({masks.shape[0]}), labels ({len(labels)}) and instance_offsets "
            f"(total {instance_offsets[-1]}) disagree on the number of instances"
        )
    if masks.shape[0] and masks.shape[1:] != (height, width):
        raise ValueError(f"masks {masks.shape} and images {images.shape} differ in H, W")
    counts = np.diff(instance_offsets)
    instance_sample = np.repeat(np.arange(batch_size, dtype=np.int64), counts)

    if areas is None or boxes is None:
        areas, boxes, areas_host = *mask_boxes(masks), None
    areas_before, boxes_before = areas, boxes
    host_areas = areas_host if areas_host is not None else to_host(areas_before)
    host_boxes = to_host(boxes_before)

    draws = bank.draw(rng, batch_size, height, width, params.max_num_pasted)
    src, top = bank.render(draws, batch_size, height, width, xp)
    alpha_hard = (top >= 0).astype(xp.uint8)
    alpha = gaussian_blur(alpha_hard, params.blend_sigma) if params.blend_sigma > 0 else alpha_hard
    out_images = composite(images, src, xp.arange(batch_size, dtype=xp.int64), alpha)

    # destination instances: occluded by everything pasted into their image
    updated, areas_after, boxes_after = occlusion_update(masks, xp.asarray(instance_sample), alpha_hard)
    keep_dest = to_host(
        occlusion_keep(
            areas_before, boxes_before, areas_after, boxes_after,
            mask_occluded_thr=params.mask_occluded_thr, bbox_occluded_thr=params.bbox_occluded_thr,
        )
    ).astype(bool)  # fmt: skip

    # pasted instances: what of each crop stays on top; the same keep rule
    num_drawn = len(draws.uid)
    paste_sample = np.repeat(np.arange(batch_size, dtype=np.int64), draws.num_pasted)
    visible = (top[xp.asarray(paste_sample)] == xp.arange(num_drawn, dtype=xp.int32)[:, None, None]).astype(xp.uint8)
    vis_areas, vis_boxes = mask_boxes(visible)
    placed = np.stack([draws.x0, draws.y0, draws.x0 + draws.width, draws.y0 + draws.height], 1).astype(np.float32)
    keep_paste = to_host(
        occlusion_keep(
            xp.asarray(draws.area), xp.asarray(placed.reshape(-1, 4)), vis_areas, vis_boxes,
            mask_occluded_thr=params.mask_occluded_thr, bbox_occluded_thr=params.bbox_occluded_thr,
        )
    ).astype(bool)  # fmt: skip

    if feed:  # after the draws: an image never gets its own instances back
        eligible = np.flatnonzero((host_areas >= bank.params.min_area) & ~iscrowd)
        bank.add(
            images, masks, eligible, instance_sample[eligible], host_boxes[eligible],
            labels[eligible], host_areas[eligible],
        )  # fmt: skip

    # output: per image its kept destination instances, then its kept pasted ones
    kept_rows = np.flatnonzero(keep_dest)
    paste_rows = np.flatnonzero(keep_paste)
    out_offsets, kept_dest, paste_dest = output_order(
        instance_sample[kept_rows], paste_sample[paste_rows], batch_size
    )
    total = int(out_offsets[-1])
    out_masks = xp.empty((total, height, width), dtype=xp.uint8)
    out_boxes = xp.empty((total, 4), dtype=xp.float32)
    out_areas = xp.empty(total, dtype=xp.int64)
    kd, pd = xp.asarray(kept_dest), xp.asarray(paste_dest)
    kr, pr = xp.asarray(kept_rows), xp.asarray(paste_rows)
    out_masks[kd], out_masks[pd] = updated[kr], visible[pr]
    out_boxes[kd], out_boxes[pd] = boxes_after[kr], vis_boxes[pr]
    out_areas[kd], out_areas[pd] = areas_after[kr], vis_areas[pr]

    out_labels = place_rows(total, np.int64, kept_dest, labels[kept_rows], paste_dest, draws.labels[paste_rows])
    out_crowd = place_rows(total, bool, kept_dest, iscrowd[kept_rows], paste_dest, False)
    out_pasted = place_rows(total, bool, kept_dest, np.zeros(len(kept_rows), bool), paste_dest, True)
    out_uid = place_rows(total, np.int64, kept_dest, np.full(len(kept_rows), -1), paste_dest, draws.uid[paste_rows])
    return BankPasteResult(
        images=out_images,
        masks=out_masks,
        boxes=out_boxes,
        areas=out_areas,
        instance_offsets=out_offsets,
        labels=out_labels,
        iscrowd=out_crowd,
        pasted=out_pasted,
        pasted_uid=out_uid,
        draws=draws,
    )

