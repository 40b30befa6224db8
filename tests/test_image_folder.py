"""The ImageFolder reader and the host-side RandomResizedCrop draw (torchvision semantics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from decal.dali_pipes.core.errors import DatasetError
from decal.dali_pipes.folder.source import random_resized_crop_params
from decal.dali_pipes.folder.image_folder import ImageFolder, ensure_demo_image_folder

from folder_factory import corrupt_jpeg, write_image_folder


def test_classes_are_sorted_subdirectories_and_files_recursive(tmp_path: Path) -> None:
    for name in ("zebra", "ant", "Moth"):
        (tmp_path / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "zebra" / "b.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "zebra" / "A.PNG")
    (tmp_path / "ant" / "deep" / "er").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ant" / "deep" / "er" / "x.jpeg")
    (tmp_path / "ant" / "notes.txt").write_text("hello")
    (tmp_path / "ant" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "stray.jpg").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    folder = ImageFolder(tmp_path)
    assert folder.classes == ["Moth", "ant", "zebra"]  # sorted like torchvision (case-sensitive)
    assert folder.class_to_idx == {"Moth": 0, "ant": 1, "zebra": 2}
    assert [(p.path.relative_to(tmp_path).as_posix(), p.label) for p in folder.samples] == [
        ("ant/deep/er/x.jpeg", 1),
        ("zebra/A.PNG", 2),
        ("zebra/b.jpg", 2),
    ]
    assert folder.targets.tolist() == [1, 2, 2]
    assert folder.stats.empty_classes == ["Moth"]
    assert folder.stats.ignored_files == 3  # notes.txt, .hidden.jpg, stray.jpg in root


def test_unlabelled_lists_every_image(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=2, per_class=2, labelled=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "top.jpg")
    folder = ImageFolder(tmp_path, labelled=False)
    assert len(folder) == 5 and set(folder.targets.tolist()) == {-1}
    assert folder.classes == []


def test_listing_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "flat.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no class sub-directory"):
        ImageFolder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="no image files") as caught:
        ImageFolder(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_read_image_header_size_and_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    Image.new("RGB", (31, 17)).save(tmp_path / "c" / "good.jpg")
    (tmp_path / "c" / "text.jpg").write_text("not an image at all")
    (tmp_path / "c" / "empty.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "c" / "anim.webp")
    Image.new("P", (4, 4)).save(tmp_path / "c" / "fake.png", format="GIF")
    folder = ImageFolder(tmp_path)
    names = [p.path.name for p in folder.samples]
    encoded, size = folder.read_image(names.index("good.jpg"))
    assert size == (17, 31) and encoded.dtype == np.uint8 and encoded[:2].tolist() == [0xFF, 0xD8]
    folder.read_image(names.index("anim.webp"))
    for name, reason in [("text.jpg", "not a readable image"), ("empty.png", "empty file"), ("fake.png", "unsupported image format: GIF")]:
        with pytest.raises(DatasetError, match=reason) as caught:
            folder.read_image(names.index(name))
        assert str(tmp_path / "c" / name) in str(caught.value) and caught.value.file == str(tmp_path / "c" / name)


def test_verify_raise_or_skip_with_counts(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=2, per_class=2)
    (tmp_path / "class_0" / "bad.jpg").write_text("garbage")
    (tmp_path / "class_1" / "bad.png").write_text("garbage")
    with pytest.raises(DatasetError, match="bad.jpg"):
        ImageFolder(tmp_path, verify=True)
    folder = ImageFolder(tmp_path, verify=True, on_error="skip")
    assert len(folder) == 4
    assert folder.stats.skipped_images == {"not a readable image": 2}
    assert ImageFolder(tmp_path).__len__() == 6  # lazy listing keeps them (the loaders check)


def test_decode_check_finds_corrupt_data(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=1, per_class=2)
    victim = tmp_path / "class_0" / "img_1.jpg"
    corrupt_jpeg(victim)
    folder = ImageFolder(tmp_path)
    assert folder.decode_check(0) is None
    folder.read_image(1)  # the header still parses
    problem = folder.decode_check(1)
    assert problem is not None and str(victim) in str(problem)


def test_demo_folder_has_two_classes_of_real_photos() -> None:
    folder = ImageFolder(ensure_demo_image_folder())
    assert folder.classes == ["arc2017", "voc"] and len(folder) == 6
    for index in range(len(folder)):
        assert folder.decode_check(index) is None


# -- RandomResizedCrop windows ---------------------------------------------------------------


def test_rrc_fallback_is_torchvision_central_crop() -> None:
    """No try can fit: the deterministic fallback equals torchvision's exactly."""
    rng = np.random.default_rng(0)
    for height, width, scale, ratio in [
        (10, 1000, (0.9, 1.0), (3 / 4, 4 / 3)),  # too wide: h = H, w = round(H * max ratio)
        (1000, 10, (0.9, 1.0), (3 / 4, 4 / 3)),  # too tall: w = W, h = round(W / min ratio)
        (100, 100, (1.0, 1.0), (2.0, 3.0)),  # ratio excludes the square: clamped
    ]:
        ours = random_resized_crop_params(rng, [height], [width], scale, ratio)[0]
        i, j, h, w = T.RandomResizedCrop.get_params(torch.zeros(3, height, width), list(scale), list(ratio))
        assert ours.tolist() == [j, i, w, h]


def test_rrc_windows_follow_torchvision_rules() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    heights = rng.integers(20, 400, n)
    widths = np.rint(heights * rng.uniform(0.9, 1.1, n)).astype(np.int64)  # a try always fits in practice
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    crops = random_resized_crop_params(rng, heights, widths, scale, ratio)
    x, y, w, h = crops.T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= widths).all() and (y + h <= heights).all()
    assert (w > 0).all() and (h > 0).all()
    # rounding of w, h moves area and aspect by at most half a pixel per side
    area = w * h / (heights * widths)
    slack = (w + h + 1) / (2 * heights * widths) * 2
    assert (area <= scale[1] + slack).all() and (area >= scale[0] - slack).all()
    aspect = w / h
    assert (aspect >= ratio[0] * (1 - 1 / np.minimum(w, h)) - 1e-9).all()
    assert (aspect <= ratio[1] * (1 + 1 / np.minimum(w, h)) + 1e-9).all()


def test_rrc_distribution_matches_torchvision() -> None:
    """Same distribution of the area fraction and aspect as torchvision's get_params."""
    height, width, n = 120, 200, 3000
    rng = np.random.default_rng(2)
    ours = random_resized_crop_params(rng, [height] * n, [width] * n, (0.2, 1.0))
    torch.manual_seed(0)
    theirs = np.array([T.RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    ours_area = ours[:, 2] * ours[:, 3] / (height * width)
    theirs_area = theirs[:, 2] * theirs[:, 3] / (height * width)
    assert abs(ours_area.mean() - theirs_area.mean()) < 0.02
    assert abs(np.log(ours[:, 2] / ours[:, 3]).mean() - np.log(theirs[:, 3] / theirs[:, 2]).mean()) < 0.02
    assert abs(np.median(ours[:, 0]) - np.median(theirs[:, 1])) <= 4
    assert math.isclose(np.mean(ours[:, 1] == 0), np.mean(theirs[:, 0] == 0), abs_tol=0.03)
