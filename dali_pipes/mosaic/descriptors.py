"""The Mosaic graph with masks made where they are used: descriptors in, masks out.

The host-mask graph (:mod:`.pipeline`) rasterises every instance of every tile on the host at
the image's original size and ships an H×W×(N+1) stack per tile, which DALI resizes and the step
places on the canvas. This graph ships only the *descriptions* of the masks, as the copy-paste
GPU-mask graph does (``dali_pipes/copy_paste/gpu_masks.py``): polygon vertices, RLE toggles, and
one geometry table per tile (:func:`~decal.dali_pipes.mosaic.twin.tile_geometry_batch`: the tile's
exact-size nearest-neighbour resize, its placement on the canvas and the flip), gathered from
the compiled index (:func:`~decal.dali_pipes.coco.index.batch_descriptors`). The step
rasterises them straight into the S×S canvas, one launch per batch
(:func:`~decal.kernels.instance_masks.rasterize_instances`, area and box fused), composes the
images as the host-mask step does, and hands out the same outputs
(:func:`~decal.dali_pipes.mosaic.twin.finish_instances`).

The masks are the same bits as the host-mask graph's: the tables reproduce DALI's
``fn.resize(size=...)`` nearest-neighbour sampling (:func:`~decal.kernels.mask_geometry.resize_to`)
and :func:`~decal.dali_pipes.mosaic.twin.place_masks`, and the rasterisers pycocotools. Under the
same seed both graphs make the same draws and deliver the same batches
(``tests/test_mosaic_descriptors.py``). With ``subpixel=True`` polygons are instead mapped onto
the canvas and rasterised at its resolution (sharper when upscaled; differs on edge pixels).

Graph (:func:`~decal.dali_pipes.mosaic.pipeline.build_mosaic_pipeline` over this source)::

    external_source(MosaicDescriptorSource)   4 × encoded, descriptors, sizes, regions, ...
      ├─ decoders.image × 4 (mixed on GPU, cpu) → resize × 4 to the planned tile sizes
      └─ python_function(MosaicDescriptorStep)  rasterise (one launch), compose, drop empties
           → images 3×S×S, masks N×S×S, boxes N×4, labels, iscrowd, tile, tiles, ...

On the GPU the step's inputs are moved to the device by DALI (small arrays); the step reads
them back in one transfer per batch (:func:`~decal.dali_pipes.mosaic.twin.host_inputs`), after
the rasteriser is launched, and synchronises once more for the kept instances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...kernels.array_module import cupy_module, is_cupy_array
from ...kernels.instance_masks import ARRAY_FIELDS, MaskDescriptors, rasterize_instances
from ..coco.index import CocoIndex, batch_descriptors, dataset_index
from ..coco.reader import CocoDataset
from ..copy_paste.gpu_masks import GpuMaskCopyPasteSource
from ..core.epoch_source import LoaderPosition
from .pipeline import PLACEHOLDER_SIZE, MosaicSource, TileLayout
from .twin import NUM_TILES, compose_batch, finish_instances, host_inputs, tile_geometry_batch

__all__ = ["MosaicDescriptorSource", "MosaicDescriptorStep", "tile_descriptors"]


def tile_descriptors(
    index: CocoIndex, layout: TileLayout, output_size: int, *, subpixel: bool = False, paste_by_box: bool = False
) -> tuple[MaskDescriptors, dict[str, np.ndarray]]:
    """The mask descriptors of a batch's tiles (B samples, 4 tiles each) and the per-sample
    bounds of each array (``bounds[name]`` (B + 1,), for :meth:`MaskDescriptors.split`).

    Instances come tile by tile, sample by sample (the host-mask step's order); each tile has
    its own geometry table (two with ``subpixel``), so a sample holds 4 or 8 tables.
    """
    items = layout.items.reshape(-1)
    used = items >= 0
    at = np.where(used, items, 0)
    heights = np.where(used, np.asarray(index.heights)[at], PLACEHOLDER_SIZE).reshape(layout.items.shape)
    widths = np.where(used, np.asarray(index.widths)[at], PLACEHOLDER_SIZE).reshape(layout.items.shape)
    geometries = tile_geometry_batch(heights, widths, layout.sizes, layout.regions, layout.flip, output_size)
    desc, bounds = batch_descriptors(index, items, geometries, subpixel=subpixel, paste_by_box=paste_by_box)
    return desc, {name: b[::NUM_TILES] for name, b in bounds.items()}


class MosaicDescriptorSource(MosaicSource):
    """Batch-mode ``external_source`` callable of the descriptor Mosaic graph.

    The same epoch order, draws, tiles and resume positions as :class:`MosaicSource` (it is
    one); instead of ``masks0..3`` it sends the descriptor columns of the batch's tiles
    (:func:`tile_descriptors`), per sample:

    ============== ==================================================== =======
    column          per-sample shape                                     dtype
    ============== ==================================================== =======
    tables          (4 or 8, 2·S + 4) geometry tables, tile by tile      int32
    verts           (V, 2) polygon vertices on the 5× grid               int32
    polys           (NP, 2) vertex ranges                                int32
    poly_instances  (IP, 4) polygon range, output row, table             int32
    toggles         (Q,) RLE toggle positions                            int32
    rle_instances   (IR, 4) toggle range, output row, table              int32
    ============== ==================================================== =======

    Offsets are batch-global, as in
    :class:`~decal.dali_pipes.copy_paste.gpu_masks.GpuMaskCopyPasteSource`. ``index`` is the
    compiled index of ``dataset`` (its own when None); ``subpixel`` as there.
    """

    column_names = tuple(
        [f"encoded{k}" for k in range(NUM_TILES)]
        + list(ARRAY_FIELDS)
        + [f"size{k}" for k in range(NUM_TILES)]
        + ["start0", "regions", "counts", "labels", "iscrowd",
           "image_id", "tile_image_ids", "flip", "position"]
    )  # fmt: skip

    #: (index, encoded bytes) of one image: the instances come from the index
    read = GpuMaskCopyPasteSource.read

    def __init__(
        self, dataset: CocoDataset, sampler: Any, *, subpixel: bool = False, index: CocoIndex | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, sampler, **kwargs)
        self.subpixel = bool(subpixel)
        self.index = dataset_index(dataset, index)

    def step(self) -> "MosaicDescriptorStep":
        """The graph's step for this source's columns (descriptors rasterised on the canvas)."""
        return MosaicDescriptorStep(self.output_size, self.pad_value)

    def mask_inputs(self, col: dict[str, Any], on_gpu: bool) -> list[Any]:
        """The step's mask inputs in a graph over this source: the six descriptor columns
        (moved to the device on the GPU: they are small)."""
        return [col[n].gpu() if on_gpu else col[n] for n in ARRAY_FIELDS]

    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Any]) -> tuple[tuple[list[Any], ...], tuple]:
        tiles, layout, extras = self.layout(start, payloads)
        cols = self.tile_columns(layout)
        desc, bounds = tile_descriptors(
            self.index, layout, self.output_size, subpixel=self.subpixel, paste_by_box=self.paste_by_box
        )
        b = len(payloads)
        # tables: the same shape in every sample, so one dense (B, 4 or 8, 2·S + 4) array
        cols["tables"] = desc.tables.reshape(b, -1, desc.tables.shape[-1])
        for name in ARRAY_FIELDS[1:]:  # per-sample views, one slice each
            array, ends = getattr(desc, name), bounds[name].tolist()
            cols[name] = [array[ends[i] : ends[i + 1]] for i in range(b)]
        for k in range(NUM_TILES):
            cols[f"encoded{k}"] = [row[k][1] for row in tiles]
        cols["position"] = self.position_column(start, cursor, b)
        return tuple(cols[name] for name in self.column_names), extras


class MosaicDescriptorStep:
    """The ``fn.python_function`` body (batch mode) of the descriptor graph: the masks
    rasterised onto the canvas, the images composed, empties dropped.

    Inputs per sample: the four resized tiles (h_k, w_k, 3) uint8, the six descriptor columns
    (:class:`MosaicDescriptorSource`, in :data:`~decal.kernels.instance_masks.ARRAY_FIELDS`
    order), then start0, regions, counts, flip, labels, iscrowd as
    :class:`~decal.dali_pipes.mosaic.twin.MosaicStep` takes them (NumPy on the CPU backend, CuPy
    on the GPU). Outputs: those of :class:`~decal.dali_pipes.mosaic.twin.MosaicStep`.
    """

    def __init__(self, output_size: int, pad_value: int = 114) -> None:
        self.output_size = int(output_size)
        self.pad_value = int(pad_value)

    def __call__(
        self, tiles0, tiles1, tiles2, tiles3, tables, verts, polys, poly_instances, toggles, rle_instances,
        start0, regions, counts, flips, labels, iscrowd,
    ):  # fmt: skip
        xp = cupy_module() if is_cupy_array(tables[0]) else np
        s = self.output_size
        total = sum(int(x.shape[0]) for x in labels)  # shapes: no sync
        desc = MaskDescriptors.from_columns((tables, verts, polys, poly_instances, toggles, rle_instances), s, s, total)
        masks, areas, boxes = rasterize_instances(desc)  # launched before the first sync
        host = host_inputs(xp, start0, regions, counts, flips, labels, iscrowd, areas)  # one sync
        images = compose_batch(xp, (tiles0, tiles1, tiles2, tiles3), host, s, self.pad_value)
        return (images, *finish_instances(xp, masks, areas, boxes, host, s))
