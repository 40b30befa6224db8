"""The GPU mask path on the CPU: DALI's geometry reproduced exactly, the rasteriser's algorithm
(a NumPy port of the CUDA kernel) against pycocotools, and the whole GPU-mask pipeline against
the default pipeline on DALI's CPU backend. No GPU needed; the CUDA ports are compared with
these twins in ``test_rasterize_gpu.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types

from decal.dali_pipes.copy_paste.gpu_masks import record_instances
from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.kernels.instance_masks import (
    MaskDescriptors,
    build_descriptors,
    geometry_table,
    rasterize_instances,
)
from decal.kernels.mask_geometry import (
    apply_geometry,
    crop_anchor,
    resize_longer,
    sample_geometry,
    source_columns,
    source_rows,
)
from decal.kernels.rasterize_polygons import downsample_vertices, upsample_vertices

from coco_factory import write_coco_dataset
from raster_factory import emulate, random_batch, random_polygon

# --------------------------------------------------------------------------- geometry vs DALI


def _coordinate_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx & 255, xx >> 8, yy & 255, yy >> 8, np.ones_like(xx)], -1).astype(np.uint8)


def test_geometry_tables_equal_dali_cpu_resize_crop_flip() -> None:
    """Each pixel carries its own coordinates through DALI's NN resize, crop (pad) and flip,
    driven exactly as the pipeline drives them; the tables must name the same source pixel."""
    rng = np.random.default_rng(1234)
    side, batch = 67, 40
    cases = [(1, 1), (1, 300), (300, 1), (3, 4), (5, 8)] + [
        (int(rng.integers(1, 700)), int(rng.integers(1, 700))) for _ in range(batch - 5)
    ]
    draws = [(np.float32(rng.uniform(0.1, 2.0)), np.float32(rng.uniform()), np.float32(rng.uniform()),
              np.int32(rng.integers(0, 2))) for _ in cases]
    draws[0] = (np.float32(0.5), np.float32(0.5), np.float32(0.5), np.int32(1))  # ties

    def source():
        cols = [[], [], [], [], []]
        for (h, w), d in zip(cases, draws):
            for k, v in enumerate((_coordinate_image(h, w), *d)):
                cols[k].append(v)
        return cols

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None)
    def pipe():
        t, scale, cx, cy, flip = fn.external_source(source=source, num_outputs=5, batch=True, layout=["HWC", "", "", "", ""])
        t = fn.resize(t, resize_longer=scale * float(side), interp_type=types.INTERP_NN, antialias=False)
        t = fn.crop(t, crop=(side, side), crop_pos_x=cx, crop_pos_y=cy, out_of_bounds_policy="pad", fill_values=0.0)
        return fn.flip(t, horizontal=flip)

    p = pipe()
    p.build()
    (out,) = p.run()
    for i, ((h, w), (scale, cx, cy, flip)) in enumerate(zip(cases, draws)):
        g = sample_geometry(h, w, scale, cx, cy, flip, side)
        expected = apply_geometry(np.moveaxis(_coordinate_image(h, w), 2, 0), source_rows(g), source_columns(g))
        np.testing.assert_array_equal(np.moveaxis(np.array(out[i]), 2, 0), expected, err_msg=f"sample {i} {(h, w)}")


def test_resize_size_and_anchor_rounding() -> None:
    # rounded half away from zero (DALI round_int / roundf), checked against the operators
    assert resize_longer(5, 8, 4.0)[0].size == 3  # 2.5 -> 3
    assert resize_longer(3, 4, 2.0)[0].size == 2  # 1.5 -> 2
    assert resize_longer(9, 4, 2.0)[1].size == 1
    assert [crop_anchor(0.5, n, 10) for n in (13, 15, 7, 5, 11, 9)] == [2, 3, -2, -3, 1, -1]
    rows, cols = resize_longer(480, 640, 1024.0)
    assert (rows.size, cols.size) == (768, 1024) and cols.scale == pytest.approx(0.625)


def test_vertex_snapping_round_trips() -> None:
    rng = np.random.default_rng(7)
    xy = np.concatenate([rng.uniform(-500, 500, (2000, 2)), rng.integers(-50, 50, (200, 2)) / 10])
    up = upsample_vertices(xy)
    np.testing.assert_array_equal(upsample_vertices(downsample_vertices(up)), up)
    with pytest.raises(ValueError):
        upsample_vertices([[np.nan, 0.0]])


# --------------------------------------------------------------------------- the algorithm


@pytest.mark.parametrize("subpixel", [False, True])
@pytest.mark.parametrize("side", [1, 37, 64])
def test_kernel_algorithm_equals_pycocotools_then_geometry(side: int, subpixel: bool) -> None:
    """Polygons (all shapes above, several per object) and RLE, exact to the pixel."""
    rng = np.random.default_rng(100 + side + subpixel)
    for _ in range(6):
        samples, geometries = random_batch(rng, 4, side)
        desc, _ = build_descriptors(samples, geometries, subpixel=subpixel)
        ref = rasterize_instances(desc)  # the twin: pycocotools at the source size + geometry
        got = emulate(desc)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)


def _near_boundary(mask: np.ndarray, reach: int) -> np.ndarray:
    """Pixels within ``reach`` pixels (8-neighbourhood) of a change of value of ``mask`` (outside = 0)."""
    pad = np.pad(mask, 1)  # the image border counts as an edge (NN clamps, subpixel does not)
    h, w = mask.shape
    shifts = [pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    near = np.any([s != mask for s in shifts], axis=0)
    for _ in range(reach - 1):
        p = np.pad(near, 1)
        near = np.any([p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return near


def subpixel_disagreement(samples, geometries) -> tuple[int, int, int]:
    """(pixels that differ, of which near a source edge, object pixels) between the subpixel
    and the exact rasterisation of polygon-only samples. "Near an edge": the output pixel shows
    a source pixel within one source pixel of the pycocotools raster's boundary, i.e. where the
    output pixel's centre and its source pixel's centre can fall on two sides of the polygon."""
    import pycocotools.mask as mask_utils

    exact = rasterize_instances(build_descriptors(samples, geometries)[0])[0].astype(bool)
    sub = rasterize_instances(build_descriptors(samples, geometries, subpixel=True)[0])[0].astype(bool)
    differ = near = 0
    row = 0
    for insts, g in zip(samples, geometries):
        rows, cols = source_rows(g), source_columns(g)
        for _, polys in insts:
            flat = [np.asarray(p, np.float64).ravel().tolist() for p in polys]
            src = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, g.src_h, g.src_w)))
            edge = apply_geometry(_near_boundary(src, 2)[None], rows, cols)[0]
            mismatch = exact[row] != sub[row]
            differ += int(mismatch.sum())
            near += int((mismatch & edge).sum())
            row += 1
    return differ, near, int((exact | sub).sum())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs NumPy 2
def test_subpixel_mode_differs_on_edge_pixels_only() -> None:
    """Rasterising the mapped polygon at the output resolution vs pycocotools-then-NN: every
    disagreement lies on an edge; the rate is reported (see bench/RESULTS.md)."""
    rng = np.random.default_rng(5)
    differ = near = area = 0
    for _ in range(6):
        _, geometries = random_batch(rng, 4, 96, rle=False)
        samples = [[("poly", [random_polygon(rng, g.src_h, g.src_w, 0)]) for _ in range(3)] for g in geometries]
        d, n, a = subpixel_disagreement(samples, geometries)
        differ, near, area = differ + d, near + n, area + a
    assert differ == near, "a pixel away from every edge disagrees"
    assert area and differ / area < 0.25  # tiny sources upscaled ~100x: whole NN blocks
    print(f"subpixel vs exact: {differ} of {area} object pixels differ ({100 * differ / area:.2f} %)")


def test_descriptor_validation() -> None:
    g = sample_geometry(10, 10, 1.0, 0.0, 0.0, 0, 8)
    with pytest.raises(ValueError, match="3 vertices"):
        build_descriptors([[("poly", [[[0, 0], [1, 1]]])]], [g])
    with pytest.raises(ValueError, match="ascending"):
        build_descriptors([[("rle", np.array([5, 3], np.int32))]], [g])
    with pytest.raises(ValueError, match="kind"):
        build_descriptors([[("mesh", None)]], [g])
    with pytest.raises(ValueError, match="contiguous"):
        geometry_table(np.array([0, -1, 1]), np.array([0]), 2, 1)
    desc, bounds = build_descriptors([[], []], [g, g])
    masks, areas, boxes = rasterize_instances(desc)
    assert masks.shape == (0, 8, 8) and areas.shape == (0,) and boxes.shape == (0, 4)
    assert [len(p["tables"]) for p in desc.split(bounds)] == [1, 1]


def test_split_and_concatenate_round_trip() -> None:
    rng = np.random.default_rng(3)
    samples, geometries = random_batch(rng, 5, 24)
    desc, bounds = build_descriptors(samples, geometries, subpixel=True)
    again = MaskDescriptors.concatenate(desc.split(bounds), 24, 24, desc.num_instances)
    for a, b in zip(rasterize_instances(desc), rasterize_instances(again)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(
        tmp_path_factory.mktemp("coco_raster"), num_images=9, size=(90, 130), instances_per_image=(0, 6), seed=11
    )


@pytest.mark.parametrize(
    "options",
    [dict(jitter="lsj"), dict(jitter="ssj", blend_sigma=1.5), dict(copy_paste=False), dict(paste_by_box=True), dict(batch_size=1)],
    ids=["lsj", "ssj-blur", "no-paste", "by-box", "b1"],
)
def test_gpu_mask_pipeline_equals_default_pipeline_on_cpu(coco, options) -> None:
    """Same seed, DALI CPU backend: the descriptor path gives the very same batches (masks,
    boxes, areas, labels, pasted flags and pixels) as rasterise-then-resize."""
    kw = dict(batch_size=4, output_size=72, device="cpu", num_threads=1, seed=5, jitter="lsj")
    kw.update(options)
    a = list(CopyPasteLoader(*coco, **kw))
    b = list(GpuMaskCopyPasteLoader(*coco, **kw))
    assert len(a) == len(b) > 0
    instances = 0
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images)
        for tx, ty in zip(x.targets, y.targets):
            assert tx.keys() == ty.keys()
            for k in tx:
                assert tx[k].dtype == ty[k].dtype and torch.equal(tx[k], ty[k]), k
            instances += len(tx["labels"])
    assert instances > 0


def test_gpu_mask_loader_subpixel_and_resume(coco) -> None:
    kw = dict(batch_size=3, output_size=64, device="cpu", num_threads=1, seed=2)
    loader = GpuMaskCopyPasteLoader(*coco, subpixel=True, **kw)
    first = next(iter(loader))
    state = loader.state_dict()
    rest = list(loader)
    again = GpuMaskCopyPasteLoader(*coco, subpixel=True, **kw)
    again.load_state_dict(state)
    resumed = list(again)
    assert len(rest) == len(resumed)
    for x, y in zip(rest, resumed):
        assert torch.equal(x.images, y.images)
        assert all(torch.equal(tx["masks"], ty["masks"]) for tx, ty in zip(x.targets, y.targets))
    assert first.images.shape == (3, 3, 64, 64)


def test_record_instances_kinds(coco) -> None:
    from decal.dali_pipes.coco.reader import CocoDataset, rasterize_masks

    ds = CocoDataset(*coco)
    kinds = set()
    for i in range(len(ds)):
        rec = ds[i]
        insts = record_instances(rec)
        kinds |= {k for k, _ in insts}
        g = sample_geometry(rec.height, rec.width, 1.0, 0.0, 0.0, 0, max(rec.height, rec.width))
        got = rasterize_instances(build_descriptors([insts], [g])[0])[0]
        full = np.moveaxis(rasterize_masks(rec), 2, 0)
        np.testing.assert_array_equal(got, apply_geometry(full, source_rows(g), source_columns(g)))
    assert kinds == {"poly", "rle"}
