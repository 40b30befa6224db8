"""Which masks a copy-paste loader makes (``mask_source``): descriptors by default on the GPU,
host masks by default on the CPU, the choice kept by the user, and the same batches either
way. Runs without a GPU: the backend choice is checked by faking the resolved backend (no
pipeline is built); the GPU-marked tests run the new default on a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
from decal.dali_pipes.copy_paste import loader as copy_paste_loader
from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteSource
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader, CopyPasteLoaderConfig, GpuMaskCopyPasteLoader, mask_source
from decal.dali_pipes.copy_paste.source import CopyPasteSource
from decal.dali_pipes.core import assembly
from decal.dali_pipes.core.options import OptionError
from decal.dali_pipes.self_training.loader import SelfTrainingLoader

from coco_factory import write_coco_dataset

KW = dict(batch_size=3, output_size=64, num_threads=1, seed=3, jitter="lsj")


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(
        tmp_path_factory.mktemp("mask_source"), num_images=7, size=(80, 100), instances_per_image=(0, 5), seed=21
    )


@pytest.fixture
def fake_gpu(monkeypatch) -> None:
    """The builder resolves ``device="gpu"`` to the GPU backend without asking CUDA."""
    monkeypatch.setattr(assembly, "resolve_backend", lambda device: "gpu" if device == "gpu" else "cpu")


def test_default_per_backend() -> None:
    config = CopyPasteLoaderConfig()
    assert config.mask_source is None and config.subpixel is False
    assert mask_source(config, "gpu") == "descriptors"
    assert mask_source(config, "cpu") == "host"
    assert mask_source(CopyPasteLoaderConfig(mask_source="host"), "gpu") == "host"
    assert mask_source(CopyPasteLoaderConfig(mask_source="descriptors"), "cpu") == "descriptors"


def test_cpu_default_keeps_host_masks(coco) -> None:
    assert type(CopyPasteLoader(*coco, device="cpu", **KW).source) is CopyPasteSource


def test_gpu_default_builds_the_descriptor_source_and_graph(coco, fake_gpu, monkeypatch) -> None:
    """``CopyPasteLoader(device="gpu")`` is the GPU-mask loader: its source sends descriptors,
    its graph is the GPU-mask graph with the fused step; ``mask_source="host"`` keeps the
    host-mask graph on the GPU."""
    built: list[str] = []
    monkeypatch.setattr(copy_paste_loader, "build_gpu_mask_pipeline", lambda *a, **k: built.append("descriptors"))
    monkeypatch.setattr(copy_paste_loader, "build_copy_paste_pipeline", lambda *a, **k: built.append("host"))
    loader = CopyPasteLoader(*coco, device="gpu", **KW)
    assert loader.backend == "gpu" and isinstance(loader.source, GpuMaskCopyPasteSource)
    loader._build_pipeline()
    host = CopyPasteLoader(*coco, device="gpu", mask_source="host", **KW)
    assert type(host.source) is CopyPasteSource
    host._build_pipeline()
    assert built == ["descriptors", "host"]


def test_descriptor_option_on_cpu_equals_host_masks(coco) -> None:
    """The option on the CPU backend gives the same batches as the host masks (and as
    ``GpuMaskCopyPasteLoader``, which forces it)."""
    host = list(CopyPasteLoader(*coco, device="cpu", **KW))
    desc = list(CopyPasteLoader(*coco, device="cpu", mask_source="descriptors", **KW))
    forced = list(GpuMaskCopyPasteLoader(*coco, device="cpu", **KW))
    assert len(host) == len(desc) == len(forced) > 0
    for a, b, c in zip(host, desc, forced):
        assert torch.equal(a.images, b.images) and torch.equal(b.images, c.images)
        for ta, tb, tc in zip(a.targets, b.targets, c.targets):
            assert ta.keys() == tb.keys() == tc.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]) and torch.equal(tb[k], tc[k]), k


def test_contradictions_are_option_errors(coco) -> None:
    with pytest.raises(OptionError, match="GpuMaskCopyPasteLoader: option 'mask_source' must be 'descriptors'"):
        GpuMaskCopyPasteLoader(*coco, device="cpu", mask_source="host", **KW)
    with pytest.raises(OptionError, match="CopyPasteLoader: option 'subpixel' needs mask_source='descriptors'"):
        CopyPasteLoader(*coco, device="cpu", subpixel=True, **KW)
    with pytest.raises(OptionError, match="option 'mask_source' must be one of host, descriptors"):
        CopyPasteLoader(*coco, device="cpu", mask_source="gpu", **KW)


@pytest.mark.parametrize("family", ["balanced", "self-training"])
def test_balanced_and_self_training_resolve_like_copy_paste(coco, fake_gpu, monkeypatch, family) -> None:
    """Balanced and self-training take ``mask_source`` as copy-paste does: on the GPU backend
    None resolves to descriptors (the descriptor source, and the descriptor graph running the
    family's own step through ``FromDescriptors``), ``mask_source="host"`` keeps host masks;
    on the CPU backend None resolves to host masks; ``subpixel`` needs descriptors."""
    from decal.dali_pipes.balanced.step import BalancedCopyPasteStep
    from decal.dali_pipes.core.step_io import FromDescriptors
    from decal.dali_pipes.self_training.step import SelfTrainingStep

    if family == "balanced":
        make, name, step_type = (lambda **o: BalancedCopyPasteLoader(*coco, **o, **KW)), "BalancedCopyPasteLoader", BalancedCopyPasteStep
    else:
        make = lambda **o: SelfTrainingLoader(*coco, second_images=coco[1], **o, **KW)  # noqa: E731
        name, step_type = "SelfTrainingLoader", SelfTrainingStep
    steps: list = []
    monkeypatch.setattr(copy_paste_loader, "build_gpu_mask_pipeline", lambda *a, **k: steps.append(k["step"]))
    monkeypatch.setattr(copy_paste_loader, "build_copy_paste_pipeline", lambda *a, **k: steps.append(k["step"]))
    on_gpu = make(device="gpu")
    assert on_gpu.backend == "gpu" and isinstance(on_gpu.source, GpuMaskCopyPasteSource)
    assert mask_source(on_gpu.config, "gpu") == "descriptors"
    on_gpu._build_pipeline()
    assert isinstance(steps[-1], FromDescriptors) and isinstance(steps[-1].core, step_type)
    kept = make(device="gpu", mask_source="host")
    assert isinstance(kept.source, CopyPasteSource) and not isinstance(kept.source, GpuMaskCopyPasteSource)
    kept._build_pipeline()
    assert isinstance(steps[-1], step_type)
    on_cpu = make(device="cpu")
    assert isinstance(on_cpu.source, CopyPasteSource) and not isinstance(on_cpu.source, GpuMaskCopyPasteSource)
    assert isinstance(make(device="cpu", mask_source="descriptors").source, GpuMaskCopyPasteSource)
    with pytest.raises(OptionError, match=f"{name}: option 'subpixel' needs mask_source='descriptors'"):
        make(device="cpu", subpixel=True)


def test_uniform_columns_are_dense_arrays(coco) -> None:
    """Scalars and fixed-size rows reach DALI as one (B, ...) array per batch (one copy), not B
    arrays; the per-sample values are those of the rows."""
    for source in (CopyPasteLoader(*coco, device="cpu", **KW).source, GpuMaskCopyPasteLoader(*coco, **KW).source):
        columns = dict(zip(source.column_names, source()))
        batch = len(columns["encoded"])
        for name, shape, dtype in [("scale", (batch,), np.float32), ("crop_x", (batch,), np.float32),
                                   ("crop_y", (batch,), np.float32), ("flip", (batch,), np.int32),
                                   ("image_id", (batch, 1), np.int64), ("position", (batch, 5), np.int64)]:
            column = columns[name]
            assert isinstance(column, np.ndarray) and column.shape == shape and column.dtype == dtype, name
        if isinstance(source, GpuMaskCopyPasteSource):
            tables = columns["tables"]
            assert isinstance(tables, np.ndarray) and tables.shape == (batch, 1, 2 * 64 + 4)
        ids = [source.dataset[i].image_id for i in source.produced[-1].dataset_indices]
        assert columns["image_id"][:, 0].tolist() == ids
        assert (columns["position"] == columns["position"][0]).all()


@pytest.mark.gpu
def test_gpu_default_equals_gpu_mask_loader_and_host_masks(coco) -> None:
    """On a GPU: the default loader is the GPU-mask loader (the same batches), and its masks,
    boxes, labels and flags equal those of ``mask_source="host"`` on the GPU."""
    default = list(CopyPasteLoader(*coco, device="gpu", **KW))
    forced = list(GpuMaskCopyPasteLoader(*coco, device="gpu", **KW))
    host = list(CopyPasteLoader(*coco, device="gpu", mask_source="host", **KW))
    assert len(default) == len(forced) == len(host) > 0
    for a, b, c in zip(default, forced, host):
        assert a.images.is_cuda and torch.equal(a.images, b.images)
        for ta, tb, tc in zip(a.targets, b.targets, c.targets):
            for k in ("masks", "boxes", "area", "labels", "iscrowd", "pasted", "image_id"):
                assert torch.equal(ta[k], tb[k]), k
                assert torch.equal(ta[k].cpu(), tc[k].cpu()), k
