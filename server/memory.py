"""The memory one stream may hold, estimated before the stream is admitted.

An instance stream's (copy-paste, balanced, self-training, mosaic) largest buffers are the scale-jittered images and their per-instance
mask stacks, before the crop to the output square: a sample jittered by scale ``s`` is
resized to about ``s * output_size`` on its long side, with ``3`` image channels (uint8) and
``N + 1`` mask channels (uint8; ``N`` instances plus the dummy channel that keeps an image
without instances resizable). Every batch in flight holds one such stack per sample, and
after the crop its outputs at the output size S; the step works on one batch at a time
(:func:`stream_memory_bytes`)::

    held  = side**2 * (3 + I + 1)           # the jittered image and mask stack
          + S**2 * (12 + I + P) + rows      # outputs at S (as for descriptors, below)
    bytes = batch_size * (depth * held + work)    # work: the step's, as for descriptors
    side  = ceil(output_size * max(1, max_scale)),  depth = prefetch_queue_depth + prefetch_batches

(``I = T*N_max``: mosaic's four tiles make it four images' worth; balanced copy-paste adds its
bank's ``bank_max_bytes``), with ``max_scale`` the jitter's upper bound (LSJ 2.0, SSJ 1.25, none 1.0, or the range's
``max_scale``), ``N_max`` the most instances any image of the dataset has, ``P``, ``rows`` and
``work`` as defined below, and the depth the
DALI prefetch queue plus the stream's queue of encoded batches. It is an upper bound on what
the request can make the server allocate (images smaller than the output are padded, not
grown), which is what admission needs: a request over ``limits.max_stream_bytes`` is refused
with RESOURCE_EXHAUSTED and the figure, before any pipeline exists. The image-folder
families (CutMix, CP²) have fixed-size planes instead: :func:`folder_stream_bytes`.

**Masks from descriptors.** A loader whose masks are made from descriptors
(``loader.mask_source == "descriptors"``, the GPU default:
``dali_pipes/copy_paste/gpu_masks.py``, ``dali_pipes/core/step_io.py``) has no host mask
stack: its source sends polygon vertices, RLE toggles and geometry tables, and the step
rasterises every instance of the batch straight at the output size S (no window prune on this
path, so all ``N`` instances of an image; ``kernels/instance_masks.py``
``rasterize_instances``). Its bound (:func:`descriptor_stream_bytes`) counts, per sample::

    held = side**2 * 3                      # the jittered image(s) before the crop (mosaic: four
                                            #   tiles of at most (side/2)**2 each)
         + S**2 * (12 + T*N_max + P)        # cropped, flipped, step-output and transposed images
                                            #   (3 bytes a pixel each) and the output masks
         + T * D_max + 8 * (2*S + 4) * T    # descriptor arrays and up to two geometry tables a tile
         + 64 * (T*N_max + P)               # per-instance rows: labels, flags, areas, boxes
    work = S**2 * (20 + K)                  # the step's working set, one batch at a time: stacked,
         + 64 * (T*N_max + P)               #   composited and source images, alpha (uint8 and blurred
                                            #   float32), and K mask planes:
    K    = 2*T*N_max + P                    #   rasterised and output masks (partners in the batch)
         | 3*N_max + 2*P                    #   + the occluded copies and the visible part of each
                                            #   pasted crop (balanced, pasting from its bank)
    bytes = batch_size * (depth * held + work) + bank_max_bytes (balanced)

with ``T`` the tiles a sample is made of (mosaic 4, else 1), ``N_max`` the most instances of
an image in the source's compiled indexes (both sets for self-training), ``P`` the most
instances pasted into one image (``max_num_pasted``, no more than ``T*N_max`` when the
partners are images of the batch; the balanced bank's are not; 0 without copy-paste) and
``D_max`` the most descriptor bytes of one image (:func:`descriptor_sizes`: 8 per polygon
vertex, 24 per polygon, 4 per RLE toggle, 8 per column of a filled box, 16 per instance row;
each instance charged as its kind or as a box, whichever is larger).
The two bounds share the outputs and the working set at S (``_output_bytes``); where the
host formula holds ``side**2`` per instance in its jittered stacks, the descriptor bound holds
the descriptors, so it is the smaller one on the same images whenever ``T*D_max`` and the
tables take fewer bytes than the ``side**2 * (I + 1)`` of the mask planes (any image whose
polygons are not far finer than its masks' pixels): with the LSJ jitter (side
= 2·S), 4 batches in flight and LVIS-like images (300 instances, up to 100 pasted) it is
about a third of the host figure (``tests/test_server_memory.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..dali_pipes.coco.index import POLYGON, RLE
from ..dali_pipes.core.scale_jitter import ScaleJitter

__all__ = [
    "DescriptorSizes",
    "descriptor_indexes",
    "descriptor_sizes",
    "descriptor_stream_bytes",
    "folder_stream_bytes",
    "max_instances",
    "max_jitter_scale",
    "stream_memory_bytes",
]


def max_jitter_scale(jitter: "ScaleJitter | str | tuple[float, float]") -> float:
    """The largest scale ``jitter`` (a preset name or a ``(min, max)`` pair) can draw."""
    return ScaleJitter.parse(jitter).max_scale


def max_instances(dataset: Any) -> int:
    """The most annotations any record of ``dataset`` (a CocoDataset) carries; 0 if unknown."""
    records = getattr(dataset, "records", None)
    if not records:
        return 0
    return max(len(r.annotations) for r in records)


def _output_bytes(output_size: int, instances: int, pasted: int, pasted_from_batch: bool) -> tuple[int, int]:
    """``(held, work)`` bytes per sample that both mask sources spend at the output size S
    (the module docstring's ``S**2 * (12 + I + P) + rows`` held per batch in flight, and the
    step's working set ``S**2 * (20 + K) + rows``, once); ``instances`` is ``I = T*N_max``."""
    plane = int(output_size) ** 2
    p = min(int(pasted), int(instances)) if pasted_from_batch else int(pasted)
    rows = 64 * (int(instances) + p)
    masks = 2 * int(instances) + p if pasted_from_batch else 3 * int(instances) + 2 * p
    return plane * (12 + int(instances) + p) + rows, plane * (20 + masks) + rows


def stream_memory_bytes(
    *,
    batch_size: int,
    output_size: int,
    max_scale: float,
    instances: int,
    depth: int,
    pasted: int = 0,
    pasted_from_batch: bool = True,
) -> int:
    """Bytes of ``depth`` batches in flight of a stream with host mask stacks: the scaled
    image and mask stacks, plus the outputs and the step's working set at the output size
    (the module docstring's host formula; the bank is the caller's).

    Args:
        instances: ``T*N_max``, the most instances of one sample (mosaic: four images').
        pasted, pasted_from_batch: as for :func:`descriptor_stream_bytes`.
    """
    side = math.ceil(output_size * max(1.0, max_scale))
    held, work = _output_bytes(output_size, instances, pasted, pasted_from_batch)
    stacks = side * side * (3 + int(instances) + 1)
    return int(batch_size) * (int(depth) * (stacks + held) + work)


@dataclass(frozen=True)
class DescriptorSizes:
    """What the descriptor bound needs of a dataset: ``instances``, the most instances of one
    image, and ``descriptor_bytes``, the most descriptor bytes of one image (see the module
    docstring; 0 and 0 for an empty dataset)."""

    instances: int
    descriptor_bytes: int


#: The attributes of a descriptor source that hold the compiled indexes it describes masks
#: from: its dataset's, and a self-training source's second set's.
_INDEX_ATTRIBUTES = ("index", "second_index")


def _per_image(index: Any, per_instance: np.ndarray) -> np.ndarray:
    """Sums of a per-instance quantity over each image's instances (``inst_offsets``)."""
    totals = np.concatenate([[0], np.cumsum(per_instance, dtype=np.int64)])
    offsets = np.asarray(index.inst_offsets, dtype=np.int64)
    return totals[offsets[1:]] - totals[offsets[:-1]]


def descriptor_sizes(index: Any) -> DescriptorSizes:
    """The :class:`DescriptorSizes` of a compiled index
    (:class:`~decal.dali_pipes.coco.index.CocoIndex`), from its offset arrays only. Every
    instance is charged the larger of its own kind's bytes and a filled box's
    (``paste_by_box`` makes any instance a box), so it bounds the descriptors under either
    option. Vectorised: tens of milliseconds for an LVIS-sized index, once per admission."""
    inst = np.asarray(index.inst_offsets, dtype=np.int64)
    if len(inst) < 2 or inst[-1] == 0:
        return DescriptorSizes(0, 0)
    parts = np.asarray(index.part_offsets, dtype=np.int64)
    verts = np.asarray(index.vert_offsets, dtype=np.int64)[parts]
    toggles = np.diff(np.asarray(index.toggle_offsets, dtype=np.int64))
    box = np.asarray(index.box_pixels, dtype=np.int64).reshape(-1, 4)
    as_box = 8 * np.maximum(box[:, 2] - box[:, 0], 0)
    kinds = np.asarray(index.kinds)
    as_kind = np.where(kinds == POLYGON, 8 * np.diff(verts) + 24 * np.diff(parts), np.where(kinds == RLE, 4 * toggles, as_box))
    per_instance = np.maximum(as_kind, as_box) + 16
    return DescriptorSizes(int(np.diff(inst).max()), int(_per_image(index, per_instance).max()))


def descriptor_indexes(loader: Any) -> list[Any] | None:
    """The compiled indexes ``loader`` rasterises its masks from, or None when its masks are
    host stacks (``loader.mask_source``, ``"host"`` when it has none)."""
    if getattr(loader, "mask_source", "host") != "descriptors":
        return None
    source = loader.source
    return [getattr(source, name) for name in _INDEX_ATTRIBUTES if getattr(source, name, None) is not None]


def descriptor_stream_bytes(
    *,
    batch_size: int,
    output_size: int,
    max_scale: float,
    sizes: Sequence[DescriptorSizes],
    pasted: int,
    depth: int,
    tiles: int = 1,
    pasted_from_batch: bool = True,
) -> int:
    """Bytes of ``depth`` batches in flight of a stream whose masks are rasterised from
    descriptors (the module docstring's formula; the bank is the caller's).

    Args:
        batch_size, output_size, depth: as for :func:`stream_memory_bytes`.
        max_scale: the jitter's largest scale.
        sizes: the :func:`descriptor_sizes` of every index the batch's images come from.
        pasted: ``max_num_pasted`` (0 when nothing is pasted).
        tiles: images per sample (mosaic 4).
        pasted_from_batch: the pasted instances are instances of the batch's images (so at
            most ``tiles * N_max``), not of a bank.
    """
    side = math.ceil(output_size * max(1.0, max_scale))
    instances = int(tiles) * max((s.instances for s in sizes), default=0)
    descriptors = int(tiles) * max((s.descriptor_bytes for s in sizes), default=0)
    held, work = _output_bytes(output_size, instances, pasted, pasted_from_batch)
    held += side * side * 3 + descriptors + 8 * (2 * int(output_size) + 4) * int(tiles)
    return int(batch_size) * (int(depth) * held + work)


def folder_stream_bytes(*, batch_size: int, output_size: int, bytes_per_pixel: int, depth: int) -> int:
    """Bytes of ``depth`` batches in flight of an image-folder family (CutMix, CP²), whose
    buffers are fixed-size S×S planes: ``batch_size * S**2 * bytes_per_pixel * depth``.

    ``bytes_per_pixel`` sums a sample's planes: CutMix 3 uint8 crop + 3×4 float32 image (3
    uint8 with ``normalize=False``; +3 with ``return_unmixed``) = 15 (18); CP² 4 uint8 views
    (12) + 2 float32 images (24; 6 uint8 with ``normalize=False``) + 2 masks (2) = 38 (+12
    with ``return_views``, the views held in the output too). Decoded source images before
    the crop are not counted (they are released per sample by the decoder)."""
    return int(batch_size) * int(output_size) ** 2 * int(bytes_per_pixel) * int(depth)
