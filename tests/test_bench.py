"""The benchmark's CPU half runs end to end (tiny sizes), writes JSON, a PNG and a Markdown
table, and its mmdetection-style baseline does what mmdetection's CopyPaste does."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from decal.bench import mmdet_baseline as mb
from decal.bench.data import make_bench_dataset
from decal.bench.throughput import add_bench_parser, main, ratios


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    return make_bench_dataset(tmp_path_factory.mktemp("bench") / "data", 8, seed=3)


def test_dataset_is_coco_like(bench_data) -> None:
    coco = json.loads(bench_data[0].read_text())
    counts = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=9)[1:]
    assert len(coco["images"]) == 8 and counts.min() >= 1 and counts.max() <= 51
    for img in coco["images"]:
        with Image.open(bench_data[1] / img["file_name"]) as im:
            assert im.format == "JPEG" and im.size == (img["width"], img["height"])
            assert 400 <= min(im.size) and max(im.size) <= 720
    assert make_bench_dataset(bench_data[0].parent, 8, seed=3) == bench_data  # cached


def test_cpu_half_end_to_end(bench_data, tmp_path) -> None:
    out = tmp_path / "out"
    results_md = tmp_path / "RESULTS.md"
    status = main([
        "--cpu", "--modes", "pipeline_cpu,pipeline_cpu_gpumasks,baseline,masks", "--data", str(bench_data[0].parent),
        "--num-images", "8", "--cpu-batch-size", "2", "--cpu-batches", "1", "--warmup", "0",
        "--output-size", "64", "--threads", "1", "--out", str(out), "--append-results", str(results_md), "--seed", "3",
    ])
    assert status == 0
    result = json.loads((out / "throughput-cpu.json").read_text())
    assert set(result["modes"]) == {"pipeline_cpu", "pipeline_cpu_gpumasks", "baseline", "masks"}
    for mode in ("pipeline_cpu", "pipeline_cpu_gpumasks", "baseline"):
        assert result["modes"][mode]["images_per_s"] > 0 and result["modes"][mode]["images"] == 2
    masks = result["modes"]["masks"]
    assert 0 <= masks["subpixel_vs_exact"]["rate"] < 0.2
    assert masks["traffic_model_total_bytes"]["gpu_raster_fused"] < masks["traffic_model_total_bytes"]["dali_masks_unfused"]
    with Image.open(out / "throughput-cpu.png") as im:
        assert im.size[0] == 900
    text = results_md.read_text()
    assert "(d) DataLoader + mmdet-style NumPy" in text and "Command: `python -m decal.bench.throughput --cpu" in text


def test_add_bench_parser_and_ratios() -> None:
    parser = argparse.ArgumentParser(prog="decal")
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--cpu", "--batch-size", "8"])
    assert args.func.__name__ == "run_from_args" and args.cpu and args.batch_size == 8
    r = ratios({"decode_gpu": {"images_per_s": 100.0}, "pipeline_gpu": {"images_per_s": 90.0},
                "pipeline_cpu": {"images_per_s": 3.0}, "baseline": {"images_per_s": 2.0}})
    assert r == {"b_over_a": 0.9, "b_over_best_cpu": 30.0}


def test_mmdet_style_copy_paste_semantics(bench_data) -> None:
    ds = mb.MMDetStyleCopyPaste(*bench_data, output_size=96, seed=0)
    rng = np.random.default_rng(0)
    dst = ds.load(0, rng)
    assert dst["img"].shape == (96, 96, 3) and dst["masks"].shape[1:] == (96, 96)
    np.testing.assert_array_equal(dst["boxes"], mb._boxes(dst["masks"]))
    # a full-frame pasted instance occludes every destination instance; one survives only by
    # mmdetection's box rule (its emptied box (0, 0, 0, 0) within 10 px of the old one)
    src = {"img": np.zeros((96, 96, 3), np.uint8), "masks": np.ones((1, 96, 96), np.uint8),
           "boxes": np.array([[0, 0, 96, 96]], np.float32), "labels": np.array([7])}
    for seed in range(10):
        out = ds.copy_paste(dst, src, np.random.default_rng(seed))
        if out is not dst:
            assert out["labels"][-1] == 7 and not out["img"].any()
            assert not out["masks"][:-1].any()
            kept = dst["boxes"][np.abs(dst["boxes"]).max(axis=1) <= 10]
            assert len(out["labels"]) == len(kept) + 1
            break
    else:
        pytest.fail("never pasted")
    image, target = ds[1]
    assert image.shape == (3, 96, 96) and target["masks"].shape[0] == target["labels"].shape[0]
    batch = mb.collate([ds[2], ds[3]])
    assert batch[0].shape == (2, 3, 96, 96) and len(batch[1]) == 2


def test_a_stopped_run_keeps_the_finished_modes(bench_data, tmp_path, monkeypatch) -> None:
    """`bench/gpu_check.sh` stops the bench at its time limit: every finished mode is on disk."""
    import decal.bench.throughput as tp

    def stopped(args, data):
        raise KeyboardInterrupt  # the run stops inside this mode (gpu_check: SIGTERM ends the process)

    monkeypatch.setitem(tp.MODES, "baseline", stopped)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main(["--cpu", "--modes", "masks,baseline", "--data", str(bench_data[0].parent), "--num-images", "8",
              "--output-size", "64", "--batch-size", "4", "--out", str(out), "--seed", "3"])
    partial = json.loads((out / "throughput-cpu.json").read_text())
    assert partial["partial"] is True and list(partial["modes"]) == ["masks"]
    assert partial["modes"]["masks"]["subpixel_vs_exact"]["object_pixels"] > 0


def test_mmdet_row_runs_or_says_why_and_scaling_interleaves(bench_data, tmp_path) -> None:
    from bench import mmdet_real

    out = tmp_path / "out"
    code = main([
        "--cpu", "--modes", "mmdet,cpu_scaling", "--data", str(bench_data[0].parent), "--num-images", "8",
        "--cpu-batch-size", "3", "--cpu-batches", "1", "--warmup", "0", "--output-size", "64", "--cores", "1",
        "--rounds", "1", "--out", str(out), "--append-results", str(tmp_path / "RESULTS.md"),
    ])
    assert code == 0
    result = json.loads((out / "throughput-cpu.json").read_text())
    row, scaling = result["modes"]["mmdet"], result["modes"]["cpu_scaling"]
    reason = mmdet_real.skip_reason()
    if reason is None:
        assert row["images_per_s"] > 0 and row["images"] == 3 and row["versions"].startswith("mmdet 3.")
        assert scaling["rows"][0]["decal_over_mmdet"] > 0
    else:
        assert row == {"skipped": reason, "wall_s": row["wall_s"]} and "pip install mmdet" in reason
        assert scaling["skipped"] == {"mmdet": reason}
    first = scaling["rows"][0]
    assert first["cores"] == 1 and first["pipeline_cpu_images_per_s"] > 0 and first["baseline_images_per_s"] > 0
    assert len(first["pipeline_cpu_rounds"]) == 1 and first["decal_over_baseline"] > 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| (e) DataLoader + mmdetection's own pipeline |" in text
    assert "| cores | (c) decal CPU | (d) mmdet-style | (e) mmdetection | decal / (d) | decal / (e) |" in text
    assert f"| 1 | {first['pipeline_cpu_images_per_s']} | {first['baseline_images_per_s']} |" in text
