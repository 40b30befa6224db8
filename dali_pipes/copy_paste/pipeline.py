"""The copy-paste DALI pipeline: decode → scale jitter → crop/pad → flip → Copy-Paste.

Graph (one per loader)::

    external_source(CopyPasteSource)            encoded, masks H×W×(N+1), labels, ...
      ├─ decoders.image  (mixed on GPU, cpu)    H×W×3 uint8
      ├─ resize(resize_longer = r·S)            linear + antialias; masks nearest
      ├─ crop(S×S, crop_pos, pad gray / 0)      image padded with ``pad_value``
      ├─ flip(horizontal)
      └─ python_function(CopyPasteStep)         batched kernels, one call per batch
           → images S×S×3 → transpose → 3×S×S, masks N'×S×S, boxes N'×4, labels, ...

On the GPU the step runs its CuPy kernels on DALI's CUDA stream (``fn.python_function``
sets CuPy's current stream to DALI's), and DALI keeps async, pipelined execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ...kernels.copy_paste import CopyPasteParams, copy_paste_batch
from ...kernels.copy_paste_fused import copy_paste_batch_fused
from ...kernels.paste_plan import PastePlan, draw_paste_plan
from ...kernels.parallel_batch import BatchOps, shared_pool
from .source import CopyPasteSource, copy_paste_rng
from ..core.graph import pipeline_arguments, source_outputs
from ..core.parallel_source import check_workers
from ..core.step_io import StackedBatch, split_result, stack_batch

#: Names of the pipeline's outputs, in order.
class CopyPasteOutputs(NamedTuple):
    """The copy-paste pipeline's outputs, by name (B samples each; N instances of a sample).

    Attributes:
        images: (3, S, S) uint8 per sample.
        masks: (N, S, S) uint8 in {0, 1}.
        boxes: (N, 4) float32 xyxy px.
        areas: (N,) int64 mask pixels.
        labels: (N,) int64 category ids.
        iscrowd, pasted: (N,) uint8.
        image_id: () int64.
        position: (POSITION_FIELDS,) int64, a :class:`~decal.dali_pipes.core.epoch_source.PositionRow`.
    """

    images: Any
    masks: Any
    boxes: Any
    areas: Any
    labels: Any
    iscrowd: Any
    pasted: Any
    image_id: Any
    position: Any


#: Names of the pipeline's outputs, in order.
OUTPUT_NAMES = CopyPasteOutputs._fields


@dataclass(frozen=True)
class CopyPasteStep:
    """The ``fn.python_function`` body (batch mode): stacks the batch, runs Copy-Paste.

    Inputs per sample: image S×S×3 uint8, masks S×S×(N+1) uint8 (last channel the dummy),
    labels (N,) int64, iscrowd (N,) uint8, position (5,) int64. NumPy on the CPU backend,
    CuPy on the GPU backend. With ``params=None`` nothing is pasted, but masks are still
    transposed, empty instances dropped and boxes re-derived.

    ``threads``: on the CPU backend, run the per-sample work in chunks on that many threads
    (:mod:`~decal.kernels.parallel_batch`, 1: in this thread; the same batch bit for bit);
    None: the batched kernels, one call each.
    Ignored for CuPy inputs (one launch per kernel already).
    """

    params: CopyPasteParams | None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"step threads must be an integer >= 1 or None, got {self.threads!r}")
        self.pool()  # started here, in the thread that builds the graph, not in DALI's (see shared_pool)

    def __call__(self, images, masks, labels, iscrowd, positions):
        pool = self.pool()
        return self.paste(stack_batch(images, masks, labels, iscrowd, positions, pool))

    def pool(self) -> Any:
        """The shared thread pool of ``threads``, or None."""
        return shared_pool(self.threads) if self.threads else None

    def paste(self, batch: StackedBatch) -> tuple[list[Any], ...]:
        """Copy-Paste over a batch in the batched form (host masks or descriptors)."""
        return paste_stacked(batch, self.params, pool=self.pool())


def paste_stacked(
    batch: StackedBatch, params: CopyPasteParams | None, *, pool: Any = None, draw_plan: Callable[..., PastePlan] = draw_paste_plan
) -> tuple[list[Any], ...]:
    """One batch of a copy-paste step: Copy-Paste with ``params`` (None: nothing pasted,
    empty instances still dropped) and the batch's generator (:func:`copy_paste_rng` of its
    position), the result split per sample. Masks rasterised from descriptors (they come with
    their areas and boxes) take :func:`~decal.kernels.copy_paste_fused.copy_paste_batch_fused`,
    host masks :func:`~decal.kernels.copy_paste.copy_paste_batch`: the same result for the
    same inputs (``tests/test_copy_paste_fused.py``). ``pool``: threads for the host twins'
    per-sample chunks (host masks on the CPU backend); ``draw_plan``: the partners and pasted
    subsets (:func:`~decal.kernels.paste_plan.draw_paste_plan`, or a family's own)."""
    params = params or CopyPasteParams(max_num_pasted=0)
    rng = copy_paste_rng(batch.position)
    if batch.areas is not None:
        result = copy_paste_batch_fused(
            batch.images, batch.masks, batch.areas, batch.boxes, batch.offsets, batch.labels, batch.iscrowd, params,
            rng, areas_host=batch.areas_host, draw_plan=draw_plan,
        )  # fmt: skip
    else:
        options: dict[str, Any] = {"ops": BatchOps.threaded(pool)} if pool is not None and batch.xp is np else {}
        result = copy_paste_batch(
            batch.images, batch.masks, batch.offsets, batch.labels, batch.iscrowd, params, rng, draw_plan=draw_plan, **options
        )  # fmt: skip
    return split_result(batch.xp, result, len(batch.offsets) - 1)


def build_copy_paste_pipeline(
    source: CopyPasteSource,
    *,
    output_size: int,
    copy_paste: CopyPasteParams | None,
    pad_value: int = 114,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
    step: Any = None,
    step_threads: int | None = None,
    source_workers: int = 0,
    source_start_method: str = "spawn",
) -> Pipeline:
    """Build (not yet run) the pipeline over ``source``; outputs are :data:`OUTPUT_NAMES`.

    Args:
        source: the batch callable; its ``batch_size`` is the pipeline's max batch size.
        output_size: S, the side of the square output in pixels.
        copy_paste: the Copy-Paste parameters, or None for scale jitter and flip only.
        pad_value: gray level of the padding around images smaller than S.
        device: ``"gpu"`` decodes with nvJPEG (``device="mixed"``) and runs every later
            step on the GPU; ``"cpu"`` uses DALI's CPU backend throughout.
        device_id: CUDA device for ``"gpu"``.
        num_threads: DALI CPU worker threads.
        prefetch_queue_depth: batches DALI prepares ahead.
        step: the batch function run after the geometric transforms, in place of
            ``CopyPasteStep(copy_paste)``: same inputs (images, masks with the dummy channel,
            labels, iscrowd, position) and the same seven outputs. Balanced and
            self-training Copy-Paste plug in here.
        step_threads: threads of ``CopyPasteStep`` on the CPU backend (see its docstring);
            unused when ``step`` is given.
        source_workers: 0 calls ``source`` in DALI's thread; N runs it in N worker processes
            (DALI's parallel external source, :mod:`~decal.dali_pipes.core.parallel_source`, from
            ``source.position``), the same batches.
        source_start_method: the workers' ``"fork"`` or ``"spawn"``.
    """
    if output_size < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size}")
    if not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be in [0, 255], got {pad_value}")
    check_workers(source_workers, source_start_method, source.on_error)
    on_gpu = device == "gpu"
    step = CopyPasteStep(copy_paste, step_threads) if step is None else step
    arguments = pipeline_arguments(
        source, device, device_id, num_threads, prefetch_queue_depth, source_workers, source_start_method
    )

    @pipeline_def(**arguments)
    def copy_paste_pipeline():
        layout = ["", "HWC", "", "", "", "", "", "", "", ""]
        outputs = source_outputs(source, len(CopyPasteSource.column_names), source_workers, layout=layout)
        encoded, masks, labels, iscrowd, image_id, scale, crop_x, crop_y, flip, position = outputs
        images = fn.decoders.image(
            encoded, device="mixed" if on_gpu else "cpu", output_type=types.RGB, adjust_orientation=False
        )
        step_position = position
        if on_gpu:  # the step's inputs must share its backend; the small ones go over too
            masks, labels, iscrowd, step_position = masks.gpu(), labels.gpu(), iscrowd.gpu(), position.gpu()
        longer = scale * float(output_size)
        images = fn.resize(images, resize_longer=longer, antialias=True)
        masks = fn.resize(masks, resize_longer=longer, interp_type=types.INTERP_NN, antialias=False)
        window = dict(
            crop=(output_size, output_size), crop_pos_x=crop_x, crop_pos_y=crop_y, out_of_bounds_policy="pad"
        )
        images = fn.flip(fn.crop(images, fill_values=float(pad_value), **window), horizontal=flip)
        masks = fn.flip(fn.crop(masks, fill_values=0.0, **window), horizontal=flip)
        return step_outputs(step, device, images, [masks, labels, iscrowd, step_position], image_id, position)

    return copy_paste_pipeline()


def step_outputs(step: Any, device: str, images: Any, inputs: list[Any], image_id: Any, position: Any) -> tuple[Any, ...]:
    """The end of a copy-paste graph: ``step`` (a batched ``fn.python_function`` on
    ``device``) over the S×S×3 ``images`` and its other ``inputs``, its seven outputs, the
    images transposed to 3×S×S, as a :class:`CopyPasteOutputs` tuple with the source's
    ``image_id`` and ``position`` columns."""
    images, masks, boxes, areas, labels, iscrowd, pasted = fn.python_function(
        images, *inputs, function=step, batch_processing=True, num_outputs=7, device=device,
        output_layouts=["HWC", "NHW"],
    )  # fmt: skip
    images = fn.transpose(images, perm=[2, 0, 1], output_layout="CHW")
    return tuple(
        CopyPasteOutputs(
            images=images, masks=masks, boxes=boxes, areas=areas, labels=labels,
            iscrowd=iscrowd, pasted=pasted, image_id=image_id, position=position,
        )
    )  # fmt: skip
