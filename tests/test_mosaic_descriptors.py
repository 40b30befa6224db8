"""The Mosaic loader's descriptor masks (``mask_source="descriptors"``, the GPU default): the
tile geometry tables against the host placement, DALI's exact-size resize against the tables,
the descriptor batches against the host-mask batches bit for bit (DALI CPU), the default per
backend, resume, the option errors; and, on a GPU, the descriptor path against the CPU host
path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types

from decal.dali_pipes.core import assembly
from decal.dali_pipes.core.options import OptionError
from decal.dali_pipes.mosaic import loader as mosaic_loader
from decal.dali_pipes.mosaic.descriptors import MosaicDescriptorSource, MosaicDescriptorStep
from decal.dali_pipes.mosaic.loader import MosaicLoader, MosaicLoaderConfig
from decal.dali_pipes.mosaic.pipeline import MosaicSource
from decal.dali_pipes.mosaic.twin import (
    NUM_TILES,
    MosaicStep,
    crop_regions,
    place_masks,
    quadrant_regions,
    tile_geometries,
)
from decal.kernels.instance_masks import build_descriptors, rasterize_instances
from decal.kernels.mask_geometry import SampleGeometry, apply_geometry, resize_to, source_columns, source_rows
from decal.kernels.rle_decode import toggles_from_counts

from coco_factory import write_coco_dataset

S = 48

# ------------------------------------------------------------------- tables vs host placement


def _resized(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) masks resized to ``size`` by the tables' nearest-neighbour rule (the twin of
    DALI's ``fn.resize(size=...)``, checked against DALI below)."""
    rows, cols = resize_to(masks.shape[1], masks.shape[2], *size)
    g = SampleGeometry(rows=rows, cols=cols, anchor_y=0, anchor_x=0, out_h=size[0], out_w=size[1], flip=False)
    return apply_geometry(masks, source_rows(g), source_columns(g))


def _random_regions(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """(4, 6) regions: a 2×2 mosaic around a centre anywhere on the canvas (its edges
    included, so tiles hang out or vanish), or a single-image window (tile 0 only)."""
    if rng.random() < 0.75:
        centre = (int(rng.integers(0, S + 1)), int(rng.integers(0, S + 1)))
        return quadrant_regions(sizes, centre, S)
    regions = np.zeros((NUM_TILES, 6), np.int64)
    _, regions[0] = crop_regions(tuple(int(v) for v in sizes[0]), tuple(rng.uniform(0, 1, 2)), S)
    return regions


def _runs(mask: np.ndarray) -> np.ndarray:
    """Uncompressed COCO RLE counts of a 0/1 mask: column-major runs, starting with zeros."""
    flat = mask.reshape(-1, order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds)
    return np.concatenate([[0], runs]) if flat[0] else runs


def test_tile_geometries_reproduce_place_masks() -> None:
    """For random source and tile sizes (tiles smaller and larger than the canvas), mosaic
    centres over the whole canvas, single-image windows and flips, the tile tables put every
    source pixel where resize + :func:`place_masks` put it, through the tables directly and
    through the rasteriser (RLE instances, the NumPy twin)."""
    rng = np.random.default_rng(7)
    for case in range(150):
        src = rng.integers(1, 90, size=(NUM_TILES, 2))
        sizes = rng.integers(1, 2 * S, size=(NUM_TILES, 2))
        regions = _random_regions(rng, sizes)
        flip = int(rng.integers(0, 2))
        counts = rng.integers(0, 3, size=NUM_TILES)
        masks = [(rng.random((int(counts[k]), *src[k])) < 0.5).astype(np.uint8) for k in range(NUM_TILES)]
        tile_masks = [np.moveaxis(_resized(m, tuple(sizes[k])), 0, 2) for k, m in enumerate(masks)]
        expected, _ = place_masks(np, tile_masks, counts, regions, S, flip)

        geometries = tile_geometries(src[None, :, 0], src[None, :, 1], sizes[None], regions[None], np.array([flip]), S)
        direct = np.concatenate([apply_geometry(m, source_rows(g), source_columns(g)) for m, g in zip(masks, geometries)])
        np.testing.assert_array_equal(direct, expected, err_msg=f"case {case}")

        instances = [("rle", toggles_from_counts(_runs(one), *one.shape)) for m in masks for one in m]
        # one descriptor "sample" per tile, each with its table; rows in tile order
        per_tile, start = [], 0
        for k in range(NUM_TILES):
            per_tile.append(instances[start : start + int(counts[k])])
            start += int(counts[k])
        desc, _ = build_descriptors(per_tile, geometries)
        raster, areas, _ = rasterize_instances(desc)
        np.testing.assert_array_equal(raster, expected, err_msg=f"case {case} (rasterised)")
        np.testing.assert_array_equal(areas, expected.sum(axis=(1, 2)))


def _coordinate_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx & 255, xx >> 8, yy & 255, yy >> 8, np.ones_like(xx)], -1).astype(np.uint8)


def test_resize_to_equals_dali_resize_size() -> None:
    """Each pixel carries its coordinates through DALI's ``fn.resize(size=...)`` nearest
    neighbour, driven as the mosaic graph drives it (a float32 (h, w) column); the tables of
    :func:`resize_to` must name the same source pixel."""
    rng = np.random.default_rng(99)
    batch = 40
    cases = [((1, 1), (5, 7)), ((300, 2), (3, 1)), ((7, 9), (7, 9)), ((5, 8), (64, 3))] + [
        ((int(rng.integers(1, 600)), int(rng.integers(1, 600))), (int(rng.integers(1, 400)), int(rng.integers(1, 400))))
        for _ in range(batch - 4)
    ]

    def source():
        return [_coordinate_image(*src) for src, _ in cases], [np.array(size, np.float32) for _, size in cases]

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None)
    def pipe():
        t, size = fn.external_source(source=source, num_outputs=2, batch=True, layout=["HWC", ""])
        return fn.resize(t, size=size, interp_type=types.INTERP_NN, antialias=False)

    p = pipe()
    p.build()
    (out,) = p.run()
    for i, (src, size) in enumerate(cases):
        expected = _resized(np.moveaxis(_coordinate_image(*src), 2, 0), size)
        np.testing.assert_array_equal(np.moveaxis(np.array(out[i]), 2, 0), expected, err_msg=f"sample {i} {src}->{size}")


# ------------------------------------------------------------------- loader: host vs descriptors


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    """Polygons, two-polygon objects, compressed RLE, crowds in uncompressed RLE, and images
    without annotations (``coco_factory``)."""
    return write_coco_dataset(
        tmp_path_factory.mktemp("mosaic_desc"), num_images=11, size=(70, 90), instances_per_image=(0, 6), seed=33
    )


KW = dict(batch_size=4, output_size=S, num_threads=1, repeat_factor_threshold=None)


def _assert_same(a: list, b: list) -> int:
    """Batches ``a`` and ``b`` equal field for field; the number of instances compared."""
    assert len(a) == len(b) > 0
    compared = 0
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images)
        assert x.position == y.position
        for tx, ty in zip(x.targets, y.targets):
            assert tx.keys() == ty.keys()
            for k in tx:
                assert tx[k].dtype == ty[k].dtype and torch.equal(tx[k], ty[k]), k
            compared += len(tx["labels"])
    return compared


def _cut_by_a_tile_edge(batches: list) -> int:
    """Instances whose box ends on an inner edge of their tile's region (cut by the mosaic)."""
    cut = 0
    for batch in batches:
        for t in batch.targets:
            tiles = t["tiles"][t["tile"]]
            inner = (tiles > 0) & (tiles < S)
            cut += int(((t["boxes"].round().to(torch.int32) == tiles) & inner).any(dim=1).sum())
    return cut


@pytest.mark.parametrize(
    "options",
    [
        dict(seed=0, jitter=(0.5, 1.8), mosaic_prob=1.0, center_range=(0.0, 1.0)),
        dict(seed=5, jitter="none", mosaic_prob=0.5),
        dict(seed=9, jitter=(0.3, 2.0), mosaic_prob=0.6, flip_prob=1.0, paste_by_box=True),
    ],
)
def test_descriptors_equal_host_masks(coco, options) -> None:
    """Same seed: the descriptor loader's batches (images, masks, boxes, areas, labels,
    iscrowd, tiles, positions) are the host-mask loader's, over several batches and two
    epochs, with RLE (compressed and not), crowds, multi-polygon objects, empty images and
    objects cut by tile edges."""
    host_loader = MosaicLoader(*coco, device="cpu", mask_source="host", **KW, **options)
    desc_loader = MosaicLoader(*coco, device="cpu", mask_source="descriptors", **KW, **options)
    assert type(host_loader.source) is MosaicSource and isinstance(desc_loader.source, MosaicDescriptorSource)
    host, desc = [], []
    for _ in range(2):
        host += list(host_loader)
        desc += list(desc_loader)
    assert _assert_same(host, desc) > 20
    assert sum(int(t["iscrowd"].sum()) for b in desc for t in b.targets) > 0
    # every image is tile 0 of one sample per epoch: the empty ones too (test_dataset_has_every_kind)
    assert sum(len(t["image_id"].shape) == 0 for b in desc for t in b.targets) == 2 * 11
    if options["mosaic_prob"] == 1.0:
        assert _cut_by_a_tile_edge(desc) > 0


def test_dataset_has_every_kind(coco) -> None:
    """The fixture holds what the equality test claims to cover."""
    from decal.dali_pipes.coco.reader import CocoDataset

    anns = [a for r in CocoDataset(*coco).records for a in r.annotations]
    segs = [a.segmentation for a in anns]
    assert any(isinstance(s, list) and len(s) > 1 for s in segs)  # multi-polygon
    assert any(isinstance(s, dict) and isinstance(s["counts"], (str, bytes)) for s in segs)  # compressed RLE
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segs)  # uncompressed RLE
    assert any(a.iscrowd for a in anns)
    assert any(not r.annotations for r in CocoDataset(*coco).records)


def test_descriptor_resume_is_exact(coco) -> None:
    options = dict(KW, seed=4, jitter=(0.5, 1.5), mosaic_prob=0.7)
    loader = MosaicLoader(*coco, device="cpu", mask_source="descriptors", **options)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = list(it)
    resumed = MosaicLoader(*coco, device="cpu", mask_source="descriptors", **options)
    resumed.load_state_dict(state)
    _assert_same(rest, list(resumed))


def test_subpixel_descriptors_run(coco) -> None:
    """``subpixel=True`` mosaics: the same images and plan, masks within the tile regions."""
    options = dict(KW, seed=2, jitter=(1.0, 2.0), mosaic_prob=1.0)
    sharp = list(MosaicLoader(*coco, device="cpu", mask_source="descriptors", subpixel=True, **options))
    plain = list(MosaicLoader(*coco, device="cpu", mask_source="descriptors", **options))
    assert len(sharp) == len(plain) > 0
    differ = 0
    for a, b in zip(sharp, plain):
        assert torch.equal(a.images, b.images)
        for ta, tb in zip(a.targets, b.targets):
            assert torch.equal(ta["tiles"], tb["tiles"])
            for mask, tile in zip(ta["masks"], ta["tiles"][ta["tile"]]):
                x0, y0, x1, y1 = tile.tolist()
                inside = torch.zeros_like(mask)
                inside[y0:y1, x0:x1] = 1
                assert not (mask.bool() & ~inside.bool()).any()
            if ta["masks"].shape == tb["masks"].shape:
                differ += int((ta["masks"] != tb["masks"]).sum())
    assert differ > 0


# ------------------------------------------------------------------- defaults and errors


@pytest.fixture
def fake_gpu(monkeypatch) -> None:
    """The builder resolves ``device="gpu"`` to the GPU backend without asking CUDA."""
    monkeypatch.setattr(assembly, "resolve_backend", lambda device: "gpu" if device == "gpu" else "cpu")


@pytest.mark.parametrize(
    "device, option, source_type, step_type",
    [
        ("gpu", None, MosaicDescriptorSource, MosaicDescriptorStep),
        ("gpu", "host", MosaicSource, MosaicStep),
        ("cpu", None, MosaicSource, MosaicStep),
        ("cpu", "descriptors", MosaicDescriptorSource, MosaicDescriptorStep),
    ],
)
def test_mask_source_per_backend(coco, fake_gpu, monkeypatch, device, option, source_type, step_type) -> None:
    """``MosaicLoader(device="gpu")`` ships descriptors and its graph gets the descriptor step
    (no GPU needed: the backend is faked and the graph builder only records its source);
    ``mask_source`` overrides the default on either backend."""
    assert MosaicLoaderConfig().mask_source is None and MosaicLoaderConfig().subpixel is False
    graphs: list[tuple[Any, str]] = []
    monkeypatch.setattr(mosaic_loader, "build_mosaic_pipeline", lambda source, **k: graphs.append((source, k["device"])))
    loader = MosaicLoader(*coco, device=device, mask_source=option, **KW)
    assert loader.backend == device and type(loader.source) is source_type
    loader._build_pipeline()
    assert graphs == [(loader.source, device)]
    assert type(loader.source.step()) is step_type


def test_option_errors(coco) -> None:
    with pytest.raises(OptionError, match="MosaicLoader: option 'subpixel' needs mask_source='descriptors'"):
        MosaicLoader(*coco, device="cpu", subpixel=True, **KW)
    with pytest.raises(OptionError, match="option 'mask_source' must be one of host, descriptors"):
        MosaicLoader(*coco, device="cpu", mask_source="gpu", **KW)


@pytest.mark.gpu
def test_gpu_descriptors_equal_cpu_host_masks(coco) -> None:
    """On a GPU: the default (descriptor) mosaic's masks, boxes, areas, labels, iscrowd and
    tiles equal the CPU host-mask mosaic's (the tables follow DALI's CPU resize rule, the
    kernels pycocotools); its images equal the GPU host-mask mosaic's (the same image graph;
    the CPU images differ by the decoders' rounding)."""
    options = dict(KW, seed=3, jitter=(0.5, 1.8), mosaic_prob=0.7)
    gpu = list(MosaicLoader(*coco, device="gpu", **options))
    gpu_host = list(MosaicLoader(*coco, device="gpu", mask_source="host", **options))
    cpu_host = list(MosaicLoader(*coco, device="cpu", mask_source="host", **options))
    assert len(gpu) == len(gpu_host) == len(cpu_host) > 0
    for a, b, c in zip(gpu, gpu_host, cpu_host):
        assert a.images.is_cuda and a.targets[0]["masks"].is_cuda
        assert torch.equal(a.images, b.images)
        for ta, tc in zip(a.targets, c.targets):
            for k in ("masks", "boxes", "area", "labels", "iscrowd", "tile", "tiles", "tile_image_ids", "image_id"):
                assert torch.equal(ta[k].cpu(), tc[k].cpu()), k
