"""The compiled dataset index against the reader it is built from: same images, instances,
boxes, labels and masks on every kind of test dataset; descriptors equal to
``build_descriptors``; the on-disk cache (reopen memory-mapped, rebuild on change)."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from decal.dali_pipes.coco import index as coco_index
from decal.dali_pipes.coco.index import BOX, POLYGON, RLE, CocoIndex, batch_descriptors, open_index
from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.copy_paste.gpu_masks import record_instances
from decal.kernels.instance_masks import ARRAY_FIELDS, build_descriptors
from decal.kernels.mask_geometry import sample_geometry
from decal.kernels.rle_decode import counts_from_toggles

from coco_factory import build_coco_dict, uncompressed_rle, write_coco_dataset, write_images, write_json

H, W = 40, 60


def _poly_ann(ann_id: int, image_id: int, poly=None, cat: int = 1, **kw) -> dict:
    poly = poly if poly is not None else [[10, 10, 30, 10, 30, 20, 10, 20]]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": poly, "iscrowd": 0, **kw}


def _handmade() -> dict:
    """Multi-polygons, crowds, compressed and uncompressed RLE, box-only, clipped and dropped
    instances, and images without annotations."""
    m = np.zeros((H, W), np.uint8)
    m[5:15, 7:30] = 1
    m2 = np.zeros((H, W), np.uint8)
    m2[0:3, 50:60] = 1
    m2[39, 0] = 1
    comp = mask_utils.encode(np.asfortranarray(m))
    return {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "width": W, "height": H} for i in (1, 2, 3, 4)],
        "annotations": [
            _poly_ann(10, 1),
            _poly_ann(11, 1, poly=[[1, 1, 5, 1, 5, 5], [20.5, 20.5, 30, 20.5, 30, 30, 20.5, 30]], cat=2),
            _poly_ann(12, 2, iscrowd=1, bbox=[10, 10, 20, 10]),
            _poly_ann(13, 2, poly={"size": [H, W], "counts": comp["counts"].decode()}),
            _poly_ann(14, 2, poly=uncompressed_rle(m2), iscrowd=1),
            {"id": 15, "image_id": 2, "category_id": 2, "bbox": [2.4, 3.6, 5.0, 2.0]},  # box only
            _poly_ann(16, 4, poly=[[-10, 5, 10, 5, 10, 15, -10, 15]], bbox=[-10, 5, 20, 10]),  # clipped
            _poly_ann(17, 4, poly=[[W + 1, 5, W + 10, 5, W + 10, 15]]),  # clipped to nothing
            {"id": 18, "image_id": 4, "category_id": 1, "bbox": [W - 5, H - 5, 10, 10]},  # clipped box
            _poly_ann(19, 4, poly=[[1, 1, 5, 5, 9, 9]]),  # zero area
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def _skip_mode() -> dict:
    """The reader's bad-input cases, loaded with ``on_error="skip"``."""
    coco = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "width": W, "height": H} for i in range(1, 8)],
        "annotations": [
            _poly_ann(1, 1),
            _poly_ann(2, 2, cat=99),  # unknown category: image 2 skipped
            _poly_ann(3, 3, poly=[[1, 1, 2, 2]]),  # bad polygon: image 3 skipped
            _poly_ann(4, 4, poly=[[W + 1, 1, W + 5, 1, W + 5, 5]]),  # clipped to nothing
            _poly_ann(5, 42),  # unknown image: dropped
            _poly_ann(6, 6),
            _poly_ann(6, 7),  # duplicate annotation id: image 7 skipped
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    coco["images"][4]["width"] = "wide"  # image 5: invalid width
    return coco


def _dataset(tmp_path: Path, kind: str) -> CocoDataset:
    if kind == "factory":
        json_path, image_dir = write_coco_dataset(tmp_path, num_images=12, instances_per_image=(0, 6), seed=3)
        return CocoDataset(json_path, image_dir)
    if kind == "factory_no_rle":
        json_path, image_dir = write_coco_dataset(tmp_path, num_images=8, with_rle=False, seed=5)
        return CocoDataset(json_path, image_dir)
    coco = _handmade() if kind == "handmade" else _skip_mode()
    image_dir = tmp_path / "images"
    write_images({"images": [i for i in coco["images"] if isinstance(i["width"], int)]}, image_dir)
    json_path = write_json(tmp_path / "inst.json", coco)
    # the handmade set holds box-only annotations (no "segmentation" key): the reader needs
    # require_segmentation=False for them, as loaders pass with paste_by_box=True
    return CocoDataset(
        json_path, image_dir, on_error="raise" if kind == "handmade" else "skip", require_segmentation=kind != "handmade"
    )


KINDS = ["factory", "factory_no_rle", "handmade", "skip"]


def _masks_from_index(index: CocoIndex, i: int) -> np.ndarray:
    """(H, W, N) masks of image ``i`` rasterised with pycocotools from the index's arrays."""
    h, w = int(index.heights[i]), int(index.widths[i])
    begin, end = index.instance_range(i)
    out = np.zeros((h, w, end - begin), np.uint8)
    for k, n in enumerate(range(begin, end)):
        if index.kinds[n] == BOX:
            x0, y0, x1, y1 = index.box_pixels[n]
            out[y0:y1, x0:x1, k] = 1
            continue
        if index.kinds[n] == POLYGON:
            rle = mask_utils.merge(mask_utils.frPyObjects([p.reshape(-1).tolist() for p in index.polygons(n)], h, w))
        else:
            counts = counts_from_toggles(index.instance_toggles(n), h, w)
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out[:, :, k] = mask_utils.decode(rle)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_index_equals_reader(tmp_path, kind) -> None:
    ds = _dataset(tmp_path, kind)
    index = CocoIndex.from_dataset(ds)
    assert len(index) == len(ds.records)
    assert index.categories == ds.categories
    assert index.stats == ds.stats
    assert index.category_image_counts() == ds.category_image_counts()
    for i, rec in enumerate(ds.records):
        assert index.image_ids[i] == rec.image_id
        assert index.file_name(i) == rec.file_name
        assert index.image_dir / index.file_name(i) == rec.path
        assert (index.heights[i], index.widths[i]) == (rec.height, rec.width)
        begin, end = index.instance_range(i)
        anns = rec.annotations
        assert end - begin == len(anns)
        assert index.ann_ids[begin:end].tolist() == [a.ann_id for a in anns]
        assert index.labels[begin:end].tolist() == [a.category_id for a in anns]
        assert index.iscrowd[begin:end].tolist() == [int(a.iscrowd) for a in anns]
        assert [tuple(b) for b in index.boxes[begin:end].tolist()] == [a.bbox for a in anns]
        np.testing.assert_array_equal(_masks_from_index(index, i), ds.rasterize_masks(i))
        for by_box in (False, True):
            got, want = index.instances(i, paste_by_box=by_box), record_instances(rec, paste_by_box=by_box)
            assert [k for k, _ in got] == [k for k, _ in want]
            for (k, a), (_, b) in zip(got, want):
                if k == "poly":
                    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
                else:
                    np.testing.assert_array_equal(a, b)
        if by_box:
            np.testing.assert_array_equal(
                _masks_from_index(index, i)[:, :, index.kinds[begin:end] == BOX],
                ds.rasterize_masks(i)[:, :, index.kinds[begin:end] == BOX],
            )


def test_index_kinds_and_areas(tmp_path) -> None:
    index = CocoIndex.from_dataset(_dataset(tmp_path, "handmade"))
    assert index.kinds.tolist() == [POLYGON, POLYGON, POLYGON, RLE, RLE, BOX, POLYGON, BOX]
    # 20x10 square; 8 + 9.5² triangles+square; crowd box polygon; RLE 230 px; RLE 31 px; box 5x2;
    # clipped half square 10x10; clipped box 5x5
    np.testing.assert_allclose(index.areas, [200.0, 8.0 + 9.5**2, 200.0, 230.0, 31.0, 10.0, 100.0, 25.0])
    assert index.box_pixels[5].tolist() == [2, 4, 7, 6]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("subpixel", [False, True])
@pytest.mark.parametrize("paste_by_box", [False, True])
def test_batch_descriptors_equal_build_descriptors(tmp_path, kind, subpixel, paste_by_box) -> None:
    ds = _dataset(tmp_path, kind)
    index = CocoIndex.from_dataset(ds)
    rng = np.random.default_rng(7)
    for _ in range(4):
        images = rng.integers(0, len(ds), size=int(rng.integers(1, 6)))
        geometries = [
            sample_geometry(int(index.heights[i]), int(index.widths[i]), float(np.float32(rng.uniform(0.1, 2.0))),
                            float(np.float32(rng.uniform())), float(np.float32(rng.uniform())),
                            int(rng.integers(0, 2)), 33)
            for i in images
        ]
        want, want_bounds = build_descriptors(
            [record_instances(ds[int(i)], paste_by_box=paste_by_box) for i in images], geometries, subpixel=subpixel
        )
        got, got_bounds = batch_descriptors(index, images, geometries, subpixel=subpixel, paste_by_box=paste_by_box)
        assert (got.height, got.width, got.num_instances) == (want.height, want.width, want.num_instances)
        for name in ARRAY_FIELDS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)
            np.testing.assert_array_equal(got_bounds[name], want_bounds[name], err_msg=name)
            assert got_bounds[name].dtype == want_bounds[name].dtype


def test_batch_descriptors_rejects_bad_batches(tmp_path) -> None:
    index = CocoIndex.from_dataset(_dataset(tmp_path, "handmade"))
    g = sample_geometry(H, W, 1.0, 0.5, 0.5, 0, 16)
    with pytest.raises(ValueError, match="at least one sample"):
        batch_descriptors(index, [], [])
    with pytest.raises(ValueError, match="2 samples but 1 geometries"):
        batch_descriptors(index, [0, 1], [g])
    with pytest.raises(ValueError, match="share the output size"):
        batch_descriptors(index, [0, 1], [g, sample_geometry(H, W, 1.0, 0.5, 0.5, 0, 17)])


# --------------------------------------------------------------------------- cache


def _write_factory(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    coco = build_coco_dict(5, seed=seed, instances_per_image=(1, 4))
    write_images(coco, tmp_path / "images")
    return write_json(tmp_path / "annotations.json", coco), tmp_path / "images"


def test_open_index_caches_and_reopens_memory_mapped(tmp_path, monkeypatch) -> None:
    json_path, image_dir = _write_factory(tmp_path, seed=1)
    cache = tmp_path / "cache"
    first = open_index(json_path, image_dir, cache_dir=cache)
    assert first.directory is not None and first.directory.parent == cache
    assert isinstance(first.verts, np.memmap) and not first.verts.flags.writeable

    def no_parse(*args, **kwargs):
        raise AssertionError("the json was parsed again")

    monkeypatch.setattr(coco_index, "JsonCompiler", no_parse)
    second = open_index(json_path, image_dir, cache_dir=cache)
    assert second.directory == first.directory
    assert isinstance(second.labels, np.memmap)
    reference = CocoIndex.from_dataset(CocoDataset(json_path, image_dir))
    for name in CocoIndex.array_names():
        np.testing.assert_array_equal(getattr(second, name), getattr(reference, name), err_msg=name)
    assert second.categories == reference.categories and second.stats == reference.stats
    # a touched json with the same content is re-hashed and finds the same index
    os.utime(json_path, ns=(1, 1))
    assert open_index(json_path, image_dir, cache_dir=cache).directory == first.directory
    # a memory-mapped index pickles as its directory
    again = pickle.loads(pickle.dumps(second))
    assert again.directory == second.directory and isinstance(again.verts, np.memmap)
    in_memory = pickle.loads(pickle.dumps(reference))
    np.testing.assert_array_equal(in_memory.verts, reference.verts)


def test_changed_json_is_reindexed(tmp_path) -> None:
    json_path, image_dir = _write_factory(tmp_path, seed=1)
    cache = tmp_path / "cache"
    first = open_index(json_path, image_dir, cache_dir=cache)
    coco = build_coco_dict(5, seed=2, instances_per_image=(1, 4))
    write_json(json_path, coco)
    second = open_index(json_path, image_dir, cache_dir=cache)
    assert second.directory != first.directory
    assert second.ann_ids.tolist() == [a["id"] for a in coco["annotations"]]
    np.testing.assert_array_equal(second.boxes, CocoIndex.from_dataset(CocoDataset(json_path, image_dir)).boxes)
    # the reader's options are part of the key
    assert open_index(json_path, image_dir, cache_dir=cache, on_error="skip").directory != second.directory


def test_open_index_raises_the_readers_error(tmp_path) -> None:
    from decal.dali_pipes.core.errors import DatasetError

    coco = _skip_mode()
    image_dir = tmp_path / "images"
    write_images({"images": [i for i in coco["images"] if isinstance(i["width"], int)]}, image_dir)
    json_path = write_json(tmp_path / "inst.json", coco)
    with pytest.raises(DatasetError) as caught:
        open_index(json_path, image_dir, cache_dir=tmp_path / "cache")
    assert "inst.json" in str(caught.value)
    index = open_index(json_path, image_dir, cache_dir=tmp_path / "cache", on_error="skip")
    assert index.image_ids.tolist() == [1, 4, 6]
    assert index.stats.skipped_images["invalid_width"] == 1


def test_load_rejects_an_incomplete_or_old_index(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a complete decal index"):
        CocoIndex.load(tmp_path / "nothing")
    json_path, image_dir = _write_factory(tmp_path, seed=1)
    index = open_index(json_path, image_dir, cache_dir=tmp_path / "cache")
    meta = index.directory / "meta.json"
    meta.write_text(meta.read_text().replace(f'"format_version": {coco_index.FORMAT_VERSION}', '"format_version": 0'))
    with pytest.raises(ValueError, match="format_version"):
        CocoIndex.load(index.directory)


# --------------------------------------------------------------------------- the source on the index


def _gpu_source(ds: CocoDataset, **kw):
    from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteSource
    from decal.dali_pipes.core.samplers import UniformSampler
    from decal.dali_pipes.core.scale_jitter import ScaleJitter

    return GpuMaskCopyPasteSource(ds, UniformSampler(len(ds), seed=3), output_size=40, batch_size=3, seed=3,
                                  jitter=ScaleJitter.parse("lsj"), **kw)


@pytest.mark.parametrize("subpixel", [False, True])
@pytest.mark.parametrize("paste_by_box", [False, True])
def test_gpu_mask_source_columns_from_a_cached_index(tmp_path, subpixel, paste_by_box) -> None:
    """The source's descriptor, label and crowd columns, gathered from a memory-mapped index,
    are those of ``build_descriptors`` over the reader's records with the same draws."""
    from decal.dali_pipes.copy_paste.gpu_masks import GpuMaskCopyPasteSource
    from decal.dali_pipes.copy_paste.source import GEOMETRY_STREAM
    from decal.dali_pipes.core.scale_jitter import draw_geometry

    ds = _dataset(tmp_path, "factory")
    index = open_index(ds.annotation_file, ds.image_dir, cache_dir=tmp_path / "cache")
    source = _gpu_source(ds, index=index, subpixel=subpixel, paste_by_box=paste_by_box)
    names = GpuMaskCopyPasteSource.column_names
    for _ in range(source.batches_in_epoch(0)):
        start = source.position
        columns = dict(zip(names, source()))
        items = source.produced[-1].dataset_indices
        draws = draw_geometry(source.batch_rng(start, GEOMETRY_STREAM), len(items), source.jitter, source.flip_prob)
        geometries = [sample_geometry(ds[i].height, ds[i].width, draws.scale[k], draws.crop_x[k], draws.crop_y[k],
                                      draws.flip[k], 40) for k, i in enumerate(items)]
        want, bounds = build_descriptors([record_instances(ds[i], paste_by_box=paste_by_box) for i in items],
                                         geometries, subpixel=subpixel)
        for name, piece in zip(ARRAY_FIELDS, zip(*[p.values() for p in want.split(bounds)])):
            assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(columns[name], piece)), name
        for k, i in enumerate(items):
            anns = ds[i].annotations
            assert columns["labels"][k].tolist() == [a.category_id for a in anns]
            assert columns["iscrowd"][k].dtype == np.uint8
            assert columns["iscrowd"][k].tolist() == [int(a.iscrowd) for a in anns]
            assert columns["image_id"][k].tolist() == [ds[i].image_id]


def test_gpu_mask_source_rejects_another_datasets_index(tmp_path) -> None:
    ds = _dataset(tmp_path / "a", "factory")
    other = CocoIndex.from_dataset(_dataset(tmp_path / "b", "handmade"))
    with pytest.raises(ValueError, match="index: its images are not the dataset's"):
        _gpu_source(ds, index=other)


def test_load_names_a_damaged_array(tmp_path) -> None:
    json_path, image_dir = _write_factory(tmp_path, seed=1)
    index = open_index(json_path, image_dir, cache_dir=tmp_path / "cache")
    victim = index.directory / "verts.npy"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"verts\.npy: damaged index array .* delete"):
        CocoIndex.load(index.directory)


def test_open_dataset_reindexes_a_changed_json(tmp_path) -> None:
    """``CocoDataset.open`` (what the loaders use) serves the cached, memory-mapped index, and the
    records of a rewritten json, not the old ones."""
    json_path, image_dir = _write_factory(tmp_path, seed=1)
    cache = tmp_path / "cache"
    first = CocoDataset.open(json_path, image_dir, cache_dir=cache)
    assert isinstance(first.index.verts, np.memmap) and first.index.directory.parent == cache
    assert first.records == list(CocoDataset(json_path, image_dir).records)
    coco = build_coco_dict(5, seed=2, instances_per_image=(1, 4))
    write_json(json_path, coco)
    second = CocoDataset.open(json_path, image_dir, cache_dir=cache)
    assert second.index.directory != first.index.directory
    anns = [a for r in second.records for a in r.annotations]
    assert [a.ann_id for a in anns] == [a["id"] for a in coco["annotations"]]
    assert [a.segmentation for a in anns] == [a["segmentation"] for a in coco["annotations"]]
    assert second.stats == CocoDataset(json_path, image_dir).stats


def test_threads_opening_one_json_at_once_all_get_its_key(tmp_path) -> None:
    """Streams of the server open a dataset from several threads of one process at once: each
    writes the json's digest stamp through a temporary file of its own (a name shared by the
    process made a thread's rename find the file already moved: FileNotFoundError, a stream
    ended with INTERNAL)."""
    import threading

    json_path, image_dir = _write_factory(tmp_path, 3)
    barrier, keys, errors = threading.Barrier(16), [], []

    def open_key() -> None:
        barrier.wait()
        try:
            keys.append(coco_index.index_key(json_path, image_dir, "raise", tmp_path / "cache"))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    for _round in range(20):  # the stamp is written only while missing: make it missing again
        for stamp in (tmp_path / "cache" / "stamps").glob("*"):
            stamp.unlink()
        threads = [threading.Thread(target=open_key) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        barrier.reset()
    assert errors == [] and len(set(keys)) == 1 and len(keys) == 20 * 16
