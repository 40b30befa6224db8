"""The benchmark's host mode runs end to end on tiny sizes (plumbing only: no timing is
asserted), and the LVIS-sized generator writes a valid LVIS-style json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from decal.bench.data import make_bench_dataset
from decal.bench.host import main
from decal.bench.lvis_synth import make_lvis_like
from decal.bench.throughput import main as throughput_main

from decal.dali_pipes.coco.reader import CocoDataset


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("host") / "data"
    make_bench_dataset(root, 8, seed=0)
    return root


#: The family rows of the host mode: every copy-paste-family loader's source.
FAMILIES = ("CopyPasteLoader", "BalancedCopyPasteLoader", "SelfTrainingLoader (second set: image directory)", "MosaicLoader")


def check_family_rows(families: dict, *, batch_size: int, batches: int) -> None:
    """Every family has a row for host masks and for descriptors, each with positive rates over
    whole batches; a copy-paste, balanced or self-training sample reads one file, a mosaic
    sample 1 (single image) to 4 (2×2 mosaic)."""
    assert set(families) == set(FAMILIES)
    for name, by_masks in families.items():
        assert set(by_masks) == {"host", "descriptors"}, name
        for masks, row in by_masks.items():
            timed = max(1, batches // 10) if masks == "host" else batches
            assert row["images"] == timed * batch_size, (name, masks)  # the 8 images wrap in whole batches
            assert row["samples"] > 0 and row["samples"] % batch_size == 0, (name, masks)
            assert row["cpu_s"] > 0 and row["wall_s"] > 0, (name, masks)
            assert row["images_per_cpu_s"] > 0 and row["images_per_wall_s"] > 0, (name, masks)
            if name == "MosaicLoader":
                assert 1.0 <= row["files_per_sample"] <= 4.0
            else:
                assert row["files_per_sample"] == 1.0, (name, masks)


def test_host_mode_end_to_end(bench_dir, tmp_path) -> None:
    out, results_md = tmp_path / "out", tmp_path / "RESULTS.md"
    status = main([
        "--data", str(bench_dir), "--num-images", "8", "--cpu-batch-size", "4", "--output-size", "64",
        "--host-batches", "2", "--host-workers", "1", "--main-thread-batches", "2", "--lvis-images", "40", "--lvis-instances", "300",
        "--lvis-ab-rounds", "1",
        "--lvis-root", str(tmp_path / "lvis"), "--out", str(out), "--append-results", str(results_md),
    ])
    assert status == 0
    result = json.loads((out / "host.json").read_text())
    per_thread = result["host"]["per_thread"]
    assert set(per_thread) == {"CopyPasteSource", "GpuMaskCopyPasteSource", "GpuMaskCopyPasteSource.columns"}
    # 8 images in full batches of 4: every figure counts whole batches
    assert per_thread["GpuMaskCopyPasteSource"]["images"] == 8 and per_thread["CopyPasteSource"]["images"] == 4
    assert [w["workers"] for w in result["host"]["workers"]] == [0, 1]
    main_thread = result["host"]["main_thread"]
    assert set(main_thread) == {"GpuMaskCopyPasteLoader", "CopyPasteLoader (host masks)"}
    for cost in main_thread.values():  # 2 timed batches of 4 after 2 untimed (the epoch wraps)
        assert cost["batches"] == 2 and cost["images"] == 8
        assert cost["ms_per_batch"] > 0 and cost["source_ms"] > 0 and cost["to_batch_ms"] > 0
    assert all(w["images"] == 8 for w in result["host"]["workers"])
    check_family_rows(result["host"]["families"], batch_size=4, batches=2)
    lvis = result["lvis"]
    assert lvis["pycocotools"]["instances"] == 300
    assert lvis["build"]["images"] == 40 and lvis["build"]["instances"] == 300
    assert lvis["reopen"]["images"] == 2 * 4 and lvis["reopen"]["open_s"] >= 0
    assert lvis["reopen"]["memory_mib"]["rss"] > 0
    assert lvis["json"]["load_s"] >= 0
    assert len(lvis["ab_rounds"]) == 1 and lvis["ab_rounds"][0]["build"]["instances"] == 300
    # the loader on the cached index, its source in two spawned workers: each one's memory
    workers = lvis["workers"]
    assert workers["workers"] == 2 and workers["images"] == 2 * 4
    assert len(workers["worker_memory_mib"]) == 2
    assert all(m["rss"] > 0 and m["index"] > 0 for m in workers["worker_memory_mib"])
    # PSS splits shared pages among the processes mapping them; USS is what no other maps
    assert all(0 < m["pss"] <= m["rss"] and 0 < m["uss"] <= m["pss"] for m in workers["worker_memory_mib"])
    assert not any(m["torch"] for m in workers["worker_memory_mib"])  # the source's modules stay torch-free
    text = results_md.read_text()
    assert "Command: `python -m decal.bench.host --data" in text and "index reopen (mmap)" in text
    assert "its source worker 2 of 2" in text and "Alternating rounds" in text
    assert "no GPU" in text and "main-thread ms per batch" in text
    family_lines = [line for line in text.splitlines() if line.split(" | ")[0].lstrip("| ") in FAMILIES]
    assert sorted(line.split(" | ")[0].lstrip("| ") for line in family_lines) == sorted(FAMILIES)
    assert all(len(line.strip("|").split("|")) == 7 for line in family_lines)  # host, descriptors, files, target


def test_host_mode_in_decal_bench(bench_dir, tmp_path) -> None:
    status = throughput_main([
        "--modes", "host", "--data", str(bench_dir), "--num-images", "8", "--cpu-batch-size", "2",
        "--output-size", "64", "--out", str(tmp_path), "--seed", "0", "--main-thread-batches", "1",
    ])
    assert status == 0
    host = json.loads((tmp_path / "throughput-cpu.json").read_text())["modes"]["host"]
    assert host["images_per_s"] > 0 and [w["workers"] for w in host["workers"]] == [0, 1, 2]
    check_family_rows(host["families"], batch_size=2, batches=40)


def test_host_cli_mistake_exits_2(bench_dir, capsys) -> None:
    assert main(["--data", str(bench_dir), "--num-images", "8", "--host-batches", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--host-batches" in err[0]


def test_host_cli_negative_family_batches_exits_2(bench_dir, capsys) -> None:
    assert main(["--data", str(bench_dir), "--num-images", "8", "--family-batches", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--family-batches" in err[0]


def test_family_rows_can_be_skipped(bench_dir, tmp_path) -> None:
    out = tmp_path / "out"
    status = main(["--data", str(bench_dir), "--num-images", "8", "--cpu-batch-size", "4", "--output-size", "64",
                   "--host-batches", "1", "--host-workers", "", "--main-thread-batches", "0", "--family-batches", "0",
                   "--out", str(out)])  # fmt: skip
    assert status == 0 and "families" not in json.loads((out / "host.json").read_text())["host"]


def test_lvis_like_json_is_valid(tmp_path) -> None:
    json_path, image_dir = make_lvis_like(tmp_path, 50, 400, seed=1)
    coco = json.loads(json_path.read_text())
    assert len(coco["images"]) == 50 and len(coco["annotations"]) == 400
    assert {c["frequency"] for c in coco["categories"]} == {"r", "c", "f"}
    ds = CocoDataset(json_path, image_dir)
    assert sum(len(r.annotations) for r in ds.records) == 400
    assert ds.stats.clipped_instances == 0 and not ds.stats.dropped_instances
    for ann in coco["annotations"][:50]:
        xy = np.array(ann["segmentation"][0]).reshape(-1, 2)
        x, y, w, h = ann["bbox"]
        assert 8 <= len(xy) < 40
        np.testing.assert_allclose([x, y, x + w, y + h], [*xy.min(0), *xy.max(0)], atol=0.011)
        assert ann["area"] > 0
    assert len(ds.read_image_bytes(0)) > 0 and len(ds.read_image_bytes(len(ds) - 1)) > 0
    assert make_lvis_like(tmp_path, 50, 400, seed=1) == (json_path, image_dir)  # cached
