"""mmdetection's own LSJ + Copy-Paste pipeline, when mmdetection 3.x is importable (an optional
extra for the bench, never a dependency of decal).

The pipeline is mmdetection's ``configs/simple_copy_paste`` training pipeline at S×S, built
through mmdetection's registry from these transforms (nothing re-implemented here):

``LoadImageFromFile`` → ``LoadAnnotations(with_bbox, with_mask)`` →
``RandomResize(scale=(S, S), ratio_range=(0.1, 2.0), keep_ratio=True)`` →
``RandomCrop(crop_size=(S, S), crop_type="absolute_range", recompute_bbox=True,
allow_negative_crop=True)`` → ``FilterAnnotations(min_gt_bbox_wh=(0.01, 0.01))`` →
``RandomFlip(prob=0.5)`` → ``Pad(size=(S, S), pad_val=114)``, wrapped in
``MultiImageMixDataset`` with ``CopyPaste(max_num_pasted=100)`` (the partner image goes through
the same load pipeline) and ``PackDetInputs``; batches from a torch ``DataLoader`` with one
worker process per core (``pseudo_collate``), with the process set up as mmengine's runner sets
it up (``set_multi_processing``: fork, OpenCV threads 0, ``OMP_NUM_THREADS=1``).

``mmcv-lite`` (mmcv without compiled ops, what installs without a CUDA build) lacks
``mmcv.ops``, which ``mmdet.structures.mask`` imports for ``roi_align`` only (used by
``BitmapMasks.crop_and_resize``, which none of these transforms call). When ``mmcv.ops`` cannot
be imported, :func:`import_mmdet` registers a stand-in ``mmcv.ops.roi_align`` that raises if it
is ever called, and says so in the row's notes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["import_mmdet", "make_mmdet_loader", "skip_reason"]


def _roi_align_unavailable(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("mmcv-lite has no compiled mmcv.ops.roi_align (bench/mmdet_real.py stand-in)")


def import_mmdet() -> dict[str, str]:
    """Import mmdetection (registering the ``mmcv.ops`` stand-in when mmcv has no compiled
    ops); returns the versions and notes for the bench row. Raises ImportError if it cannot."""
    notes = []
    try:
        import mmcv.ops  # noqa: F401
    except ImportError:
        ops = types.ModuleType("mmcv.ops")
        roi = types.ModuleType("mmcv.ops.roi_align")
        roi.roi_align = _roi_align_unavailable  # type: ignore[attr-defined]
        ops.roi_align = roi  # type: ignore[attr-defined]
        sys.modules.setdefault("mmcv.ops", ops)
        sys.modules.setdefault("mmcv.ops.roi_align", roi)
        notes.append("mmcv without compiled ops: mmcv.ops.roi_align stand-in (never called by this pipeline)")
    import mmcv
    import mmcv.transforms  # noqa: F401 - registers LoadImageFromFile, RandomResize
    import mmdet
    import mmdet.datasets  # noqa: F401 - registers the datasets and transforms used here
    import mmengine
    from mmengine.registry import DefaultScope

    if DefaultScope.get_current_instance() is None:
        DefaultScope.get_instance("decal-bench", scope_name="mmdet")
    return {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__, "notes": "; ".join(notes)}


def skip_reason() -> str | None:
    """None when mmdetection's pipeline can be built here, else why not (one line)."""
    try:
        import_mmdet()
    except Exception as error:  # ImportError, or a version assertion of mmdet's __init__
        return f"mmdetection not importable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); " \
               "pip install mmdet==3.3.0 mmengine mmcv-lite==2.1.0 to get this row"
    return None


def make_mmdet_loader(annotation_file: str | Path, image_dir: str | Path, *, output_size: int, batch_size: int,
                      workers: int, seed: int = 0) -> Any:
    """A torch DataLoader over mmdetection's LSJ + Copy-Paste dataset (module docstring)."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.utils.dl_utils import set_multi_processing
    from mmdet.registry import DATASETS

    set_multi_processing(mp_start_method="fork", opencv_num_threads=0, distributed=False)
    size = (output_size, output_size)
    classes = tuple(c["name"] for c in json.loads(Path(annotation_file).read_text())["categories"])
    load_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="RandomResize", scale=size, ratio_range=(0.1, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_type="absolute_range", crop_size=size, recompute_bbox=True, allow_negative_crop=True),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
        dict(type="RandomFlip", prob=0.5),
        dict(type="Pad", size=size, pad_val=dict(img=(114, 114, 114))),
    ]
    dataset = DATASETS.build(dict(
        type="MultiImageMixDataset",
        dataset=dict(type="CocoDataset", ann_file=str(annotation_file), data_prefix=dict(img=str(image_dir) + "/"),
                     metainfo=dict(classes=classes), filter_cfg=None, pipeline=load_pipeline, data_root=""),
        pipeline=[dict(type="CopyPaste", max_num_pasted=100), dict(type="PackDetInputs")],
    ))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=pseudo_collate,
        persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None, drop_last=True, generator=generator,
    )
