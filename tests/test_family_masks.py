"""Balanced and self-training Copy-Paste take ``mask_source`` as copy-paste does (issue 10,
item 3): on DALI's CPU backend, ``mask_source="descriptors"`` (masks rasterised by the step
from polygon/RLE descriptions) and ``mask_source="host"`` (H×W×(N+1) masks from the source)
give the same batches bit for bit over several batches, resumed runs included; the
descriptor source of self-training joins the two sets' descriptors into one batch exactly;
the descriptor step plumbing moves the host metadata in one copy. The GPU-marked test runs
the descriptor path (the GPU default) on a GPU against the host path.

Why the two paths agree: the descriptor geometry tables reproduce DALI's nearest-neighbour
resize, crop and flip, the rasteriser pycocotools' rule (``tests/test_rasterize.py``), so
the step receives the same (M, S, S) masks; both forms then go through the same core
(:class:`~decal.dali_pipes.core.step_io.StackedBatch`). The host source of self-training
drops instances outside their output window first and the descriptor source does not; the
step drops empty instances and draws its pastes among non-empty ones only, so that changes
no output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
from decal.dali_pipes.coco.index import batch_descriptors
from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteSource, join_descriptors
from decal.dali_pipes.copy_paste.source import CopyPasteSource
from decal.dali_pipes.core.step_io import DESCRIPTOR_COLUMNS, descriptor_batch, stack_batch
from decal.dali_pipes.self_training.loader import SelfTrainingLoader
from decal.dali_pipes.self_training.source import GpuMaskSelfTrainingSource, SelfTrainingSource
from decal.kernels.instance_masks import ARRAY_FIELDS, build_descriptors, rasterize_instances
from decal.kernels.mask_geometry import sample_geometry

from coco_factory import write_self_training_sets

OUT = 72
PSEUDO = 99


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """A labelled json (polygons, multi-polygons, compressed RLE, uncompressed RLE crowds,
    an image without annotations), a pseudo-labelled json and its image directory."""
    root = tmp_path_factory.mktemp("family_masks")
    _, paths = write_self_training_sets(
        root, dict(num_images=9, size=(70, 90), instances_per_image=(0, 5), seed=4),
        dict(num_images=5, size=(80, 64), instances_per_image=(0, 3), seed=5), pseudo_category=PSEUDO,
    )  # fmt: skip
    return paths


def balanced(sets, **options) -> BalancedCopyPasteLoader:
    kw = dict(batch_size=3, output_size=OUT, device="cpu", num_threads=1, seed=7, jitter="lsj",
              max_num_pasted=4, bank_min_area=4, bank_capacity=32)  # fmt: skip
    return BalancedCopyPasteLoader(sets["labelled_json"], sets["labelled_dir"], **{**kw, **options})


def self_training(sets, pseudo: bool, **options) -> SelfTrainingLoader:
    kw = dict(batch_size=4, output_size=OUT, device="cpu", num_threads=1, seed=3, jitter="lsj", max_num_pasted=4)
    return SelfTrainingLoader(
        sets["labelled_json"], sets["labelled_dir"], second_images=sets["second_dir"],
        second_annotations=sets["pseudo_json"] if pseudo else None, **{**kw, **options},
    )  # fmt: skip


def epochs(loader, count: int = 2) -> list:
    return [batch for _ in range(count) for batch in loader]


def assert_same_batches(a: list, b: list) -> tuple[int, int]:
    """Every batch equal bit for bit (images and every target field, dtypes included);
    returns (instances, pasted instances) seen."""
    assert len(a) == len(b) > 0
    instances = pasted = 0
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images)
        assert len(x.targets) == len(y.targets)
        for tx, ty in zip(x.targets, y.targets):
            assert tx.keys() == ty.keys()
            for k in tx:
                assert tx[k].dtype == ty[k].dtype and torch.equal(tx[k], ty[k]), k
            instances += len(tx["labels"])
            pasted += int(tx["pasted"].sum())
    return instances, pasted


def test_balanced_descriptors_equal_host_masks(sets) -> None:
    host = balanced(sets, mask_source="host")
    desc = balanced(sets, mask_source="descriptors")
    assert type(host.source) is CopyPasteSource and type(desc.source) is GpuMaskCopyPasteSource
    instances, pasted = assert_same_batches(epochs(host), epochs(desc))
    assert instances > 0 and pasted > 0  # the bank filled and pasted
    assert host.stats["bank"] == desc.stats["bank"]
    assert host.stats["pasted_per_category"] == desc.stats["pasted_per_category"]


@pytest.mark.parametrize("pseudo", [True, False], ids=["pseudo-json", "image-dir"])
def test_self_training_descriptors_equal_host_masks(sets, pseudo) -> None:
    host = self_training(sets, pseudo, mask_source="host")
    desc = self_training(sets, pseudo, mask_source="descriptors")
    assert type(host.source) is SelfTrainingSource and type(desc.source) is GpuMaskSelfTrainingSource
    a, b = epochs(host), epochs(desc)
    instances, pasted = assert_same_batches(a, b)
    assert instances > 0 and pasted > 0
    domains = [int(t["domain"]) for batch in a for t in batch.targets]
    assert 0 in domains and 1 in domains
    if pseudo:  # second-set instances came through the joined descriptors
        assert any(PSEUDO in t["labels"].tolist() for batch in b for t in batch.targets)


def test_self_training_subpixel_runs_on_descriptors(sets) -> None:
    batch = next(iter(self_training(sets, True, mask_source="descriptors", subpixel=True)))
    assert batch.images.shape == (4, 3, OUT, OUT)
    assert all(t["masks"].shape[1:] == (OUT, OUT) for t in batch.targets)


def test_resume_with_descriptors(sets) -> None:
    """Self-training with descriptors resumes exactly; a balanced loader resumed with
    descriptors is the host-mask one resumed (both restart with an empty bank)."""
    loader = self_training(sets, True, mask_source="descriptors")
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    rest = list(iterator)
    again = self_training(sets, True, mask_source="descriptors")
    again.load_state_dict(state)
    assert_same_batches(rest, list(again))

    resumed = []
    for kind in ("host", "descriptors"):
        first = balanced(sets, mask_source=kind)
        iterator = iter(first)
        next(iterator)
        state = first.state_dict()
        other = balanced(sets, mask_source=kind)
        other.load_state_dict(state)
        resumed.append(list(other))
    assert_same_batches(*resumed)


def test_join_descriptors_equals_one_batch(sets) -> None:
    """The descriptors of a batch gathered in two runs and joined are those of the whole
    batch gathered at once, array for array (offsets, rows and tables shifted)."""
    dataset = CocoDataset.open(sets["labelled_json"], sets["labelled_dir"])
    index = dataset.index
    images = np.arange(len(dataset), dtype=np.int64)
    rng = np.random.default_rng(0)
    geometries = [
        sample_geometry(int(index.heights[i]), int(index.widths[i]), float(rng.uniform(0.3, 2.0)),
                        float(rng.uniform()), float(rng.uniform()), int(rng.integers(2)), OUT)
        for i in images
    ]  # fmt: skip
    for subpixel in (False, True):
        whole, whole_bounds = batch_descriptors(index, images, geometries, subpixel=subpixel)
        runs = [batch_descriptors(index, images[s], geometries[s.start : s.stop], subpixel=subpixel)
                for s in (slice(0, 4), slice(4, 5), slice(5, len(images)))]  # fmt: skip
        joined, bounds = join_descriptors(runs)
        assert joined.num_instances == whole.num_instances > 0
        assert len(whole.rle_instances) and len(whole.poly_instances)
        for name in ARRAY_FIELDS:
            np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name), err_msg=name)
            np.testing.assert_array_equal(bounds[name], whole_bounds[name], err_msg=name)


def test_descriptor_batch_equals_stacked_host_masks() -> None:
    """The adapter's batched form from descriptors: the masks, offsets, labels, crowd flags
    and position of the host-mask form of the same instances, plus their areas and boxes."""
    rng = np.random.default_rng(3)
    side, src = 24, (30, 20)
    samples, geometries, host_masks = [], [], []
    for count in (2, 0, 3):
        instances = []
        for _ in range(count):
            xy = rng.uniform([0, 0], [src[1], src[0]], size=(5, 2))
            instances.append(("poly", [xy]))
        g = sample_geometry(src[0], src[1], float(rng.uniform(0.5, 1.5)), 0.5, 0.5, int(rng.integers(2)), side)
        samples.append(instances)
        geometries.append(g)
    desc, bounds = build_descriptors(samples, geometries)
    pieces = desc.split(bounds)
    columns = [[piece[name] for piece in pieces] for name in DESCRIPTOR_COLUMNS]
    masks, areas, boxes = rasterize_instances(desc)
    offsets = np.cumsum([0] + [len(s) for s in samples])
    for b in range(len(samples)):  # the host form: S×S×(N+1) with the dummy channel
        m = masks[offsets[b] : offsets[b + 1]]
        host_masks.append(np.concatenate([np.moveaxis(m, 0, 2), np.zeros((side, side, 1), np.uint8)], axis=2))
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in samples]
    labels = [rng.integers(1, 9, len(s)).astype(np.int64) for s in samples]
    crowd = [(rng.uniform(size=len(s)) < 0.5).astype(np.uint8) for s in samples]
    positions = [np.array([4, 1, 0, 7, 3], np.int64)] * len(samples)
    got = descriptor_batch(images, *columns, labels, crowd, positions)
    want = stack_batch(images, host_masks, labels, crowd, positions)
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.labels, np.concatenate(labels))
    np.testing.assert_array_equal(want.labels, np.concatenate(labels))
    np.testing.assert_array_equal(got.iscrowd, np.concatenate(crowd).astype(bool))
    np.testing.assert_array_equal(want.iscrowd, got.iscrowd)
    np.testing.assert_array_equal(got.position, positions[0])
    np.testing.assert_array_equal(want.position, positions[0])
    np.testing.assert_array_equal(got.areas_host, areas)
    np.testing.assert_array_equal(got.boxes, boxes)
    assert want.areas is None and got.labels.dtype == np.int64 and got.iscrowd.dtype == bool


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["balanced", "self-training"])
def test_gpu_descriptor_default_equals_host_paths(sets, family) -> None:
    """On a GPU: the family's default (descriptors) against ``mask_source="host"`` on the GPU
    (every target field) and against the host path on DALI's CPU backend (the selection and
    geometry: masks, boxes, areas, labels, flags; pixels differ by the JPEG decoders)."""
    make = balanced if family == "balanced" else (lambda s, **o: self_training(s, True, **o))
    default = make(sets, device="gpu")
    assert isinstance(default.source, GpuMaskCopyPasteSource)
    gpu = epochs(default)
    gpu_host = epochs(make(sets, device="gpu", mask_source="host"))
    cpu_host = epochs(make(sets, device="cpu"))
    assert len(gpu) == len(gpu_host) == len(cpu_host) > 0
    for a, b, c in zip(gpu, gpu_host, cpu_host):
        assert a.images.is_cuda and torch.equal(a.images, b.images)
        for ta, tb, tc in zip(a.targets, b.targets, c.targets):
            for k in ta:
                assert torch.equal(ta[k], tb[k]), k
            for k in ("masks", "boxes", "area", "labels", "iscrowd", "pasted", "image_id"):
                assert torch.equal(ta[k].cpu(), tc[k]), k
