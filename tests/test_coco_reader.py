"""Tests of decal.dali_pipes.coco.reader (CPU, fast)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from coco_factory import uncompressed_rle, write_coco_dataset, write_images, write_json
from decal.dali_pipes.coco.reader import (
    CocoDataset,
    ImageRecord,
    InstanceAnnotation,
    ReaderStats,
    decode_rle_string,
    rasterize_masks,
)
from decal.dali_pipes.coco.compiler import _clip_polygon  # the validation moved there (issue 10)
from decal.dali_pipes.core.errors import DatasetError

H, W = 40, 60


def _image(image_id: int, **kw) -> dict:
    d = {"id": image_id, "file_name": f"im{image_id}.jpg", "width": W, "height": H}
    d.update(kw)
    return d


def _poly_ann(ann_id: int, image_id: int, poly=None, cat: int = 1, **kw) -> dict:
    poly = poly if poly is not None else [[10, 10, 30, 10, 30, 20, 10, 20]]
    d = {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": poly, "iscrowd": 0}
    d.update(kw)
    return d


def _base() -> dict:
    return {
        "images": [_image(1), _image(2), _image(3)],
        "annotations": [_poly_ann(10, 1), _poly_ann(11, 1, cat=2), _poly_ann(12, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def _write(tmp_path: Path, coco: dict, name: str = "inst.json", images: bool = True) -> tuple[Path, Path]:
    image_dir = tmp_path / "images"
    if images:
        write_images(
            {"images": [i for i in coco.get("images", []) if isinstance(i, dict)
                        and isinstance(i.get("width"), int) and isinstance(i.get("height"), int)
                        and i["width"] > 0 and i["height"] > 0
                        and (isinstance(i.get("file_name"), str) and i["file_name"] or isinstance(i.get("coco_url"), str))]},
            image_dir,
        )
    return write_json(tmp_path / name, coco), image_dir


def _load(tmp_path: Path, coco: dict, **kw) -> CocoDataset:
    j, d = _write(tmp_path, coco)
    return CocoDataset(j, d, **kw)


def _raises(tmp_path: Path, coco: dict, *, field, image_id=None, annotation_id=None, file=None, match=None):
    with pytest.raises(DatasetError) as ei:
        _load(tmp_path, coco)
    e = ei.value
    msg = str(e)
    expected_file = str(file) if file is not None else str(tmp_path / "inst.json")
    assert e.file == expected_file
    assert expected_file in msg
    assert e.field == field
    if field is not None:
        assert f"'{field}'" in msg
    assert e.image_id == image_id
    if image_id is not None:
        assert f"image {image_id}" in msg
    assert e.annotation_id == annotation_id
    if annotation_id is not None:
        assert f"annotation {annotation_id}" in msg
    if match is not None:
        assert match in msg, msg
    return e


# ----------------------------------------------------------------------------- valid data


def test_factory_dataset_roundtrip(tmp_path):
    j, d = write_coco_dataset(tmp_path, num_images=9, seed=3)
    coco = json.loads(j.read_text())
    ds = CocoDataset(j, d)
    assert len(ds) == 9
    assert [r.image_id for r in ds.records] == [im["id"] for im in coco["images"]]
    assert ds[0].annotations == ()  # image 0 is empty by construction
    assert set(ds.categories) == {1, 3, 7}
    n = sum(len(r.annotations) for r in ds.records)
    assert n == len(coco["annotations"])
    kinds = {type(a.segmentation).__name__ for r in ds for a in r.annotations}
    assert kinds == {"list", "dict"}
    assert any(a.iscrowd for r in ds for a in r.annotations)
    assert ds.stats == ReaderStats()
    assert ds.annotation_file == j
    for i, rec in enumerate(ds.records):
        assert isinstance(rec, ImageRecord)
        assert rec.path == d / rec.file_name
        assert rec.category_ids == frozenset(a.category_id for a in rec.annotations if not a.iscrowd)
        data = ds.read_image_bytes(i)
        assert data.dtype == np.uint8 and data.ndim == 1 and data[:2].tolist() == [0xFF, 0xD8]
        assert ds.decode_check(i) is None


def test_polygons_multipolygon_crowd_and_empty(tmp_path):
    coco = _base()
    coco["annotations"] = [
        _poly_ann(10, 1),
        _poly_ann(11, 1, poly=[[1, 1, 5, 1, 5, 5], [20.5, 20.5, 30, 20.5, 30, 30, 20.5, 30]], cat=2),
        _poly_ann(12, 2, iscrowd=1, bbox=[10, 10, 20, 10]),
    ]
    ds = _load(tmp_path, coco)
    r1, r2, r3 = ds.records
    assert [a.ann_id for a in r1.annotations] == [10, 11]
    a10, a11 = r1.annotations
    assert isinstance(a10, InstanceAnnotation)
    assert a10.segmentation == [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]
    assert a10.bbox == (10.0, 10.0, 20.0, 10.0)  # derived from the polygon (no json bbox)
    assert len(a11.segmentation) == 2
    assert a11.bbox == (1.0, 1.0, 29.0, 29.0)
    assert r1.category_ids == {1, 2}
    assert r2.annotations[0].iscrowd is True
    assert r2.category_ids == frozenset()
    assert r3.annotations == ()
    assert ds.category_image_counts() == {1: 1, 2: 1}


def test_rle_compressed_and_uncompressed(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[5:15, 7:30] = 1
    m2 = np.zeros((H, W), np.uint8)
    m2[0:3, 50:60] = 1
    comp = mask_utils.encode(np.asfortranarray(m))
    coco = _base()
    coco["annotations"] = [
        _poly_ann(1, 1, poly={"size": [H, W], "counts": comp["counts"].decode()}),
        _poly_ann(2, 1, poly=uncompressed_rle(m2), iscrowd=1),
    ]
    ds = _load(tmp_path, coco)
    a1, a2 = ds[0].annotations
    assert a1.bbox == (7.0, 5.0, 23.0, 10.0)
    assert a2.bbox == (50.0, 0.0, 10.0, 3.0)
    masks = rasterize_masks(ds[0])
    np.testing.assert_array_equal(masks[:, :, 0], m)
    np.testing.assert_array_equal(masks[:, :, 1], m2)
    np.testing.assert_array_equal(ds.rasterize_masks(0), masks)


def test_lvis_style(tmp_path):
    coco = {
        "images": [
            {"id": 391895, "coco_url": "http://images.cocodataset.org/train2017/000000391895.jpg",
             "width": W, "height": H, "neg_category_ids": [2], "not_exhaustive_category_ids": [],
             "license": 3, "flickr_url": "http://farm9.staticflickr.com/x.jpg", "date_captured": "2013"},
            {"id": 5, "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg",
             "width": W, "height": H, "neg_category_ids": [], "not_exhaustive_category_ids": [1]},
        ],
        "annotations": [
            {"id": 1, "image_id": 391895, "category_id": 1, "area": 200.0,
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]], "bbox": [10, 10, 20, 10]},
        ],
        "categories": [
            {"id": 1, "name": "aerosol_can", "synset": "aerosol.n.02", "frequency": "c",
             "image_count": 64, "instance_count": 109, "synonyms": ["aerosol_can"], "def": "..."},
            {"id": 2, "name": "air_conditioner", "frequency": "f", "image_count": 364},
        ],
    }
    ds = _load(tmp_path, coco)
    # LVIS v1 mixes COCO train2017 and val2017: the split folder is kept (as detectron2 does)
    assert [r.file_name for r in ds.records] == ["train2017/000000391895.jpg", "val2017/000000000005.jpg"]
    assert ds[0].path == tmp_path / "images" / "train2017" / "000000391895.jpg"
    assert ds[0].annotations[0].iscrowd is False  # LVIS has no iscrowd field
    assert ds.categories[1]["frequency"] == "c" and ds.categories[2]["frequency"] == "f"
    assert ds.category_image_counts() == {1: 1, 2: 0}


def test_rasterize_area_matches_pycocotools(tmp_path):
    j, d = write_coco_dataset(tmp_path, num_images=8, seed=11, instances_per_image=(1, 5))
    coco = json.loads(j.read_text())
    by_id = {a["id"]: a for a in coco["annotations"]}
    ds = CocoDataset(j, d)
    for rec in ds.records:
        masks = rasterize_masks(rec)
        assert masks.shape == (rec.height, rec.width, len(rec.annotations))
        assert masks.dtype == np.uint8 and masks.flags["C_CONTIGUOUS"]
        assert set(np.unique(masks).tolist()) <= {0, 1}
        for k, ann in enumerate(rec.annotations):
            seg = by_id[ann.ann_id]["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, rec.height, rec.width))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, rec.height, rec.width)
            else:
                rle = seg
            assert int(masks[:, :, k].sum()) == int(mask_utils.area(rle)) == by_id[ann.ann_id]["area"]


def test_rasterize_empty_and_paste_by_box(tmp_path):
    coco = _base()
    coco["annotations"] = [
        _poly_ann(1, 1, bbox=[10, 10, 20, 10]),
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2.4, 3.6, 5.0, 2.0]},  # box only
    ]
    ds = _load(tmp_path, coco, require_segmentation=False)
    empty = rasterize_masks(ds[1])
    assert empty.shape == (H, W, 0) and empty.dtype == np.uint8
    byseg = rasterize_masks(ds[0])
    bybox = rasterize_masks(ds[0], paste_by_box=True)
    # box [10, 30) x [10, 20): 200 pixel centres
    assert bybox[:, :, 0].sum() == 200
    # box x in [2.4, 7.4): centres 2.5..6.5 -> columns 2..6; y in [3.6, 5.6): centres 4.5, 5.5 -> rows 4, 5
    expect = np.zeros((H, W), np.uint8)
    expect[4:6, 2:7] = 1
    np.testing.assert_array_equal(bybox[:, :, 1], expect)
    # an annotation without segmentation gets its box in the default mode too
    np.testing.assert_array_equal(byseg[:, :, 1], expect)
    assert ds[0].annotations[1].segmentation is None


# ----------------------------------------------------------------------------- clipping


def test_clipping_and_drops(tmp_path):
    coco = _base()
    coco["annotations"] = [
        # half outside on the left: clipped to x in [0, 10]
        _poly_ann(1, 1, poly=[[-10, 5, 10, 5, 10, 15, -10, 15]], bbox=[-10, 5, 20, 10]),
        # entirely outside on the right: dropped
        _poly_ann(2, 1, poly=[[W + 1, 5, W + 10, 5, W + 10, 15]]),
        # box-only, entirely below: dropped
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, H + 2, 10, 10]},
        # box-only, sticking out bottom-right: clipped
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [W - 5, H - 5, 10, 10]},
        # inside: untouched
        _poly_ann(5, 1),
        # degenerate (zero area) polygon, no clipping
        _poly_ann(6, 2, poly=[[1, 1, 5, 5, 9, 9]]),
    ]
    ds = _load(tmp_path, coco, require_segmentation=False)
    anns = {a.ann_id: a for a in ds[0].annotations}
    assert sorted(anns) == [1, 4, 5]
    assert anns[1].segmentation == [[0.0, 5.0, 10.0, 5.0, 10.0, 15.0, 0.0, 15.0]]
    assert anns[1].bbox == (0.0, 5.0, 10.0, 10.0)
    assert anns[4].bbox == (W - 5.0, H - 5.0, 5.0, 5.0)
    assert ds[1].annotations == ()
    assert ds.stats.dropped_instances == {"clipped_to_nothing": 2, "zero_area": 1}
    assert ds.stats.clipped_instances == 2
    s = ds.stats.summary()
    assert "clipped_to_nothing: 2" in s and "clipped 2 instances" in s
    m = rasterize_masks(ds[0])
    assert m[:, :, 0].sum() == 100  # 10 x 10 in-image part


def test_clip_polygon_corner_exact():
    # triangle crossing the corner: Sutherland-Hodgman gives the exact intersection
    pts = _clip_polygon([(-5.0, -5.0), (5.0, -5.0), (5.0, 5.0)], 10.0, 10.0)
    xs, ys = np.array(pts).T
    area = 0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))
    assert area == pytest.approx(12.5)  # triangle (0,0),(5,0),(5,5)
    assert xs.min() >= 0 and ys.min() >= 0


# ----------------------------------------------------------------------------- errors


def test_invalid_json_reports_line_and_column(tmp_path):
    p = tmp_path / "inst.json"
    p.write_text('{"images": [\n  1,,\n]}')
    with pytest.raises(DatasetError) as ei:
        CocoDataset(p, tmp_path)
    assert str(p) in str(ei.value) and "line 2" in str(ei.value) and "column" in str(ei.value)
    with pytest.raises(DatasetError, match="cannot read"):
        CocoDataset(tmp_path / "nope.json", tmp_path)


@pytest.mark.parametrize(
    "coco, field",
    [
        ([1, 2], None),
        ({"images": [], "annotations": []}, "categories"),
        ({"annotations": [], "categories": []}, "images"),
        ({"images": [], "categories": []}, "annotations"),
        ({"images": {}, "annotations": [], "categories": []}, "images"),
    ],
)
def test_not_coco(tmp_path, coco, field):
    for on_error in ("raise", "skip"):
        p = write_json(tmp_path / "inst.json", coco)
        with pytest.raises(DatasetError) as ei:
            CocoDataset(p, tmp_path, on_error=on_error)
        assert ei.value.field == field and str(p) in str(ei.value)


def test_unknown_image_id(tmp_path):
    coco = _base()
    coco["annotations"].append(_poly_ann(99, 42))
    _raises(tmp_path, coco, field="image_id", annotation_id=99, match="42")


def test_unknown_category(tmp_path):
    coco = _base()
    coco["annotations"].append(_poly_ann(17, 3, cat=5))
    _raises(tmp_path, coco, field="category_id", image_id=3, annotation_id=17, match="5")


@pytest.mark.parametrize(
    "poly, match",
    [
        ([[1, 1, 5, 5]], "polygon with 2 points (needs >= 3)"),
        ([[1, 1, 5, 5, 9]], "odd number of coordinates"),
        ([[1, 1, 5, float("nan"), 9, 9]], "non-finite"),
        ([[1, 1, 5, float("inf"), 9, 9]], "non-finite"),
        ([[1, 1, 5, "5", 9, 9]], "not a flat list of numbers"),
        ([[1, 1, 5, 5, 9, 9], 3], "expected a list"),
        ("abc", "expected polygons or RLE"),
    ],
)
def test_bad_polygon(tmp_path, poly, match):
    coco = _base()
    coco["annotations"].append(_poly_ann(17, 3, poly=poly))
    _raises(tmp_path, coco, field="segmentation", image_id=3, annotation_id=17, match=match)


def test_bad_rle(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[1:3, 1:3] = 1
    good = uncompressed_rle(m)
    cases = [
        ({"size": [W, H], "counts": good["counts"]}, "!= image [height, width]"),
        ({"size": [H, W], "counts": good["counts"][:-1]}, "expected height*width"),
        ({"size": [H, W], "counts": [5, -5, H * W]}, "expected height*width"),
        ({"size": [H, W], "counts": "P1"}, "expected height*width"),
        ({"size": [H, W], "counts": "\x01"}, "malformed"),
        ({"size": [H, W], "counts": 5}, "neither a string"),
        ({"size": H, "counts": "P1"}, "is not [height, width]"),
    ]
    for k, (seg, match) in enumerate(cases):
        coco = _base()
        coco["annotations"].append(_poly_ann(17, 3, poly=seg))
        _raises(tmp_path / str(k), coco, field="segmentation", image_id=3, annotation_id=17, match=match)


def test_no_geometry(tmp_path):
    coco = _base()
    coco["annotations"].append({"id": 17, "image_id": 3, "category_id": 1})
    _raises(tmp_path, coco, field="segmentation", image_id=3, annotation_id=17, match="neither")


def test_bad_bbox(tmp_path):
    coco = _base()
    coco["annotations"].append({"id": 17, "image_id": 3, "category_id": 1, "bbox": [1, 2, -3, 4]})
    _raises(tmp_path, coco, field="bbox", image_id=3, annotation_id=17, match="negative")


@pytest.mark.parametrize("key", ["width", "height"])
@pytest.mark.parametrize("value", [None, 0, -3, "40", 12.5, True])
def test_bad_image_size(tmp_path, key, value):
    coco = _base()
    if value is None:
        del coco["images"][1][key]
    else:
        coco["images"][1][key] = value
    _raises(tmp_path, coco, field=key, image_id=2)


def test_missing_file_name(tmp_path):
    coco = _base()
    del coco["images"][2]["file_name"]
    _raises(tmp_path, coco, field="file_name", image_id=3, match="missing file_name")


def test_duplicate_ids(tmp_path):
    coco = _base()
    coco["images"].append(_image(2, file_name="other.jpg"))
    _raises(tmp_path / "img", coco, field="id", image_id=2, match="duplicate image id")
    coco = _base()
    coco["annotations"].append(_poly_ann(10, 3))
    _raises(tmp_path / "ann", coco, field="id", image_id=3, annotation_id=10, match="duplicate annotation id")
    coco = _base()
    coco["categories"].append({"id": 2, "name": "again"})
    _raises(tmp_path / "cat", coco, field="id", match="duplicate category id 2")


def test_missing_image_file(tmp_path):
    coco = _base()
    j, d = _write(tmp_path, coco)
    (d / "im2.jpg").unlink()
    with pytest.raises(DatasetError) as ei:
        CocoDataset(j, d)
    e = ei.value
    assert e.file == str(d / "im2.jpg") and e.image_id == 2 and e.field == "file_name"
    assert str(d / "im2.jpg") in str(e) and "image 2" in str(e) and "'file_name'" in str(e)


def test_error_pickles():
    e = DatasetError("x.json", "bad", image_id=3, annotation_id=4, field="bbox")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) == "x.json: annotation 4 (image 3): field 'bbox': bad"
    assert (e2.file, e2.image_id, e2.annotation_id, e2.field) == ("x.json", 3, 4, "bbox")
    assert isinstance(e2, ValueError)


# ----------------------------------------------------------------------------- skip mode


def test_skip_mode_counts(tmp_path):
    coco = {
        "images": [_image(i) for i in range(1, 10)],
        "annotations": [
            _poly_ann(1, 1),
            _poly_ann(2, 2, cat=99),  # unknown category -> skip image 2
            _poly_ann(3, 3, poly=[[1, 1, 2, 2]]),  # bad polygon -> skip image 3
            _poly_ann(4, 3),
            _poly_ann(5, 4, poly=[[W + 1, 1, W + 5, 1, W + 5, 5]]),  # clipped to nothing, kept image
            _poly_ann(6, 42),  # unknown image -> dropped annotation
            _poly_ann(7, 6),
            _poly_ann(7, 7),  # duplicate annotation id -> skip image 7
            _poly_ann(8, 9),
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    coco["images"][4]["width"] = "wide"  # image 5: invalid width
    j, d = _write(tmp_path, coco)
    (d / "im8.jpg").unlink()  # image 8: missing file
    coco["images"].append(_image(9, file_name="dup.jpg"))  # image 9 twice -> both skipped
    write_json(j, coco)
    with pytest.raises(DatasetError):
        CocoDataset(j, d)
    ds = CocoDataset(j, d, on_error="skip")
    assert [r.image_id for r in ds.records] == [1, 4, 6]
    assert ds.stats.skipped_images == {
        "invalid_category_id": 1,
        "invalid_segmentation": 1,
        "invalid_width": 1,
        "duplicate_id": 3,  # image 7 (annotation id) + both entries of image 9
        "missing_file": 1,
    }
    assert ds.stats.dropped_instances == {"clipped_to_nothing": 1, "unknown_image_id": 1}
    assert "skipped 7 images" in ds.stats.summary()
    assert [a.ann_id for a in ds[2].annotations] == [7]


# ----------------------------------------------------------------------------- image bytes


def test_read_image_bytes_errors(tmp_path):
    coco = _base()
    coco["images"].append(_image(4, file_name="im4.png"))
    coco["images"].append(_image(5, file_name="im5.gif"))
    j, d = _write(tmp_path, coco)
    (d / "im1.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)  # garbage
    Image.new("RGB", (W + 1, H)).save(d / "im2.jpg", format="JPEG")  # size mismatch (width)
    full = (d / "im3.jpg").read_bytes()
    (d / "im3.jpg").write_bytes(full[: len(full) // 2])  # truncated: header fine, decode fails
    Image.new("RGB", (W, H)).save(d / "im4.png", format="PNG")
    Image.new("RGB", (W, H)).save(d / "im5.gif", format="GIF")
    ds = CocoDataset(j, d)

    for idx, field, match in [(0, "file_name", "not a readable image"), (1, "width", "width 60"),
                              (4, "file_name", "unsupported image format 'GIF'")]:
        with pytest.raises(DatasetError) as ei:
            ds.read_image_bytes(idx)
        e = ei.value
        rec = ds[idx]
        assert (e.file, e.image_id, e.field) == (str(rec.path), rec.image_id, field)
        assert str(rec.path) in str(e) and f"image {rec.image_id}" in str(e) and match in str(e)
        assert isinstance(ds.decode_check(idx), DatasetError)

    truncated = ds.read_image_bytes(2)
    assert len(truncated) == len(full) // 2
    err = ds.decode_check(2)
    assert isinstance(err, DatasetError) and err.image_id == 3 and err.field == "file_name"
    assert "truncated" in str(err)
    assert ds.read_image_bytes(3)[:4].tobytes() == b"\x89PNG"
    assert ds.decode_check(3) is None


def test_read_image_bytes_needs_no_pillow_when_the_raw_header_parses(tmp_path, monkeypatch):
    """The hot path reads format and size with the raw header parser; Pillow is only asked
    about a file that parser cannot read (here a GIF), whose error it then names."""
    import decal.dali_pipes.coco.reader as reader

    coco = _base()
    coco["images"].append(_image(4, file_name="im4.png"))
    coco["images"].append(_image(5, file_name="im5.gif"))
    j, d = _write(tmp_path, coco)
    Image.new("RGB", (W, H)).save(d / "im4.png", format="PNG")
    Image.new("RGB", (W, H)).save(d / "im5.gif", format="GIF")
    Image.new("RGB", (W + 1, H)).save(d / "im2.jpg", format="JPEG")  # size mismatch, from the raw header
    ds = CocoDataset(j, d)
    opened = []
    real_open = reader.Image.open
    monkeypatch.setattr(reader.Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    assert ds.read_image_bytes(0)[:2].tobytes() == b"\xff\xd8" and ds.read_image_bytes(3)[:4].tobytes() == b"\x89PNG"
    with pytest.raises(DatasetError, match="width 60"):
        ds.read_image_bytes(1)
    assert opened == []
    with pytest.raises(DatasetError, match="unsupported image format 'GIF'"):
        ds.read_image_bytes(4)
    assert len(opened) == 1


def test_height_mismatch(tmp_path):
    coco = _base()
    j, d = _write(tmp_path, coco)
    Image.new("RGB", (W, H + 3)).save(d / "im1.jpg", format="JPEG")
    ds = CocoDataset(j, d)
    with pytest.raises(DatasetError) as ei:
        ds.read_image_bytes(0)
    assert ei.value.field == "height"


# ----------------------------------------------------------------------------- RLE strings


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    p=st.floats(0.0, 1.0),
)
def test_rle_string_decoder_matches_pycocotools(h, w, seed, p):
    m = (np.random.default_rng(seed).random((h, w)) < p).astype(np.uint8)
    enc = mask_utils.encode(np.asfortranarray(m))
    runs = decode_rle_string(enc["counts"].decode())
    assert runs == uncompressed_rle(m)["counts"] or runs == uncompressed_rle(m)["counts"] + [0]
    assert sum(runs) == h * w
