"""Instances outside the output window dropped in the source (dali_pipes/copy_paste/window_prune.py): only
instances the geometry leaves empty, and the loader's batches stay the same bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decal.dali_pipes.copy_paste.pipeline import CopyPasteStep
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.dali_pipes.copy_paste.window_prune import instances_in_window, window_region
from decal.kernels.mask_geometry import apply_geometry, sample_geometry, source_columns, source_rows

from coco_factory import write_coco_dataset
from loader_variants import copy_paste_with_step


def test_an_instance_judged_outside_is_empty_after_the_geometry() -> None:
    rng = np.random.default_rng(0)
    dropped = kept = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(5, 90, 2))
        masks = np.zeros((h, w, 6), np.uint8)
        for c in range(6):  # one small blob per instance, anywhere
            y, x = rng.integers(0, h), rng.integers(0, w)
            masks[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6), c] = 1
        scale, cx, cy = float(rng.uniform(0.1, 2.0)), float(rng.random()), float(rng.random())
        flip = int(rng.integers(0, 2))
        inside = instances_in_window(masks, scale, cx, cy, flip, 32)
        g = sample_geometry(h, w, scale, cx, cy, flip, 32)
        shown = apply_geometry(np.moveaxis(masks, 2, 0), source_rows(g), source_columns(g)).any(axis=(1, 2))
        assert not (shown & ~inside).any()  # never drops an instance that shows
        dropped += int((~inside).sum())
        kept += int(inside.sum())
    assert dropped > 100 and kept > 100


def test_window_region_of_an_upscaled_corner() -> None:
    # longer side 60 → 64 (×16/15): the 32×32 top-right window samples source rows 0..29 and
    # columns 30..59, widened by the 1-pixel margin
    region = window_region(40, 60, 2.0, 1.0, 0.0, 0, 32)
    assert region == (slice(0, 31), slice(29, 60))
    assert window_region(40, 60, 0.5, 0.3, 0.7, 1, 32) == (slice(0, 40), slice(0, 60))  # downscaled: all


def _unpruned(*coco, **options):
    """The loader with every instance kept in the source (its step is the default one)."""
    return copy_paste_with_step(*coco, lambda config: CopyPasteStep(config.copy_paste_params(), config.num_threads), **options)


@pytest.mark.parametrize("options", [dict(), dict(copy_paste=False), dict(source_workers=1, flip_prob=1.0)],
                         ids=["copy-paste", "jitter-only", "workers-flipped"])
def test_pruned_loader_gives_the_unpruned_batches(tmp_path, options) -> None:
    coco = write_coco_dataset(tmp_path, num_images=10, size=(120, 90), instances_per_image=(1, 9), seed=3)
    kw = dict(batch_size=4, output_size=64, jitter=(1.2, 2.0), device="cpu", num_threads=2, seed=5, **options)
    pruned, unpruned = CopyPasteLoader(*coco, **kw), _unpruned(*coco, **kw)
    with pruned, unpruned:
        want, got = list(unpruned), list(pruned)
    assert pruned.source.prune_window_size == 64 and unpruned.source.prune_window_size is None
    assert len(want) == len(got) == 3
    for a, b in zip(want, got):
        assert a.position == b.position and torch.equal(a.images, b.images)
        for ta, tb in zip(a.targets, b.targets):
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_pruning_drops_instances_on_upscaled_batches(tmp_path) -> None:
    coco = write_coco_dataset(tmp_path, num_images=8, size=(120, 90), instances_per_image=(4, 9), seed=3)
    loader = CopyPasteLoader(*coco, batch_size=8, output_size=64, jitter=(1.5, 2.0), device="cpu", num_threads=1, seed=1)
    source = loader.source
    source.prune_window_size = 64
    columns = source()
    before = sum(len(r.annotations) for r in (loader.dataset[i] for i in source.produced[-1].dataset_indices))
    after = sum(len(labels) for labels in columns[2])
    assert all(m.shape[2] == len(l) + 1 for m, l in zip(columns[1], columns[2]))
    assert after < before
