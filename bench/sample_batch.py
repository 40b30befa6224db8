"""One realistic copy-paste batch of the benchmark's data, described for the mask kernels.

Shared by the ``kernels`` and ``peers`` modes of ``decal bench`` (:mod:`bench.throughput`,
:mod:`bench.peers`), so both time their steps on the same kind of batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SampleBatch:
    """B images' instances with LSJ geometry at S², on the host.

    Attributes:
        descriptors: :class:`~decal.kernels.instance_masks.MaskDescriptors` (host NumPy) of
            the batch's M instances at S×S.
        images: (B, S, S, 3) uint8 random pixels (the kernels' cost does not depend on them).
        offsets: (B + 1,) int64; image b owns instances ``offsets[b]:offsets[b + 1]``.
        labels: (M,) int64 category ids; crowd: (M,) bool ``iscrowd``.
    """

    descriptors: Any
    images: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray


def sample_batch(data: tuple[Path, Path], batch_size: int, side: int, seed: int) -> SampleBatch:
    """Draw ``batch_size`` images of the dataset ``data`` = (annotation json, image folder)
    with ``seed``, give each an LSJ geometry (flip probability 0.5) onto ``side``², and
    describe their instances."""
    from decal.dali_pipes.coco.reader import CocoDataset
    from decal.dali_pipes.copy_paste.gpu_masks import record_instances
    from decal.dali_pipes.core.scale_jitter import ScaleJitter, draw_geometry
    from decal.kernels.instance_masks import build_descriptors
    from decal.kernels.mask_geometry import sample_geometry

    ds = CocoDataset(*data)
    b, s = batch_size, side
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=b, replace=len(ds) < b)
    geo = draw_geometry(rng, b, ScaleJitter.lsj(), 0.5)
    recs = [ds[int(i)] for i in idx]
    geoms = [sample_geometry(r.height, r.width, geo.scale[k], geo.crop_x[k], geo.crop_y[k], geo.flip[k], s)
             for k, r in enumerate(recs)]
    desc, _ = build_descriptors([record_instances(r) for r in recs], geoms)
    counts = np.array([len(r.annotations) for r in recs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = np.concatenate([[a.category_id for a in r.annotations] for r in recs]).astype(np.int64)
    crowd = np.concatenate([[a.iscrowd for a in r.annotations] for r in recs]).astype(bool)
    images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
    return SampleBatch(desc, images, offsets, labels, crowd)
