"""Balanced Mosaic: the plan (quadrants, RFS draws), the DALI pipeline on real JPEGs against
the NumPy twin, geometry of content and masks, zero-instance images, prob 0, determinism,
resume, preview and GPU parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.mosaic.twin import (
    compose_images_numpy,
    crop_regions,
    draw_mosaic_plan,
    quadrant_regions,
    resized_size,
)
from decal.dali_pipes.mosaic.loader import MosaicLoader
from decal.dali_pipes.mosaic.pipeline import MosaicSource, build_mosaic_pipeline
from decal.dali_pipes.preview.mosaic import preview_mosaic
from decal.dali_pipes.core.samplers import UniformSampler
from decal.dali_pipes.core.scale_jitter import ScaleJitter

from coco_factory import write_coco_dataset, write_json
from resume_check import stop_and_resume

S = 64

# ----------------------------------------------------------------------------- the plan


def test_quadrant_regions_touch_the_centre_and_stay_inside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        sizes = rng.integers(1, 50, size=(4, 2))
        cx, cy = (int(v) for v in rng.integers(S // 4, 3 * S // 4 + 1, 2))
        r = quadrant_regions(sizes, (cx, cy), S)
        in_y, in_x, out_y, out_x, h, w = r.T
        assert np.all(h >= 1) and np.all(w >= 1)
        assert np.all(out_y >= 0) and np.all(out_x >= 0) and np.all(out_y + h <= S) and np.all(out_x + w <= S)
        assert np.all(in_y >= 0) and np.all(in_x >= 0)
        assert np.all(in_y + h <= sizes[:, 0]) and np.all(in_x + w <= sizes[:, 1])
        # corners on the centre: 0 bottom-right, 1 bottom-left, 2 top-right, 3 top-left
        assert out_x[0] + w[0] == cx and out_y[0] + h[0] == cy
        assert out_x[1] == cx and out_y[1] + h[1] == cy
        assert out_x[2] + w[2] == cx and out_y[2] == cy
        assert out_x[3] == cx and out_y[3] == cy
        # the part shown is the tile's corner next to the centre
        assert in_x[0] + w[0] == sizes[0, 1] and in_y[0] + h[0] == sizes[0, 0]
        assert in_x[1] == 0 and in_y[1] + h[1] == sizes[1, 0]
        assert in_x[2] + w[2] == sizes[2, 1] and in_y[2] == 0
        assert in_x[3] == 0 and in_y[3] == 0
        # a tile is only cut by the canvas: its whole extent on that side when it fits
        assert w[0] == min(sizes[0, 1], cx) and h[3] == min(sizes[3, 0], S - cy)


def test_crop_regions_match_a_window() -> None:
    for size, pos in [((40, 80), (0.3, 0.9)), ((100, 70), (1.0, 0.0)), ((64, 64), (0.5, 0.5))]:
        start, (in_y, in_x, out_y, out_x, h, w) = crop_regions(size, pos, S)
        assert in_y - out_y == start[0] and in_x - out_x == start[1]
        assert 0 <= out_y and out_y + h <= S and 0 <= in_y and in_y + h <= size[0]
        assert h == min(size[0], S) and w == min(size[1], S)


def test_plan_draws_follow_weights_and_prob() -> None:
    weights = np.array([1.0, 1.0, 2.0, 6.0])
    counts = np.zeros(4)
    mosaics = 0
    for k in range(300):
        plan = draw_mosaic_plan(
            np.random.default_rng([k, 0]), np.random.default_rng([k, 2]), 8, prob=0.5, jitter=(1.0, 1.0),
            flip_prob=0.5, center_range=(0.25, 0.75), output_size=S, item_weights=weights,
        )  # fmt: skip
        mosaics += int(plan.mosaic.sum())
        counts += np.bincount(plan.extra[plan.mosaic].ravel(), minlength=4)
        assert np.all(plan.extra[~plan.mosaic] == -1)
        centre = plan.centre[plan.mosaic]
        assert np.all((centre >= S // 4) & (centre <= 3 * S // 4))
    assert abs(mosaics / 2400 - 0.5) < 0.04
    np.testing.assert_allclose(counts / counts.sum(), weights / weights.sum(), atol=0.02)
    assert resized_size(np.array([30]), np.array([60]), np.array([32.0])) == (16, 32)


# ----------------------------------------------------------------------------- data


def solid_dataset(root: Path, sizes, boxes) -> tuple[Path, Path]:
    """One image per entry of ``sizes`` (h, w): a solid background colour, and (when its box
    is not None) one rectangle instance of another solid colour, category = image index + 1."""
    images, anns = [], []
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    for i, ((h, w), box) in enumerate(zip(sizes, boxes)):
        pixels = np.empty((h, w, 3), np.uint8)
        pixels[:] = background(i)
        name = f"solid_{i}.png"
        if box is not None:
            x0, y0, x1, y1 = box
            pixels[y0:y1, x0:x1] = foreground(i)
            anns.append({
                "id": len(anns) + 1, "image_id": i + 1, "category_id": i + 1, "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
            })  # fmt: skip
        Image.fromarray(pixels).save(image_dir / name)  # PNG: exact colours after decoding
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    cats = [{"id": i + 1, "name": f"c{i + 1}"} for i in range(len(sizes))]
    return write_json(root / "solid.json", {"images": images, "annotations": anns, "categories": cats}), image_dir


PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200), (250, 250, 250)]


def background(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def foreground(i: int) -> tuple[int, int, int]:
    return tuple(255 - c for c in PALETTE[i % len(PALETTE)])


SIZES = [(48, 64), (64, 40), (50, 50), (30, 70), (72, 48), (40, 40)]
BOXES = [(10, 8, 40, 30), (5, 20, 30, 60), None, (20, 5, 60, 25), (8, 10, 40, 60), (0, 0, 40, 40)]


@pytest.fixture(scope="module")
def solid(tmp_path_factory) -> tuple[Path, Path]:
    return solid_dataset(tmp_path_factory.mktemp("solid"), SIZES, BOXES)


def loader_on(paths, **options) -> MosaicLoader:
    defaults = dict(batch_size=3, output_size=S, device="cpu", num_threads=1, seed=0)
    return MosaicLoader(*paths, **{**defaults, **options})


def erode(mask: np.ndarray, r: int = 2) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        p = np.pad(out, 1)
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


def dilate(mask: np.ndarray, r: int = 2) -> np.ndarray:
    return ~erode(~mask, r)


def check_boxes_tight(target) -> None:
    n = len(target["labels"])
    assert target["masks"].shape == (n, S, S) and target["boxes"].shape == (n, 4)
    if n:
        masks = target["masks"].numpy()
        rle = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        x, y, w, h = mask_utils.toBbox(rle).T
        np.testing.assert_array_equal(target["boxes"].numpy(), np.stack([x, y, x + w, y + h], 1))
        np.testing.assert_array_equal(target["area"].numpy(), mask_utils.area(rle))
        assert (target["area"] > 0).all()


# ----------------------------------------------------------------------------- pipeline


def test_each_quadrant_holds_its_image_and_its_masks(solid) -> None:
    """Every tile region shows its image's colours (background, and the instance's colour
    under the instance's mask); gray elsewhere; instances stay inside their tile and carry
    their image's category; boxes are tight."""
    ids_to_index = {i + 1: i for i in range(len(SIZES))}
    seen_mosaic = seen_flip = 0
    loader = loader_on(solid, mosaic_prob=1.0, jitter=(0.6, 1.4), repeat_factor_threshold=None)
    for _ in range(2):
        for batch in loader:
            for image, t in zip(batch.images, batch.targets):
                check_boxes_tight(t)
                pixels = image.permute(1, 2, 0).numpy().astype(int)
                tiles, tile_ids = t["tiles"].numpy(), t["tile_image_ids"].numpy()
                assert (tile_ids >= 1).all()
                seen_mosaic += 1
                covered = np.zeros((S, S), bool)
                masks = t["masks"].numpy().astype(bool)
                for k in range(4):
                    x0, y0, x1, y1 = tiles[k]
                    region = np.zeros((S, S), bool)
                    region[y0:y1, x0:x1] = True
                    covered |= region
                    index = ids_to_index[int(tile_ids[k])]
                    mine = t["tile"].numpy() == k
                    for m, label in zip(masks[mine], t["labels"].numpy()[mine]):
                        assert label == index + 1
                        assert not (m & ~region).any()  # the instance stays in its tile
                        inner = erode(m)
                        if inner.any():
                            assert np.abs(pixels[inner] - foreground(index)).max() <= 6
                    # background: inside the tile, 2 px away from its edge and from the instance
                    # (the linear resize blends colours across about a pixel)
                    others = erode(region) & ~dilate(masks[mine].any(axis=0))
                    if others.any():
                        assert np.abs(pixels[others] - background(index)).max() <= 6
                assert (pixels[erode(~covered, 1)] == 114).all()
                # the four regions meet at the centre: tile 0 and tile 3 share one corner
                corner0 = {(tiles[0, 0], tiles[0, 3]), (tiles[0, 2], tiles[0, 3])}
                assert {(tiles[3, 0], tiles[3, 1]), (tiles[3, 2], tiles[3, 1])} & corner0
                seen_flip += int(tiles[0, 0] > tiles[1, 0])  # flipped: tile 0 on the right
    assert seen_mosaic == 12 and 0 < seen_flip < 12


def test_dali_composition_equals_the_numpy_twin(solid) -> None:
    dataset = CocoDataset(*solid)
    source = MosaicSource(
        dataset, UniformSampler(len(dataset), seed=1), output_size=S, prob=0.5, batch_size=6, seed=1,
        jitter=ScaleJitter(0.5, 1.6), flip_prob=0.5,
    )  # fmt: skip
    pipe = build_mosaic_pipeline(source, device="cpu", num_threads=1, return_tiles=True)
    pipe.build()
    kinds = set()
    for _ in range(3):  # three epochs of one batch
        out = pipe.run()
        with pytest.raises(StopIteration):
            pipe.run()
        pipe.reset()
        images, tiles, (start0, regions, flips) = out[0], out[11:15], out[15:18]
        for i in range(len(images)):
            twin = compose_images_numpy(
                [np.array(t[i]) for t in tiles], np.array(start0[i]), np.array(regions[i]), S, 114, int(np.array(flips[i]))
            )
            np.testing.assert_array_equal(np.array(images[i]).transpose(1, 2, 0), twin)
            for k, t in enumerate(tiles):  # DALI resized to exactly the planned size
                r = np.array(regions[i])[k]
                assert r[0] + r[4] <= np.array(t[i]).shape[0] and r[1] + r[5] <= np.array(t[i]).shape[1]
            kinds.add(int(np.array(regions[i])[1, 4] > 0))
    assert kinds == {0, 1}  # both mosaics and single images were checked


def test_composition_twin_matches_dali_cpu_slice_and_multi_paste() -> None:
    """An anchor outside decal's code: DALI's CPU ``fn.slice`` (gray padding) and
    ``fn.multi_paste`` compose the same canvas as :func:`compose_images_numpy`, on random
    tiles and plans, mosaics and single images. (The loader composes in its step because
    DALI 2.4's GPU ``multi_paste`` returned wrong canvases for these inputs on an H200.)"""
    from nvidia.dali import fn, pipeline_def

    rng = np.random.default_rng(7)
    cases = []
    for i in range(12):
        sizes = rng.integers(8, 90, size=(4, 2))
        tiles = [rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8) for h, w in sizes]
        if i % 3:
            regions = quadrant_regions(sizes, tuple(int(v) for v in rng.integers(S // 4, 3 * S // 4 + 1, 2)), S)
        else:  # a single image: tile 0's window, the other tiles unused (8×8, empty regions)
            regions = np.zeros((4, 6), np.int64)
            _, regions[0] = crop_regions((int(sizes[0, 0]), int(sizes[0, 1])), tuple(rng.random(2)), S)
            tiles[1:] = [np.full((8, 8, 3), 114, np.uint8)] * 3
        cases.append((tiles, (regions[0, :2] - regions[0, 2:4]).astype(np.float32), regions))
    anchors_in = [np.concatenate([[[0, 0]], r[1:, 0:2]]).astype(np.int32) for _, _, r in cases]
    anchors_out = [np.concatenate([[[0, 0]], r[1:, 2:4]]).astype(np.int32) for _, _, r in cases]
    shapes = [np.concatenate([[[S, S]], r[1:, 4:6]]).astype(np.int32) for _, _, r in cases]

    @pipeline_def(batch_size=len(cases), num_threads=1, device_id=None)
    def reference():
        def column(values, layout=None):  # DALI passes an argument to a callable that takes one
            return fn.external_source(source=lambda: values, batch=True, layout=layout)

        tiles = [column([c[0][k] for c in cases], "HWC") for k in range(4)]
        canvas = fn.slice(
            tiles[0], column([c[1] for c in cases]), [float(S), float(S)], axis_names="HW", out_of_bounds_policy="pad",
            fill_values=114.0, normalized_anchor=False, normalized_shape=False,
        )  # fmt: skip
        return fn.multi_paste(
            canvas, *tiles[1:], in_anchors=column(anchors_in), out_anchors=column(anchors_out),
            shapes=column(shapes), output_size=[S, S],
        )  # fmt: skip

    pipe = reference()
    pipe.build()
    (out,) = pipe.run()
    for i, (tiles, start0, regions) in enumerate(cases):
        np.testing.assert_array_equal(compose_images_numpy(tiles, start0, regions, S, 114, 0), np.array(out[i]))


def test_zero_instance_images(tmp_path: Path) -> None:
    empty = solid_dataset(tmp_path / "empty", SIZES[:4], [None] * 4)
    for batch in loader_on(empty, mosaic_prob=0.5):
        for t in batch.targets:
            assert t["masks"].shape == (0, S, S) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    coco = write_coco_dataset(tmp_path / "coco", num_images=5, instances_per_image=(0, 3), seed=2)
    loader = loader_on(coco, mosaic_prob=0.5, batch_size=5, jitter="lsj")
    for _ in range(2):
        for batch in loader:
            for t in batch.targets:
                check_boxes_tight(t)


def test_prob_zero_is_the_identity(tmp_path: Path) -> None:
    """Images of S×S, no jitter, no flip, prob 0: each output is its own image, unchanged,
    with its rasterised masks."""
    sizes = [(S, S)] * 4
    boxes = [(3, 4, 30, 50), None, (0, 0, S, 20), (40, 40, S, S)]
    json_path, image_dir = solid_dataset(tmp_path, sizes, boxes)
    dataset = CocoDataset(json_path, image_dir)
    loader = loader_on((json_path, image_dir), mosaic_prob=0.0, jitter="none", flip_prob=0.0, batch_size=4)
    for batch in loader:
        for image, t in zip(batch.images, batch.targets):
            index = int(t["image_id"]) - 1
            original = np.asarray(Image.open(image_dir / f"solid_{index}.png").convert("RGB"))
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), original)
            np.testing.assert_array_equal(t["masks"].numpy(), dataset.rasterize_masks(index).transpose(2, 0, 1))
            assert t["tile_image_ids"].tolist() == [index + 1, -1, -1, -1]
            assert t["tiles"].tolist() == [[0, 0, S, S]] + [[0, 0, 0, 0]] * 3
            check_boxes_tight(t)


def flatten(batch) -> list:
    rows = [batch.images.reshape(len(batch), -1).sum(dim=1).tolist()]
    for t in batch.targets:
        rows.append((t["tile_image_ids"].tolist(), t["labels"].tolist(), t["boxes"].tolist()))
    return rows


def test_determinism_resume_and_rfs_weights(solid) -> None:
    first = [flatten(b) for b in loader_on(solid, seed=3)]
    again = [flatten(b) for b in loader_on(solid, seed=3)]
    other = [flatten(b) for b in loader_on(solid, seed=4)]
    assert first == again and first != other
    reference = loader_on(solid, seed=3)
    expected = [flatten(b) for _ in range(2) for b in reference]
    assert stop_and_resume(lambda: loader_on(solid, seed=3), flatten, stop_after=1, resumed_epochs=2) == expected
    rfs = loader_on(solid, repeat_factor_threshold=0.5)
    np.testing.assert_array_equal(rfs.source.item_weights, rfs.sampler.repeat_factors)
    assert rfs.source.item_weights.max() > 1.0


def test_preview(solid, tmp_path: Path) -> None:
    path = preview_mosaic(tmp_path / "mosaic.png", *solid, images=4, tile_size=96, output_size=S, device="cpu")
    with Image.open(path) as png:
        assert png.size == (4 * 96, 96 + 22)


@pytest.mark.gpu
def test_gpu_matches_cpu(solid, tmp_path: Path) -> None:
    """Same seed: identical plans, tiles and labels; images equal up to decoder/resize
    rounding; the GPU composition equals the NumPy twin on the GPU's resized tiles."""
    coco = write_coco_dataset(tmp_path / "coco", num_images=6, instances_per_image=(0, 3), seed=5)
    for paths in (solid, coco):
        cpu = list(loader_on(paths, jitter="ssj"))
        gpu = list(loader_on(paths, jitter="ssj", device="gpu"))
        assert len(cpu) == len(gpu)
        for c, g in zip(cpu, gpu):
            assert g.images.is_cuda
            assert (g.images.cpu().float() - c.images.float()).abs().mean() < 2.0
            for tc, tg in zip(c.targets, g.targets):
                assert tg["tile_image_ids"].tolist() == tc["tile_image_ids"].tolist()
                assert tg["tiles"].cpu().tolist() == tc["tiles"].tolist()
                assert tg["labels"].cpu().tolist() == tc["labels"].tolist()
    dataset = CocoDataset(*solid)
    source = MosaicSource(
        dataset, UniformSampler(len(dataset), seed=1), output_size=S, prob=0.5, batch_size=6, seed=1,
        jitter=ScaleJitter(0.5, 1.6), flip_prob=0.5,
    )  # fmt: skip
    pipe = build_mosaic_pipeline(source, device="gpu", return_tiles=True)
    pipe.build()
    out = pipe.run()
    images, tiles, (start0, regions, flips) = out[0].as_cpu(), [t.as_cpu() for t in out[11:15]], out[15:18]
    for i in range(len(images)):
        twin = compose_images_numpy(
            [np.array(t[i]) for t in tiles], np.array(start0[i]), np.array(regions[i]), S, 114, int(np.array(flips[i]))
        )
        np.testing.assert_array_equal(np.array(images[i]).transpose(1, 2, 0), twin)


@pytest.mark.parametrize("mask_source", ["host", "descriptors"])
def test_corrupt_extra_tile_is_skipped_and_counted(tmp_path: Path, mask_source: str) -> None:
    """A JPEG whose header parses but whose data is broken fails inside DALI; with
    ``on_error="skip"`` the loader finds it (tiles 1–3 included), skips it and draws another,
    with either mask source."""
    json_path, image_dir = write_coco_dataset(tmp_path, num_images=6, seed=4)
    victim = image_dir / "img_000004.jpg"
    data = bytearray(victim.read_bytes())
    body = len(data) // 3  # keep the header, wreck the entropy-coded data and the end marker
    victim.write_bytes(bytes(data[:body]) + b"\x00\xff" * 20)
    loader = loader_on(
        (json_path, image_dir), mosaic_prob=1.0, on_error="skip", repeat_factor_threshold=None, mask_source=mask_source
    )
    ids = [t["tile_image_ids"].tolist() for _ in range(2) for b in loader for t in b.targets]
    assert ids and all(4 not in row for row in ids)
    assert sum(loader.stats["skipped_images"].values()) == 1
