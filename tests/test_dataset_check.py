"""``decal check``: every image header, size, annotation field and category checked up
front; a summary table; exit status 0 clean, 1 data errors, 2 usage errors."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from coco_factory import build_coco_dict, write_images, write_json
from decal.cli import main
from decal.dali_pipes.coco.check import check_dataset


def _dataset(root: Path, mutate=None) -> tuple[Path, Path]:
    coco = build_coco_dict(6, instances_per_image=(1, 3), seed=1)
    image_dir = root / "images"
    write_images(coco, image_dir)
    if mutate is not None:
        mutate(coco, image_dir)
    return write_json(root / "annotations.json", coco), image_dir


def test_clean_dataset_passes_with_a_table(tmp_path: Path, capsys) -> None:
    annotations, images = _dataset(tmp_path)
    assert main(["check", str(annotations), str(images)]) == 0
    out = capsys.readouterr().out
    assert "images in json" in out and "image files checked" in out and "categories used" in out
    assert out.strip().endswith("OK")
    report = check_dataset(annotations, images, decode=True)
    assert report.ok and report.counts["images usable"] == 6 and report.counts["categories"] == 3


def test_every_problem_is_counted_and_named(tmp_path: Path, capsys) -> None:
    def plant(coco: dict, image_dir: Path) -> None:
        (image_dir / coco["images"][1]["file_name"]).unlink()                  # missing file
        entry = coco["images"][2]                                               # header size disagrees with the json
        Image.new("RGB", (entry["width"] + 5, entry["height"])).save(image_dir / entry["file_name"], format="JPEG")
        Image.new("RGB", (8, 8)).save(image_dir / coco["images"][3]["file_name"], format="BMP")  # not JPEG/PNG
        first = next(a for a in coco["annotations"] if a["image_id"] == 5)
        first["catgory_id"] = first.pop("category_id")                          # typo
        second = next(a for a in coco["annotations"] if a["image_id"] == 6)
        second["segmentaton"] = second.pop("segmentation")                      # typo
        coco["categories"][0]["frequency"] = "x"

    annotations, images = _dataset(tmp_path, plant)
    assert main(["check", str(annotations), str(images)]) == 1
    out = capsys.readouterr().out
    report = check_dataset(annotations, images)
    assert not report.ok
    assert report.errors["skipped_missing_file"] == 1
    assert report.errors["misspelt_category_id"] == 1 and report.errors["misspelt_segmentation"] == 1
    assert report.errors["invalid_frequency"] == 1
    assert report.errors["image_width"] == 1 and report.errors["unreadable_image"] == 1
    assert "did you mean 'segmentation'?" in out and "did you mean 'category_id'?" in out
    assert f"{images / 'img_000002.jpg'}: image 2: field 'file_name': image file not found" in out
    assert "image 3: field 'width'" in out and "unsupported image format 'BMP'" in out
    assert "FAILED" in out.splitlines()[-1]


def test_unusable_json_is_a_data_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    (tmp_path / "images").mkdir()
    assert main(["check", str(bad), str(tmp_path / "images")]) == 1
    assert "missing top-level key 'annotations'" in capsys.readouterr().out


def test_paths_that_are_not_there_are_usage_errors(tmp_path: Path, capsys) -> None:
    annotations, images = _dataset(tmp_path)
    for argv, name in (
        (["check", str(tmp_path / "nope.json"), str(images)], "ANNOTATIONS"),
        (["check", str(annotations), str(tmp_path / "nope")], "IMAGES"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err
