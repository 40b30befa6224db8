"""The server's memory estimate of a stream whose masks are rasterised from descriptors
(``server/memory.py``, :func:`descriptor_stream_bytes`): chosen by the loader's mask source,
below the host-stack estimate when images carry many instances, above what a real batch of
the CPU descriptor path allocates, and what admission over gRPC follows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import grpc
import numpy as np
import pytest

from decal.dali_pipes.copy_paste import pipeline as copy_paste_pipeline
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.dali_pipes.core import step_io
from decal.server.config import DatasetEntry, Limits
from decal.server.memory import DescriptorSizes, descriptor_sizes, descriptor_stream_bytes, max_instances, stream_memory_bytes
from decal.server.pipelines import COPY_PASTE, PIPELINES

from coco_factory import write_coco_dataset
from server_helpers import first_status, make_config, request, running_server

#: Options as the server's plan holds them for the copy-paste family (its defaults: LSJ
#: jitter, up to 100 pasted instances).
OPTIONS = {"batch_size": 4, "output_size": 64, "max_num_pasted": 100, "copy_paste": True}
DEPTH = 4


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> tuple[Path, Path]:
    """Images with 20 to 30 instances each (polygons, RLE and crowds)."""
    return write_coco_dataset(tmp_path_factory.mktemp("crowded"), num_images=8, instances_per_image=(20, 30), seed=6)


def _loader(data: tuple[Path, Path], mask_source: str, **options: Any) -> CopyPasteLoader:
    return CopyPasteLoader(*data, device="cpu", num_threads=1, seed=3, mask_source=mask_source,
                           **{**{k: OPTIONS[k] for k in ("batch_size", "output_size", "max_num_pasted")}, **options})  # fmt: skip


def test_the_estimate_follows_the_loaders_mask_source(crowded) -> None:
    host, described = _loader(crowded, "host"), _loader(crowded, "descriptors")
    assert (host.mask_source, described.mask_source) == ("host", "descriptors")
    estimate = PIPELINES["copy-paste"].memory
    host_bytes, host_what = estimate(OPTIONS, host, DEPTH)
    described_bytes, described_what = estimate(OPTIONS, described, DEPTH)
    n_max = max_instances(host.dataset)
    assert n_max >= 20
    assert host_bytes == stream_memory_bytes(batch_size=4, output_size=64, max_scale=2.0, instances=n_max, depth=DEPTH, pasted=100)
    assert descriptor_sizes(described.source.index).instances == n_max
    assert described_bytes < 0.9 * host_bytes  # S² per mask plane instead of (2·S)²
    assert "descriptors" in described_what and "descriptors" not in host_what


def test_lvis_like_images_need_about_a_third_of_the_host_figure() -> None:
    """An LVIS-like worst image (300 instances, 60 kB of descriptors), LSJ at 1024 px, up to
    100 pasted, 4 batches in flight: the descriptor bound is about a third of the host one
    (both count the outputs at S; the host one adds its (2·S)² mask stacks)."""
    common = dict(batch_size=8, output_size=1024, max_scale=2.0, depth=4)
    host = stream_memory_bytes(instances=300, pasted=100, **common)
    described = descriptor_stream_bytes(sizes=[DescriptorSizes(300, 60_000)], pasted=100, **common)
    assert 0.25 * host < described < 0.45 * host
    mosaic_host = stream_memory_bytes(instances=4 * 300, **common)
    mosaic = descriptor_stream_bytes(sizes=[DescriptorSizes(300, 60_000)], pasted=0, tiles=4, **common)
    assert mosaic < 0.5 * mosaic_host


@pytest.mark.parametrize("max_scale", [1.0, 1.25])
@pytest.mark.parametrize("pasted_from_batch", [True, False])
def test_the_host_bound_is_above_the_descriptor_bound_with_a_small_jitter(max_scale: float, pasted_from_batch: bool) -> None:
    """Host stacks hold every plane the descriptor path holds, plus the jittered masks: with
    no or a small jitter and as many pasted as present, the host bound once counted the
    jittered stacks only and came out below the descriptor bound (and below the outputs at S
    that a host stream holds too)."""
    common = dict(batch_size=4, output_size=256, max_scale=max_scale, depth=4, pasted=30, pasted_from_batch=pasted_from_batch)
    host = stream_memory_bytes(instances=30, **common)
    described = descriptor_stream_bytes(sizes=[DescriptorSizes(30, 3_000)], **common)
    outputs_at_s = 4 * 4 * 256**2 * (3 + 30 + 30)  # images and output masks of the batches in flight
    assert host > described > outputs_at_s


def test_descriptor_sizes_bound_every_images_descriptors(crowded) -> None:
    """``D_max`` is at least the descriptor bytes of any image, whichever instances it keeps
    as polygons, RLE or boxes (``paste_by_box`` makes every one a box)."""
    from decal.dali_pipes.coco.index import batch_descriptors
    from decal.kernels.geometry_batch import jitter_geometries

    index = _loader(crowded, "descriptors").source.index
    sizes = descriptor_sizes(index)
    images = np.arange(len(index.heights))
    geometries = jitter_geometries(index.heights, index.widths, np.full(len(images), 2.0, np.float32),
                                   np.zeros(len(images), np.float32), np.zeros(len(images), np.float32),
                                   np.zeros(len(images), np.int32), 64)  # fmt: skip
    for by_box in (False, True):
        desc, bounds = batch_descriptors(index, images, geometries, paste_by_box=by_box)
        for piece in desc.split(bounds):
            described = sum(np.asarray(piece[name]).nbytes for name in step_io.DESCRIPTOR_COLUMNS if name != "tables")
            assert 0 < described <= sizes.descriptor_bytes


def test_the_estimate_bounds_what_a_cpu_descriptor_batch_allocates(crowded, monkeypatch) -> None:
    """Every array the descriptor step receives (per-sample images, descriptor columns,
    labels, flags, positions), makes (stacked images, masks rasterised at S, their areas and
    boxes) and returns (images, masks, boxes, areas, labels, flags), summed per batch on DALI's
    CPU backend: at most the estimate of one batch in flight."""
    measured: list[int] = []
    current: list[int] = [0]

    def nbytes(arrays: Any) -> int:
        if isinstance(arrays, np.ndarray):
            return arrays.nbytes
        if isinstance(arrays, (list, tuple)):
            return sum(nbytes(a) for a in arrays)
        return sum(nbytes(getattr(arrays, name)) for name in ("images", "masks", "labels", "iscrowd", "position",
                                                                 "areas", "boxes", "areas_host") if getattr(arrays, name, None) is not None)  # fmt: skip

    real_batch, real_paste = step_io.descriptor_batch, copy_paste_pipeline.paste_stacked

    def recording_batch(*columns: Any) -> step_io.StackedBatch:
        batch = real_batch(*columns)
        current[0] = nbytes(list(columns)) + nbytes(batch)
        return batch

    def recording_paste(batch: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = real_paste(batch, *args, **kwargs)
        measured.append(current[0] + nbytes(list(outputs)))
        return outputs

    monkeypatch.setattr(step_io, "descriptor_batch", recording_batch)
    monkeypatch.setattr(copy_paste_pipeline, "paste_stacked", recording_paste)
    with _loader(crowded, "descriptors") as loader:
        batches = list(loader)
        bound, _ = PIPELINES["copy-paste"].memory(OPTIONS, loader, 1)
    assert len(measured) == len(batches) == 2
    assert any(int(t["pasted"].sum()) for b in batches for t in b.targets)
    assert max(measured) <= bound
    assert max(measured) > bound / 20  # a bound of this batch, not of a different order


class MaskSourceLoaders:
    """A loader factory: the family's loader with ``mask_source`` given."""

    def __init__(self, mask_source: str) -> None:
        self.mask_source = mask_source

    def __call__(self, entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
        return COPY_PASTE.build_loader(entry, {**options, "mask_source": self.mask_source})


def _needed(crowded, mask_source: str) -> int:
    """The estimate a server reports when it refuses the request (max_stream_bytes = 1)."""
    limits = Limits(max_streams=8, max_batch_size=16, max_output_size=512, max_stream_bytes=1)
    with running_server(make_config({"synth": crowded}, limits=limits), loader_factory=MaskSourceLoaders(mask_source)) as s:
        code, details = first_status(s.grpc_address, request("synth", batch_size=4))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    return int(re.search(r"\((\d+) bytes", details).group(1))


def test_admission_follows_the_descriptor_estimate(crowded) -> None:
    host, described = _needed(crowded, "host"), _needed(crowded, "descriptors")
    assert described < host
    for limit, mask_source, code in [
        (described, "descriptors", grpc.StatusCode.OK),
        (described - 1, "descriptors", grpc.StatusCode.RESOURCE_EXHAUSTED),
        (described, "host", grpc.StatusCode.RESOURCE_EXHAUSTED),  # the stream the host estimate refused
        (host, "host", grpc.StatusCode.OK),
    ]:
        limits = Limits(max_streams=8, max_batch_size=16, max_output_size=512, max_stream_bytes=limit)
        config = make_config({"synth": crowded}, limits=limits)
        with running_server(config, loader_factory=MaskSourceLoaders(mask_source)) as server:
            got, details = first_status(server.grpc_address, request("synth", batch_size=4))
        assert got == code, (limit, mask_source, details)
