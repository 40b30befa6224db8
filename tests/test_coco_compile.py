"""The bulk (vectorised) compiler against the per-annotation reference parser
(``CocoDataset(vectorised=False)``): the same index, array for array, the same stats and
the same first error, on every test dataset and on randomly corrupted json; and against an
independent oracle, pycocotools' ``COCO``, on valid data."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from coco_factory import build_coco_dict, write_coco_dataset, write_images, write_json
from decal.dali_pipes.coco import compiler as coco_compile
from decal.dali_pipes.coco.index import CocoIndex
from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.core.errors import DatasetError

H, W = 40, 60
CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def _assert_same_index(got: CocoIndex, want: CocoIndex) -> None:
    for name in CocoIndex.array_names():
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.stats == want.stats
    assert got.categories == want.categories


def _load_both(json_path: Path, image_dir: Path, **kw):
    """(fast, reference) datasets, or (error text, error text) when loading fails."""
    out = []
    for vectorised in (True, False):
        try:
            out.append(CocoDataset(json_path, image_dir, vectorised=vectorised, **kw))
        except DatasetError as error:
            out.append(f"{type(error).__name__}: {error} | {error.field} {error.image_id} {error.annotation_id}")
    return out


def _ann(ann_id: int, image_id: int, seg, cat: int = 1, **kw) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": seg, "iscrowd": 0, **kw}


SQUARE = [10, 10, 30, 10, 30, 20, 10, 20]

#: Annotations the bulk path must hand to the per-annotation parser (each a separate image).
TRICKY = [
    [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]],  # plain floats
    [SQUARE],  # ints
    [[10, 10.5, 30, 10, 30.25, 20, 10, 20]],  # ints and floats
    [[True, 10, 30, 10, 30, 20, 10, 20]],  # a bool among ints (numpy makes it 1: accepted)
    [[True, False, True, True, False, True]],  # all bools: not numbers
    [[2**60, 10, 30, 10, 30, 20]],  # an int beyond 2**53 (outside the image: clipped)
    [[float("inf"), 10, 30, 10, 30, 20]],
    [[float("nan"), 10, 30, 10, 30, 20]],
    [["10", 10, 30, 10, 30, 20]],  # a string
    [[None, 10, 30, 10, 30, 20]],
    [[[10, 10], [30, 10], [30, 20]]],  # nested
    [[10, 10, 30, 10, 30]],  # odd
    [[10, 10, 30, 10]],  # two points
    [SQUARE, [1, 1, 2, 2]],  # one good polygon, one short
    [[-5, 10, 30, 10, 30, 20, -5, 20]],  # clipped
    [[W + 1, 5, W + 10, 5, W + 10, 15]],  # clipped to nothing
    [[10, 10, 30, 10, 30, H + 5]],  # clipped at the bottom
    [[10, -1, 30, 10, 30, 20]],  # clipped at the top
    [[1, 1, 5, 5, 9, 9]],  # zero area
    [[1, 1, 1.000001, 1, 1, 1.000001]],  # tiny area
    [SQUARE, [W + 1, 5, W + 10, 5, W + 10, 15]],  # one kept, one clipped away
    [[0, 0, W, 0, W, H, 0, H]],  # touching every border
    [5],  # a number instead of a polygon
    [{"x": 1}],
    [[]],
]
#: (extra fields) per annotation on a plain square
FIELDS = [
    {"bbox": [10, 10, 20, 10]},
    {"bbox": [10.0, 10.0, 20.0, 10.0]},
    {"bbox": [6.72, 6.72, 8.47, 8.47]},  # (x + w) - x != w in float64: the reader's box is the former
    {"bbox": [-1, 10, 20, 10]},  # clipped box
    {"bbox": [50, 30, 20, 20]},  # clipped box
    {"bbox": [10, 10, 0, 10]},  # empty box: box of the segmentation
    {"bbox": [10, 10, -1, 10]},
    {"bbox": [True, 10, 20, 10]},
    {"bbox": [10, 10, 20]},
    {"bbox": "10 10 20 10"},
    {"bbox": [10, 10, float("inf"), 10]},
    {"bbox": None},
    {"iscrowd": True},
    {"iscrowd": 1},
    {"iscrowd": 2},
    {"iscrowd": "0"},
    {"category_id": 2},
    {"category_id": 99},
    {"category_id": True},
    {"category_id": 1.0},
]


def _tricky_coco() -> dict:
    anns, images = [], []
    cases = [(seg, {}) for seg in TRICKY] + [([SQUARE], extra) for extra in FIELDS]
    for k, (seg, extra) in enumerate(cases):
        image_id = k + 1
        images.append({"id": image_id, "file_name": f"im{image_id}.jpg", "width": W, "height": H})
        anns.append(_ann(100 + k, image_id, seg, **extra))
        anns.append(_ann(1000 + k, image_id, [SQUARE], cat=2))  # a plain neighbour
    images.append({"id": 999, "file_name": "empty.jpg", "width": W, "height": H})
    return {"images": images, "annotations": anns, "categories": CATS}


def _write(tmp_path: Path, coco: dict) -> tuple[Path, Path]:
    image_dir = tmp_path / "images"
    if not image_dir.is_dir():
        write_images({"images": [i for i in coco["images"] if isinstance(i, dict) and isinstance(i.get("id"), int)
                                 and i.get("width") == W and i.get("height") == H]}, image_dir)
    return write_json(tmp_path / "inst.json", coco), image_dir


def test_tricky_annotations_skip_mode_same_index_and_counts(tmp_path) -> None:
    json_path, image_dir = _write(tmp_path, _tricky_coco())
    fast, reference = _load_both(json_path, image_dir, on_error="skip")
    assert not isinstance(fast, str) and not isinstance(reference, str)
    _assert_same_index(fast.index, reference.index)
    assert fast.records == list(reference.records)
    # the cases did exercise both paths, the skips and the drops
    assert sum(fast.stats.skipped_images.values()) >= 10
    assert fast.stats.dropped_instances and fast.stats.clipped_instances >= 3
    scan = coco_compile.polygon_prescan(json.loads(json_path.read_text())["annotations"],
                                        {r.image_id: (r.width, r.height) for r in fast.records})
    assert 0 < int(scan.ok.sum()) < len(scan.ok)


def test_tricky_annotations_raise_mode_same_first_error(tmp_path) -> None:
    """Each tricky annotation alone in front of valid data: the same error (message, field,
    ids) or the same index."""
    base = _tricky_coco()
    for k in range(len(TRICKY) + len(FIELDS)):
        coco = copy.deepcopy(base)
        coco["annotations"] = coco["annotations"][2 * k : 2 * k + 2] + [
            a for a in coco["annotations"] if a["image_id"] != k + 1 and a["id"] >= 1000
        ]
        json_path, image_dir = _write(tmp_path, coco)
        fast, reference = _load_both(json_path, image_dir, require_segmentation=False)
        if isinstance(reference, str):
            assert fast == reference, k
        else:
            assert not isinstance(fast, str), (k, fast)
            _assert_same_index(fast.index, reference.index)


def _mutate(rng: np.random.Generator, coco: dict) -> dict:
    """A few random corruptions of a valid COCO dict (values the reader must judge)."""
    coco = copy.deepcopy(coco)
    anns = coco["annotations"]
    bad_values = [None, True, "x", -1, 2**70, float("nan"), float("inf"), [], [1, 2], {"a": 1}, 0, 1.5, 10**6]
    for _ in range(int(rng.integers(1, 5))):
        ann = anns[int(rng.integers(len(anns)))]
        what = int(rng.integers(7))
        seg = ann.get("segmentation")
        if what == 0 and isinstance(seg, list) and seg:
            poly = seg[int(rng.integers(len(seg)))]
            poly[int(rng.integers(len(poly)))] = bad_values[int(rng.integers(len(bad_values)))]
        elif what == 1 and isinstance(seg, list) and seg:
            poly = seg[int(rng.integers(len(seg)))]
            shift = float(rng.choice([-200.0, -3.0, 3.0, 200.0]))
            poly[int(rng.integers(len(poly)))] += shift  # often outside the image: clipped
        elif what == 2:
            ann["bbox"] = bad_values[int(rng.integers(len(bad_values)))] if rng.random() < 0.5 else \
                [float(v) for v in rng.uniform(-20, 140, 4)]
        elif what == 3:
            ann[str(rng.choice(["category_id", "iscrowd", "id", "image_id"]))] = bad_values[int(rng.integers(len(bad_values)))]
        elif what == 4:
            ann.pop(str(rng.choice(["segmentation", "bbox", "category_id", "image_id", "id"])), None)
        elif what == 5 and isinstance(seg, list) and seg:
            seg.append(list(seg[0][:4]))  # a two-point polygon
        elif what == 6:
            ann["id"] = anns[0]["id"]  # duplicate id
    return coco


@pytest.mark.parametrize("seed", range(12))
def test_random_corruptions_same_result(tmp_path, seed) -> None:
    rng = np.random.default_rng(seed)
    valid = build_coco_dict(6, seed=seed, instances_per_image=(0, 5))
    write_images(valid, tmp_path / "images")
    coco = _mutate(rng, valid)
    json_path = write_json(tmp_path / "inst.json", coco)
    for on_error in ("raise", "skip"):
        for require_segmentation in (True, False):
            fast, reference = _load_both(json_path, tmp_path / "images", on_error=on_error,
                                         require_segmentation=require_segmentation)
            if isinstance(reference, str) or isinstance(fast, str):
                assert fast == reference, (on_error, require_segmentation)
            else:
                _assert_same_index(fast.index, reference.index)


def test_factory_data_matches_pycocotools(tmp_path) -> None:
    """Valid data: per image, the annotations pycocotools indexes (json order), with the
    json's segmentation, box and category, are the records'."""
    json_path, image_dir = write_coco_dataset(tmp_path, num_images=10, instances_per_image=(0, 6), seed=7)
    ds = CocoDataset(json_path, image_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    assert [r.image_id for r in ds.records] == [img["id"] for img in json.loads(json_path.read_text())["images"]]
    for rec in ds.records:
        anns = coco.imgToAnns[rec.image_id]
        assert [a.ann_id for a in rec.annotations] == [a["id"] for a in anns]
        for got, want in zip(rec.annotations, anns):
            assert got.category_id == want["category_id"] and got.iscrowd == bool(want["iscrowd"])
            assert got.segmentation == want["segmentation"]
            assert got.bbox == pytest.approx(tuple(want["bbox"]), abs=0)
    assert ds.index.num_instances == len(coco.anns)


@pytest.mark.parametrize("url", [
    "http://images.cocodataset.org/train2017/000000391895.jpg",
    "https://images.cocodataset.org/val2017/000000000139.jpg",
    "http://host/a.jpg",
    "http://host//a//b.jpg",
    "http:///split/a.jpg",
    "http://host",
    "http://host/dir/",
    "http://host/a.jpg?x=1",
    "http://host/a.jpg#frag",
    "http://host/a;params/b.jpg",
    "http://user@host/s/a.jpg",
    " http://host/s/a.jpg",
    "http://host/s/a b.jpg",
    "HTTP://host/s/a.jpg",
    "ftp://host/s/a.jpg",
    "train2017/a.jpg",
    "/abs/a.jpg",
])
def test_lvis_file_name_fast_path_is_urlparse(url) -> None:
    """The shortcut for plain http(s) urls gives what urlparse's path gives."""
    from urllib.parse import urlparse

    from decal.dali_pipes.coco.compiler import lvis_file_name

    parts = [p for p in urlparse(url).path.split("/") if p]
    want = "" if not parts or not Path(parts[-1]).suffix else "/".join(parts[-2:])
    assert lvis_file_name(url) == want


@pytest.mark.parametrize("raw", [
    b'{"a": [1, 2.5, -0, -0.0, 1e5, 1E-3, "x\\u00e9", null, true, false, {"b": {}}]}',
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'{"a": 123456789012345678901234567890}',  # orjson would give a float
    b'{"a": -9223372036854775809, "b": 18446744073709551616}',
    b'{"a": 9223372036854775807, "b": -9223372036854775808}',
    b'{"a": 0.1234567890123456789012345}',
    b'{"a": 1e400}',
    b'\xef\xbb\xbf{"a": 1}',
    '{"a": 1}'.encode("utf-16"),
    b'{"a": "\\ud800"}',
    b'{"a": 1, "a": 2}',
    b'[' * 50 + b']' * 50,
    b'{"a": 1,}',
    b'{"a": \x01}',
    b'',
])
def test_parse_json_is_the_standard_librarys(raw) -> None:
    """Same value, or the same JSONDecodeError (message, line, column), as json.loads."""
    from decal.dali_pipes.coco.compiler import parse_json

    def outcome(parse):
        try:
            value = parse(raw)
        except json.JSONDecodeError as error:
            return ("error", error.msg, error.lineno, error.colno)
        return ("value", json.dumps(value), repr(value))

    assert outcome(parse_json) == outcome(json.loads)


def test_polygon_part_areas_in_runs_equal_one_pass() -> None:
    """Working through the polygons in short runs changes no bit of any area, and each area is
    the shoelace formula's."""
    from decal.dali_pipes.coco.compiler import polygon_part_areas

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 30, 500)
    xy = rng.uniform(0, 640, (int(lengths.sum()), 2))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    whole = polygon_part_areas(xy[:, 0], xy[:, 1], starts, lengths, chunk=1 << 30)
    for chunk in (1, 7, 64, 1000):
        np.testing.assert_array_equal(polygon_part_areas(xy[:, 0], xy[:, 1], starts, lengths, chunk=chunk), whole)
    for p in (0, 17, 499):
        x, y = xy[starts[p] : starts[p] + lengths[p]].T
        assert whole[p] == pytest.approx(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)), rel=1e-12)


def test_image_category_ids_are_the_records(tmp_path) -> None:
    """Read from the index, per image: the non-crowd category ids its record gives."""
    json_path, image_dir = write_coco_dataset(tmp_path, num_images=12, instances_per_image=(0, 6), seed=3)
    ds = CocoDataset(json_path, image_dir)
    assert any(a.iscrowd for r in ds.records for a in r.annotations)
    assert ds.image_category_ids() == [r.category_ids for r in ds.records]
    assert any(not ids for ids in ds.image_category_ids())  # image 0 has no instance
