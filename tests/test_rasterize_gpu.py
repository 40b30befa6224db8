"""GPU parity of the GPU mask path and the fused Copy-Paste step: every new CUDA kernel against
its NumPy twin on fresh random batches (a new seed each run, printed for replay), outputs
poisoned (``DECAL_POISON=1``: an element no kernel writes cannot pass), and the edge cases:
zero instances, empty masks, objects on the border, full occlusion, batch size 1, output sizes
that are not multiples of the 32-column tile, unaligned buffers. Then the whole GPU pipeline
against the CPU pipeline under the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decal.kernels.composite_occlusion import composite_occlusion_cupy, composite_occlusion_numpy
from decal.kernels.copy_paste import CopyPasteParams
from decal.kernels.copy_paste_fused import copy_paste_batch_fused
from decal.kernels.gather_masks import gather_masks_cupy, gather_masks_numpy
from decal.kernels.instance_masks import build_descriptors, rasterize_instances
from decal.kernels.mask_geometry import sample_geometry
from decal.kernels.rle_decode import box_toggles

from raster_factory import FIELDS, random_batch, random_case, random_polygon, random_rle

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("poison")]  # poison and rng: tests/conftest.py

cp = pytest.importorskip("cupy")

SIDES = [1, 31, 32, 33, 97, 256]


def unaligned(x: np.ndarray):
    buf = cp.zeros(x.size + 1, dtype=x.dtype)
    view = buf[1:].reshape(x.shape)
    view[...] = cp.asarray(x)
    return view


def assert_raster_parity(desc) -> None:
    ref = rasterize_instances(desc)
    got = rasterize_instances(desc.to_device())
    cp.cuda.get_current_stream().synchronize()
    for name, g, r in zip(("masks", "areas", "boxes"), got, ref):
        assert isinstance(g, cp.ndarray)
        np.testing.assert_array_equal(g.get(), r, err_msg=name)


# --------------------------------------------------------------------------- rasterisers


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("subpixel", [False, True])
@pytest.mark.parametrize("batch", [1, 5])
def test_rasterize_parity(rng, side, subpixel, batch) -> None:
    """Polygons (convex, grid-snapped, degenerate, slivers, border objects, far outside,
    multi-part) and RLE instances through random geometries; sample 0 has no instance."""
    samples, geometries = random_batch(rng, batch, side, max_instances=6)
    assert_raster_parity(build_descriptors(samples, geometries, subpixel=subpixel)[0])


def test_rasterize_zero_instances_and_empty_masks(rng) -> None:
    g = sample_geometry(40, 50, 1.0, 0.3, 0.6, 1, 45)
    desc, _ = build_descriptors([[], []], [g, g])
    masks, areas, boxes = rasterize_instances(desc.to_device())
    assert masks.shape == (0, 45, 45) and areas.shape == (0,) and boxes.shape == (0, 4)
    # instances that land entirely in the padding or outside the crop: empty masks
    far = [("poly", [np.array([[-90.0, -90.0], [-80.0, -90.0], [-85.0, -80.0]])]), ("rle", np.zeros(0, np.int32))]
    desc, _ = build_descriptors([far, far], [g, sample_geometry(40, 50, 0.1, 0.0, 0.0, 0, 45)])
    assert_raster_parity(desc)
    masks, areas, _ = rasterize_instances(desc.to_device())
    assert int(areas.sum()) == 0 and int(masks.sum()) == 0


@pytest.mark.parametrize("side", [1024, 1500])
def test_rasterize_large_outputs(rng, side) -> None:
    """LSJ sizes (shared memory per block: 8 bytes per output row)."""
    samples, geometries = [], []
    for _ in range(3):
        h, w = 480, 640
        geometries.append(sample_geometry(h, w, rng.uniform(0.1, 2.0), rng.uniform(), rng.uniform(), 1, side))
        samples.append([("poly", [random_polygon(rng, h, w, 0)]) for _ in range(4)]
                       + [("rle", random_rle(rng, h, w)), ("rle", box_toggles(0, 0, w, h, h))])
    assert_raster_parity(build_descriptors(samples, geometries)[0])


def test_rasterize_on_a_stream(rng) -> None:
    samples, geometries = random_batch(rng, 4, 61)
    desc, _ = build_descriptors(samples, geometries)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        got = rasterize_instances(desc.to_device())
    stream.synchronize()
    for g, r in zip(got, rasterize_instances(desc)):
        np.testing.assert_array_equal(g.get(), r)


# --------------------------------------------------------------------------- fused step


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 37, 53), (3, 37, 53), (2, 64, 96), (4, 31, 33), (2, 300, 301)])
@pytest.mark.parametrize("alpha_kind", ["hard_same", "hard", "soft"])
def test_composite_occlusion_parity(rng, shape, alpha_kind) -> None:
    b, h, w = shape
    images, masks, offsets, _, _ = random_case(rng, b, h, w)
    partner = rng.integers(0, b, size=b).astype(np.int64)
    hard = (rng.random((b, h, w)) < rng.uniform(0, 0.6)).astype(np.uint8)
    hard[0] = 1  # full occlusion of sample 0's instances
    alpha = {"hard_same": hard, "hard": (rng.random((b, h, w)) < 0.5).astype(np.uint8),
             "soft": rng.random((b, h, w)).astype(np.float32)}[alpha_kind]
    dev_hard = cp.asarray(hard)
    dev_alpha = dev_hard if alpha_kind == "hard_same" else cp.asarray(alpha)
    out, areas, boxes = composite_occlusion_cupy(cp.asarray(images), cp.asarray(images), partner, dev_alpha,
                                                 dev_hard, cp.asarray(masks), offsets)
    ref = composite_occlusion_numpy(images, images, partner, alpha, hard, masks, offsets)
    for g, r in zip((out, areas, boxes), ref):
        np.testing.assert_array_equal(g.get(), r)
    first = slice(int(offsets[0]), int(offsets[1]))
    assert not areas.get()[first].any()


def test_composite_occlusion_unaligned(rng) -> None:
    images, masks, offsets, _, _ = random_case(rng, 3, 20, 24)
    hard = (rng.random((3, 20, 24)) < 0.3).astype(np.uint8)
    partner = np.array([2, 0, 1])
    got = composite_occlusion_cupy(cp.asarray(images), cp.asarray(images), partner, unaligned(hard), unaligned(hard),
                                   unaligned(masks) if masks.size else cp.asarray(masks), offsets)
    ref = composite_occlusion_numpy(images, images, partner, hard, hard, masks, offsets)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g.get(), r)


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 96), (300, 301)])
def test_gather_masks_parity(rng, shape) -> None:
    h, w = shape
    masks = (rng.random((7, h, w)) < 0.5).astype(np.uint8) * rng.integers(1, 3, (7, 1, 1)).astype(np.uint8)
    hard = (rng.random((3, h, w)) < 0.5).astype(np.uint8)
    n = int(rng.integers(0, 12))
    src = rng.integers(0, 7, n).astype(np.int64)
    clear = rng.integers(-1, 3, n).astype(np.int64)
    for m_dev, h_dev in ((cp.asarray(masks), cp.asarray(hard)), (unaligned(masks), unaligned(hard))):
        out = gather_masks_cupy(m_dev, h_dev, src, clear)
        np.testing.assert_array_equal(out.get(), gather_masks_numpy(masks, hard, src, clear))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_copy_paste_fused_device_vs_twin(rng, batch, sigma) -> None:
    """Rasterise + fused copy-paste on the device vs the same on the host, same draws."""
    samples, geometries = random_batch(rng, batch, 77, max_instances=8)
    desc, _ = build_descriptors(samples, geometries)
    m = desc.num_instances
    counts = [len(s) for s in samples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    images = rng.integers(0, 256, (batch, 77, 77, 3), dtype=np.uint8)
    labels, crowd = rng.integers(1, 5, m), rng.random(m) < 0.1
    params = CopyPasteParams(max_num_pasted=int(rng.integers(1, 6)), blend_sigma=sigma)
    seed = int(rng.integers(2**31))
    host_masks, host_areas, host_boxes = rasterize_instances(desc)
    ref = copy_paste_batch_fused(images, host_masks, host_areas, host_boxes, offsets, labels, crowd, params,
                                 np.random.default_rng(seed))
    dm, da, db = rasterize_instances(desc.to_device())
    got = copy_paste_batch_fused(cp.asarray(images), dm, da, db, offsets, labels, crowd, params,
                                 np.random.default_rng(seed))
    for f in FIELDS:
        g, r = getattr(got, f), getattr(ref, f)
        g = g.get() if isinstance(g, cp.ndarray) else g
        if f == "images" and sigma > 0:  # blurred alpha: float32 within 1e-5, pixels within 1
            assert np.abs(g.astype(int) - r.astype(int)).max() <= 1
        else:
            np.testing.assert_array_equal(g, r, err_msg=f)


# --------------------------------------------------------------------------- the pipelines


def _png_copy(root: Path, json_path: Path, image_dir: Path) -> tuple[Path, Path]:
    """The dataset with its JPEGs re-encoded losslessly as PNG (decoders then agree exactly)."""
    import json

    from PIL import Image

    coco = json.loads(Path(json_path).read_text())
    out_dir = root / "png"
    out_dir.mkdir(parents=True, exist_ok=True)
    for img in coco["images"]:
        name = Path(img["file_name"]).with_suffix(".png").name
        Image.open(Path(image_dir) / img["file_name"]).save(out_dir / name)
        img["file_name"] = name
    out_json = root / "png.json"
    out_json.write_text(json.dumps(coco))
    return out_json, out_dir


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_gpu_pipeline_equals_cpu_pipeline(tmp_path, fmt, batch_size) -> None:
    """Same seed: the GPU-mask pipeline on the GPU and the default pipeline on DALI's CPU
    backend make the same selection and geometry (masks, boxes, areas, labels and pasted flags
    identical); pixels within 1 LSB after blending (PNG: decoders agree exactly; JPEG: nvJPEG
    and libjpeg-turbo may differ, reported)."""
    import torch

    from coco_factory import write_coco_dataset
    from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    coco = write_coco_dataset(tmp_path, num_images=9, size=(96, 128), instances_per_image=(0, 6), seed=4)
    if fmt == "png":
        coco = _png_copy(tmp_path, *coco)
    kw = dict(batch_size=batch_size, output_size=160, seed=9, jitter="lsj", num_threads=2)
    cpu = list(CopyPasteLoader(*coco, device="cpu", **kw))
    gpu = list(GpuMaskCopyPasteLoader(*coco, device="gpu", **kw))
    assert len(cpu) == len(gpu) > 0
    worst = 0
    for a, b in zip(cpu, gpu):
        assert b.images.is_cuda
        diff = (a.images.int() - b.images.cpu().int()).abs()
        worst = max(worst, int(diff.max()))
        for ta, tb in zip(a.targets, b.targets):
            for k in ("masks", "boxes", "area", "labels", "iscrowd", "pasted", "image_id"):
                assert torch.equal(ta[k], tb[k].cpu()), k
    print(f"{fmt}: largest pixel difference GPU vs CPU pipeline: {worst}")
    if fmt == "png":
        assert worst <= 1
