"""The copy-paste pipeline with masks made where they are used: descriptors in, masks out.

The default pipeline (:mod:`.pipeline`) rasterises every instance on the host at
the image's original size, ships an H×W×(N+1) byte stack through DALI, and lets DALI resize,
crop and flip it. This variant ships only the *descriptions* of the masks: polygon vertices on
pycocotools' 5× grid, RLE toggle positions, and one geometry table per sample
(:mod:`decal.kernels.instance_masks`); the copy-paste step rasterises them straight into the
S×S output on the GPU (:mod:`decal.kernels.rasterize_polygons`, :mod:`decal.kernels.rle_decode`,
one launch each per batch, area and box fused), then runs the fused copy-paste
(:mod:`decal.kernels.copy_paste_fused`). Full-size masks are never built on the host nor sent
over PCIe.

The masks are the same bits as the default pipeline's: the geometry tables reproduce DALI's
nearest-neighbour resize, crop and flip exactly (:mod:`decal.kernels.mask_geometry`) and the
kernels reproduce pycocotools' rasterisation exactly. So, under the same seed, both pipelines
make the same draws and deliver the same masks, boxes and labels (``tests/test_rasterize.py``
checks this on DALI's CPU backend, ``tests/test_rasterize_gpu.py`` on the GPU). With
``subpixel=True`` polygons are instead mapped into the output and rasterised at its resolution
(sharper when upscaled; differs on edge pixels only).

Graph::

    external_source(GpuMaskCopyPasteSource)   encoded, descriptors, labels, geometry, ...
      ├─ decoders.image (mixed on GPU, cpu) → resize(resize_longer = r·S) → crop → flip
      └─ python_function(GpuMaskCopyPasteStep) rasterise + copy-paste, one call per batch
           → images → transpose → 3×S×S, masks N'×S×S, boxes, areas, labels, iscrowd, pasted

The step's inputs become the batched form every paste core takes
(:func:`~decal.dali_pipes.core.step_io.descriptor_batch`: one rasterisation launch per batch,
one host copy of the areas, labels, crowd flags and position); the balanced and self-training
cores plug in instead of copy-paste's through ``build_gpu_mask_pipeline(step=...)``.

On the GPU the step's CuPy kernels run on DALI's stream: DALI 2.4's GPU ``python_function``
wraps the call in a ``cupy.cuda.Stream`` whose handle is ``current_dali_stream()`` and sets
``synchronize_stream=False``, so nothing waits for DALI's earlier work on the host. The step
then synchronises twice per batch, for the M areas with the labels (the paste draws are made
on the host) and for the M keep flags (the ragged output sizes), see
:mod:`decal.kernels.copy_paste_fused`; async and pipelined execution stay on.

If the Python operator is the bottleneck: ``decal bench`` times (a) decode only, (b) the whole
pipeline and, in ``kernels``, the step's kernels alone; (b)'s time per batch minus decode minus
the kernels is the operator's overhead (Python, the two synchronisations, DALI's copy of the
outputs). The alternatives, in order of effort: ``fn.dl_tensor_python_function`` with
``synchronize_stream=False`` (saves the CuPy conversions only); drawing the paste plan from
host-known instance metadata so the first synchronisation goes (changes which empty-after-crop
instances may be drawn); a DALI C++ plugin operator around the same CUDA kernels, which removes
the Python call and lets DALI own the ragged outputs without a copy.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ...kernels.copy_paste import CopyPasteParams
from ...kernels.instance_masks import MaskDescriptors
from ...kernels.geometry_batch import jitter_geometries
from ...kernels.rle_decode import box_toggles, toggles_from_counts
from ..coco.index import CocoIndex, dataset_index, batch_descriptors
from ..coco.reader import CocoDataset, ImageRecord, decode_rle_string
from .pipeline import OUTPUT_NAMES, CopyPasteStep, step_outputs
from .source import GEOMETRY_STREAM, CopyPasteSource, SourceGroup, group_instance_columns
from ..core.graph import pipeline_arguments, source_outputs
from ..core.parallel_source import check_workers
from ..core.scale_jitter import draw_geometry
from ..core.step_io import DESCRIPTOR_COLUMNS, FromDescriptors

__all__ = [
    "record_instances",
    "GpuMaskCopyPasteSource",
    "GpuMaskCopyPasteStep",
    "build_gpu_mask_pipeline",
    "join_descriptors",
    "OUTPUT_NAMES",
]


def _box_pixels(bbox: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel box [x0, x1) × [y0, y1) whose centres lie in the half-open box (the reader's
    ``_box_mask`` rule, so box instances match the default pipeline)."""
    x, y, w, h = bbox
    x0 = max(0, math.ceil(x - 0.5))
    x1 = min(width, math.ceil(x + w - 0.5))
    y0 = max(0, math.ceil(y - 0.5))
    y1 = min(height, math.ceil(y + h - 0.5))
    return x0, y0, x1, y1


def record_instances(record: ImageRecord, *, paste_by_box: bool = False) -> list[tuple[str, Any]]:
    """The instances of one image as :func:`~decal.kernels.instance_masks.build_descriptors`
    takes them: polygons as float arrays; RLE (compressed strings decoded to counts here, on the
    host) and filled boxes (box-only annotations, ``paste_by_box``) as toggle positions."""
    h, w = record.height, record.width
    out: list[tuple[str, Any]] = []
    for ann in record.annotations:
        seg = ann.segmentation
        if paste_by_box or seg is None:
            x0, y0, x1, y1 = _box_pixels(ann.bbox, h, w)
            out.append(("rle", box_toggles(x0, y0, x1, y1, h)))
        elif isinstance(seg, list):
            out.append(("poly", [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]))
        else:
            counts = seg["counts"]
            if isinstance(counts, (str, bytes)):
                counts = decode_rle_string(counts.decode() if isinstance(counts, bytes) else counts)
            out.append(("rle", toggles_from_counts(counts, h, w)))
    return out


class GpuMaskCopyPasteSource(CopyPasteSource):
    """``external_source`` callable of the GPU-mask pipeline: descriptors instead of masks.

    Same epoch order, resume positions, geometry and copy-paste draws as
    :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource` (it is one), with these
    columns per sample:

    ============== ==================================================== =======
    column          per-sample shape                                     dtype
    ============== ==================================================== =======
    encoded         (bytes,)                                             uint8
    tables          (1 or 2, 2·S + 4) geometry tables                    int32
    verts           (V, 2) polygon vertices on the 5× grid               int32
    polys           (NP, 2) vertex ranges                                int32
    poly_instances  (IP, 4) polygon range, output row, table             int32
    toggles         (Q,) RLE toggle positions                            int32
    rle_instances   (IR, 4) toggle range, output row, table              int32
    labels          (N,)                                                 int64
    iscrowd         (N,)                                                 uint8
    image_id        (1,)                                                 int64
    scale, crop_x, crop_y () / flip ()                                   f32/i32
    position        (POSITION_FIELDS,)                                   int64
    ============== ==================================================== =======

    Offsets inside the descriptor columns are batch-global: concatenating a column over the
    batch gives the :class:`~decal.kernels.instance_masks.MaskDescriptors` array directly.
    Columns whose samples share one shape (``tables``, ``image_id``, the geometry scalars,
    ``position``) are handed to DALI as one (B, ...) array each, the others as B arrays.

    The instances come from ``index`` (:class:`~decal.dali_pipes.coco.index.CocoIndex` of
    ``dataset``; compiled from it when not given): a batch's descriptors, labels and crowd
    flags are gathered from its packed arrays (:func:`~decal.dali_pipes.coco.index.batch_descriptors`),
    with no Python loop over annotations; only the image bytes are read per item.
    """

    column_names = (
        "encoded", *DESCRIPTOR_COLUMNS, "labels", "iscrowd", "image_id",
        "scale", "crop_x", "crop_y", "flip", "position",
    )  # fmt: skip

    def __init__(
        self,
        dataset: CocoDataset,
        sampler: Any,
        *,
        output_size: int,
        subpixel: bool = False,
        index: CocoIndex | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler, **kwargs)
        if output_size < 1:
            raise ValueError(f"output_size must be >= 1, got {output_size}")
        self.output_size = output_size
        self.subpixel = subpixel
        self.index = dataset_index(dataset, index)

    def read(self, dataset: CocoDataset, index: int) -> tuple[int, np.ndarray]:
        """(index, encoded bytes) of one image; DatasetError if unreadable. The instances
        come from :attr:`index` in :meth:`columns`."""
        return index, dataset.read_image_bytes(index)

    def batch_columns(self, start: Any, cursor: int, groups: Sequence[SourceGroup]) -> tuple[list[Any], ...]:
        payloads = [p for _, part in groups for p in part]
        geometry = draw_geometry(self.batch_rng(start, GEOMETRY_STREAM), len(payloads), self.jitter, self.flip_prob)
        described = []
        first = 0
        for index, part in groups:
            if not part:
                continue
            images = np.array([p[0] for p in part], dtype=np.int64)
            draws = slice(first, first + len(part))
            geometries = jitter_geometries(
                index.heights[images], index.widths[images], geometry.scale[draws], geometry.crop_x[draws],
                geometry.crop_y[draws], geometry.flip[draws], self.output_size,
            )  # fmt: skip
            described.append(
                batch_descriptors(index, images, geometries, subpixel=self.subpixel, paste_by_box=self.paste_by_box)
            )
            first += len(part)
        desc, bounds = join_descriptors(described)
        pieces = desc.split(bounds)
        labels, iscrowd, image_ids = group_instance_columns(groups)
        return (
            [p[1] for p in payloads],
            # tables: the same shape in every sample, so one dense (B, 1 or 2, 2·S + 4) array
            desc.tables.reshape(len(payloads), -1, desc.tables.shape[-1]),
            *([piece[name] for piece in pieces] for name in DESCRIPTOR_COLUMNS[1:]),
            labels,
            iscrowd,
            image_ids,  # (B, 1): one dense copy
            *geometry.columns(),
            self.position_column(start, cursor, len(payloads)),
        )


def join_descriptors(
    parts: Sequence[tuple[MaskDescriptors, dict[str, np.ndarray]]],
) -> tuple[MaskDescriptors, dict[str, np.ndarray]]:
    """The descriptors and per-sample bounds of consecutive runs of a batch
    (:func:`~decal.dali_pipes.coco.index.batch_descriptors` of each, e.g. one per dataset)
    as one batch: the arrays concatenated, every offset inside them (vertex, polygon, toggle
    ranges, output rows, tables) and the bounds shifted past the runs before. Equal, array for
    array, to the descriptors of the whole batch at once (``tests/test_family_masks.py``)."""
    if not parts:
        raise ValueError("a batch needs at least one sample")
    if len(parts) == 1:
        return parts[0]
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in DESCRIPTOR_COLUMNS}
    bounds: dict[str, list[np.ndarray]] = {name: [np.zeros(1, np.int64)] for name in DESCRIPTOR_COLUMNS}
    verts = polygons = toggles = rows = tables = 0
    for desc, part_bounds in parts:
        arrays["tables"].append(desc.tables)
        arrays["verts"].append(desc.verts)
        arrays["polys"].append(desc.polys + verts)
        arrays["poly_instances"].append(desc.poly_instances + np.array([polygons, polygons, rows, tables], np.int32))
        arrays["toggles"].append(desc.toggles)
        arrays["rle_instances"].append(desc.rle_instances + np.array([toggles, toggles, rows, tables], np.int32))
        for name in DESCRIPTOR_COLUMNS:
            bounds[name].append(part_bounds[name][1:] + bounds[name][-1][-1])
        verts += len(desc.verts)
        polygons += len(desc.polys)
        toggles += len(desc.toggles)
        rows += desc.num_instances
        tables += len(desc.tables)
    height, width = parts[0][0].height, parts[0][0].width
    joined = MaskDescriptors(
        height=height, width=width, num_instances=rows,
        **{name: np.concatenate(arrays[name]).astype(np.int32) for name in DESCRIPTOR_COLUMNS},
    )  # fmt: skip
    return joined, {name: np.concatenate(bounds[name]).astype(np.int64) for name in DESCRIPTOR_COLUMNS}



class GpuMaskCopyPasteStep(FromDescriptors):
    """The ``fn.python_function`` body (batch mode) of the GPU-mask graph: rasterise the
    masks, then Copy-Paste (:class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`'s core
    over :func:`~decal.dali_pipes.core.step_io.descriptor_batch`, so the fused step).

    Inputs per sample: image S×S×3 uint8, the six descriptor columns, labels (N,) int64,
    iscrowd (N,) uint8, position (5,) int64 (NumPy on the CPU backend, CuPy on the GPU
    backend). Outputs: those of :class:`~decal.dali_pipes.copy_paste.pipeline.CopyPasteStep`.
    With ``params=None`` nothing is pasted (empty instances are still dropped).
    """

    def __init__(self, params: CopyPasteParams | None) -> None:
        super().__init__(CopyPasteStep(params))

    @property
    def params(self) -> CopyPasteParams | None:
        return self.core.params  # type: ignore[attr-defined]


def build_gpu_mask_pipeline(
    source: GpuMaskCopyPasteSource,
    *,
    copy_paste: CopyPasteParams | None,
    pad_value: int = 114,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
    step: Any = None,
    source_workers: int = 0,
    source_start_method: str = "spawn",
) -> Pipeline:
    """Build (not yet run) the GPU-mask copy-paste pipeline over ``source``; outputs are
    :data:`~decal.dali_pipes.copy_paste.pipeline.OUTPUT_NAMES`. The output size is the
    source's. Arguments as :func:`~decal.dali_pipes.copy_paste.pipeline.build_copy_paste_pipeline`,
    plus ``step`` (the batch function after the geometric transforms, taking the descriptor
    inputs and giving the seven outputs of ``GpuMaskCopyPasteStep``; None:
    ``GpuMaskCopyPasteStep(copy_paste)``; balanced and self-training plug their cores in here
    through :class:`~decal.dali_pipes.core.step_io.FromDescriptors`), ``source_workers`` (0: call the source in DALI's thread; N: N worker processes of DALI's
    parallel external source, :mod:`~decal.dali_pipes.core.parallel_source`, from ``source.position``)
    and their ``source_start_method`` (``"fork"`` or ``"spawn"``).
    """
    check_workers(source_workers, source_start_method, source.on_error)
    output_size = source.output_size
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in [0, 255], got {pad_value}")
    on_gpu = device == "gpu"
    step = GpuMaskCopyPasteStep(copy_paste) if step is None else step
    n_desc = len(DESCRIPTOR_COLUMNS)
    arguments = pipeline_arguments(
        source, device, device_id, num_threads, prefetch_queue_depth, source_workers, source_start_method
    )

    @pipeline_def(**arguments)
    def gpu_mask_pipeline():
        outs = source_outputs(source, len(GpuMaskCopyPasteSource.column_names), source_workers)
        encoded = outs[0]
        descriptors = list(outs[1 : 1 + n_desc])
        labels, iscrowd, image_id, scale, crop_x, crop_y, flip, position = outs[1 + n_desc :]
        images = fn.decoders.image(
            encoded, device="mixed" if on_gpu else "cpu", output_type=types.RGB, adjust_orientation=False
        )
        step_inputs = [*descriptors, labels, iscrowd, position]
        if on_gpu:  # the step's inputs must share its backend; these are small
            step_inputs = [x.gpu() for x in step_inputs]
        images = fn.resize(images, resize_longer=scale * float(output_size), antialias=True)
        images = fn.crop(
            images, crop=(output_size, output_size), crop_pos_x=crop_x, crop_pos_y=crop_y,
            out_of_bounds_policy="pad", fill_values=float(pad_value),
        )
        images = fn.flip(images, horizontal=flip)
        return step_outputs(step, device, images, step_inputs, image_id, position)

    return gpu_mask_pipeline()
