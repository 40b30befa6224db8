"""The reader under hostile input: every failure is a DatasetError naming file, id and field
and honouring ``on_error`` (pixel limit, int64 ids, deep nesting, misspelt fields, a missing
image directory), plus a property test over random json shapes."""

from __future__ import annotations

import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from coco_factory import write_images, write_json
from decal.dali_pipes.coco.reader import DEFAULT_MAX_IMAGE_PIXELS, CocoDataset
from decal.dali_pipes.core.errors import DatasetError
from decal.dali_pipes.coco.image_header import read_image_header

H, W = 24, 32


def _coco(**image_kw) -> dict:
    image = {"id": 1, "file_name": "a.jpg", "width": W, "height": H, **image_kw}
    return {
        "images": [image, {"id": 2, "file_name": "b.jpg", "width": W, "height": H}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 9]], "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 1, "segmentation": [[3, 3, 13, 3, 13, 10]], "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _write(tmp_path: Path, coco: dict) -> tuple[Path, Path]:
    images = tmp_path / "images"
    write_images({"images": [i for i in coco["images"] if i.get("width") == W and i.get("height") == H]}, images)
    return write_json(tmp_path / "inst.json", coco), images


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is patched to claim ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (W, H), (90, 120, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ----------------------------------------------------------------------------- image header


def test_read_image_header_jpeg_png_and_garbage() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (33, 17)).save(buffer, format="PNG")
    assert read_image_header(buffer.getvalue()) == ("PNG", 33, 17)
    assert read_image_header(_jpeg_claiming(20000, 10000)) == ("JPEG", 20000, 10000)
    assert read_image_header(b"\xff\xd8\xff") is None
    assert read_image_header(b"GIF89a....") is None


# ----------------------------------------------------------------------------- pixel limit


def test_header_over_the_pixel_limit_is_a_dataset_error_not_a_pillow_bomb(tmp_path: Path) -> None:
    """The json says 32x24, the file's header claims 20000x10000 (200 MP, over Pillow's bomb
    threshold): a DatasetError naming the file, image and field, from the header alone."""
    j, d = _write(tmp_path, _coco())
    (d / "a.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    dataset = CocoDataset(j, d)
    with pytest.raises(DatasetError) as error:
        dataset.read_image_bytes(0)
    assert error.value.file == str(d / "a.jpg") and error.value.image_id == 1 and error.value.field == "width"
    assert "too many pixels" in str(error.value) and "20000x10000" in str(error.value)
    problem = dataset.decode_check(0)
    assert isinstance(problem, DatasetError) and "too many pixels" in problem.reason


def test_json_size_over_the_pixel_limit_raises_or_is_counted(tmp_path: Path) -> None:
    coco = _coco(width=20000, height=10000)
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, d)
    assert error.value.image_id == 1 and error.value.field == "width" and "max_image_pixels" in str(error.value)
    skipped = CocoDataset(j, d, on_error="skip")
    assert [r.image_id for r in skipped.records] == [2]
    assert skipped.stats.skipped_images == {"too_many_pixels": 1}


def test_max_image_pixels_is_an_option(tmp_path: Path) -> None:
    j, d = _write(tmp_path, _coco())
    with pytest.raises(DatasetError, match="max_image_pixels=100"):
        CocoDataset(j, d, max_image_pixels=100)
    assert len(CocoDataset(j, d, max_image_pixels=W * H)) == 2
    # None lifts the limit, Pillow's bomb check included: only format and size are judged
    (d / "a.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    unlimited = CocoDataset(j, d, max_image_pixels=None)
    with pytest.raises(DatasetError, match="json says width"):
        unlimited.read_image_bytes(0)
    with pytest.raises(ValueError, match="max_image_pixels"):
        CocoDataset(j, d, max_image_pixels=0)
    assert DEFAULT_MAX_IMAGE_PIXELS > 640 * 640


def test_loader_skips_an_image_over_the_pixel_limit(tmp_path: Path) -> None:
    """on_error="skip": the epoch goes on without the image and the skip is counted."""
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    j, d = _write(tmp_path, _coco())
    (d / "a.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    loader = CopyPasteLoader(j, d, batch_size=1, output_size=32, device="cpu", on_error="skip", shuffle=False)
    ids = [int(t["image_id"]) for batch in loader for t in batch.targets]
    assert ids == [2]
    assert loader.stats["skipped_images"] == {"too many pixels": 1}


# ----------------------------------------------------------------------------- ids and nesting


@pytest.mark.parametrize(
    "where, value, field, image_id, annotation_id",
    [
        ("image", 2**64 + 1, "id", None, None),
        ("annotation", 2**70, "id", 1, None),
        ("category", 2**70, "id", None, None),
        ("category_id", 2**70, "category_id", 1, 10),
    ],
)
def test_ids_beyond_int64_are_refused_at_load(tmp_path: Path, where, value, field, image_id, annotation_id) -> None:
    coco = _coco()
    if where == "image":
        coco["images"][0]["id"] = coco["annotations"][0]["image_id"] = value
    elif where == "annotation":
        coco["annotations"][0]["id"] = value
    elif where == "category":
        coco["categories"].append({"id": value, "name": "huge"})
    else:
        coco["annotations"][0]["category_id"] = value
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, d)
    assert error.value.field == field and error.value.image_id == image_id and error.value.annotation_id == annotation_id
    assert error.value.file == str(j)
    if where != "category":  # categories are the file's frame: always raise
        kept = CocoDataset(j, d, on_error="skip")
        assert [r.image_id for r in kept.records] == [2]
        assert sum(kept.stats.skipped_images.values()) + sum(kept.stats.dropped_instances.values()) >= 1


def test_deeply_nested_json_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DatasetError, match="nested too deeply") as error:
        CocoDataset(path, tmp_path / "images")
    assert error.value.file == str(path)
    coco = _coco()
    deep: list = []
    for _ in range(900):  # within the json parser's limit, deeper than any COCO value
        deep = [deep]
    coco["annotations"][0]["segmentation"] = deep
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, d)
    assert error.value.annotation_id == 10 or "nested" in str(error.value)


# ----------------------------------------------------------------------------- misspelt fields


def test_misspelt_segmentation_is_an_error_unless_box_only(tmp_path: Path) -> None:
    coco = _coco()
    ann = coco["annotations"][0]
    ann["segmentaton"] = ann.pop("segmentation")
    ann["bbox"] = [2, 2, 10, 7]
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, d)
    assert error.value.annotation_id == 10 and error.value.image_id == 1 and error.value.field == "segmentation"
    assert "missing segmentation" in str(error.value) and "paste_by_box" in str(error.value)
    assert CocoDataset(j, d, on_error="skip").stats.skipped_images == {"invalid_segmentation": 1}
    boxes = CocoDataset(j, d, require_segmentation=False)
    assert boxes[0].annotations[0].segmentation is None


def test_paste_by_box_loader_accepts_box_only_data(tmp_path: Path) -> None:
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoader

    coco = _coco()
    for ann in coco["annotations"]:
        del ann["segmentation"]
        ann["bbox"] = [2, 2, 10, 7]
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError, match="segmentation"):
        CopyPasteLoader(j, d, batch_size=1, output_size=32, device="cpu")
    loader = CopyPasteLoader(j, d, batch_size=1, output_size=32, device="cpu", paste_by_box=True)
    assert len(loader.dataset) == 2


def test_misspelt_category_id_says_the_field_is_missing(tmp_path: Path) -> None:
    coco = _coco()
    coco["annotations"][0]["catgory_id"] = coco["annotations"][0].pop("category_id")
    j, d = _write(tmp_path, coco)
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, d)
    assert error.value.field == "category_id" and error.value.annotation_id == 10
    assert "missing category_id" in str(error.value) and "None" not in str(error.value)


# ----------------------------------------------------------------------------- image directory


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_missing_image_directory_is_one_error_at_load(tmp_path: Path, on_error: str) -> None:
    j = write_json(tmp_path / "inst.json", _coco())
    with pytest.raises(DatasetError) as error:
        CocoDataset(j, tmp_path / "no-such-dir", on_error=on_error)
    assert error.value.file == str(tmp_path / "no-such-dir") and error.value.field == "images"
    assert "image directory not found" in str(error.value)


# ----------------------------------------------------------------------------- property test

_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
)  # fmt: skip
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12)
_SIZE = st.integers(0, 3).flatmap(lambda i: [st.just(W), st.just(H), st.sampled_from([0, -1, 2**64, 20000, 8.0]), _JSON_SCALARS][i])
_ID = st.one_of(st.integers(min_value=1, max_value=4), st.sampled_from([2**63, -(2**63) - 1, 2**70]), _JSON_SCALARS)
_GOOD_ID = st.integers(min_value=1, max_value=4)
_POLYGON = st.lists(st.floats(min_value=-5, max_value=40, allow_nan=False), min_size=0, max_size=10)
_BOX_POLYGON = st.tuples(st.integers(-4, W), st.integers(-4, H), st.integers(1, 12), st.integers(1, 12)).map(
    lambda b: [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]]
)
_SEGMENTATION = st.one_of(
    _BOX_POLYGON,
    st.lists(_POLYGON, max_size=3),
    st.fixed_dictionaries({"size": st.sampled_from([[H, W], [W, H], [1], "x"]), "counts": st.one_of(st.text(max_size=8), st.lists(st.integers(-3, W * H), max_size=4))}),
    _JSON,
)  # fmt: skip


def _mostly(good: st.SearchStrategy, anything: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """``good`` ``weight`` times in ``weight + 1``, else ``anything``."""
    return st.integers(0, weight).flatmap(lambda i: anything if i == weight else good)


def _maybe(entries: dict, required: dict | None = None) -> st.SearchStrategy:
    """A dict drawing each key's value; the ``entries`` keys possibly missing."""
    return st.fixed_dictionaries(required or {}, optional=entries)


_IMAGE = _mostly(
    _maybe(
        {"coco_url": st.sampled_from(["http://x/train2017/a.jpg", "http://x/", "a.jpg"])},
        {"id": _mostly(_GOOD_ID, _ID, 7), "width": _SIZE, "height": _SIZE,
         "file_name": _mostly(st.sampled_from(["a.jpg", "b.png", "huge.jpg"]), st.sampled_from(["gone.jpg", "", "/abs.jpg", "nul\x00.jpg", 7]))},
    ),
    _JSON,
    7,
)  # fmt: skip
_ANNOTATION = _mostly(
    _maybe(
        {"iscrowd": st.one_of(st.sampled_from([0, 1]), _JSON_SCALARS), "segmentaton": _JSON,
         "bbox": st.one_of(st.lists(st.floats(min_value=-5, max_value=50), min_size=4, max_size=4), _JSON)},
        {"id": _mostly(st.integers(1, 10**6), _ID, 7), "image_id": _mostly(_GOOD_ID, _ID, 7), "category_id": _mostly(st.integers(1, 2), _ID, 7),
         "segmentation": _mostly(_BOX_POLYGON, _SEGMENTATION)},
    ),
    _JSON,
    7,
)  # fmt: skip
_CATEGORIES = _mostly(st.just([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]), st.lists(_maybe({"id": _ID, "name": st.text(max_size=3)}), max_size=3))
_DOCUMENT = _mostly(
    _maybe({}, {"images": _mostly(st.lists(_IMAGE, min_size=1, max_size=4), _JSON), "annotations": _mostly(st.lists(_ANNOTATION, min_size=1, max_size=5), _JSON),
                "categories": _CATEGORIES}),
    _JSON,
)  # fmt: skip


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-images")
    Image.new("RGB", (W, H), (10, 200, 40)).save(root / "a.jpg", format="JPEG")
    Image.new("RGB", (W, H), (200, 10, 40)).save(root / "b.png", format="PNG")
    (root / "train2017").mkdir()
    (root / "train2017" / "a.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    (root / "huge.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    return root


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=_DOCUMENT, on_error=st.sampled_from(["raise", "skip"]))
def test_random_json_gives_a_dataset_error_or_a_valid_dataset(image_root: Path, document, on_error: str) -> None:
    """Whatever the json holds: a DatasetError (naming the file), or a dataset whose every
    record reads as a DatasetError or as bytes, and rasterises to (H, W, N) uint8 masks."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inst.json"
        path.write_text(json.dumps(document))
        try:
            dataset = CocoDataset(path, image_root, on_error=on_error)
        except DatasetError as error:
            assert error.file in (str(path), str(image_root)) or error.file.startswith(str(image_root))
            return
    for index, record in enumerate(dataset.records):
        assert isinstance(record.image_id, int) and -(2**63) <= record.image_id < 2**63
        try:
            data = dataset.read_image_bytes(index)
        except DatasetError as error:
            assert error.image_id == record.image_id and error.field is not None
        else:
            assert data.dtype == np.uint8 and data.ndim == 1
        masks = dataset.rasterize_masks(index)
        assert masks.shape == (record.height, record.width, len(record.annotations)) and masks.dtype == np.uint8
        for ann in record.annotations:
            assert -(2**63) <= ann.ann_id < 2**63 and ann.category_id in dataset.categories


# ----------------------------------------------------------------------------- image folders


def _folder_with_a_bomb(root: Path) -> Path:
    """Two real small JPEGs and one whose header claims 20000x10000 (over Pillow's bomb limit)."""
    root.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (W, H), (10, 200, 30)).save(root / name, format="JPEG")
    (root / "c_huge.jpg").write_bytes(_jpeg_claiming(20000, 10000))
    return root


def test_unlabelled_directory_refuses_or_counts_an_image_over_the_pixel_limit(tmp_path: Path) -> None:
    """Self-training's second set: Pillow's DecompressionBombError never escapes."""
    from decal.dali_pipes.self_training.second_set import ImageDirectoryDataset

    root = _folder_with_a_bomb(tmp_path / "unlabelled")
    with pytest.raises(DatasetError) as error:
        ImageDirectoryDataset(root)
    assert "c_huge.jpg" in str(error.value) and "too many pixels" in str(error.value)
    dataset = ImageDirectoryDataset(root, on_error="skip")
    assert len(dataset) == 2
    assert dataset.stats.skipped_images == {"too_many_pixels": 1}


def test_image_folder_names_an_image_over_the_pixel_limit(tmp_path: Path) -> None:
    """CutMix / CP² folders: the header read and the decode check both give a DatasetError."""
    from decal.dali_pipes.folder.image_folder import ImageFolder

    folder = ImageFolder(_folder_with_a_bomb(tmp_path / "folder"), labelled=False)
    huge = [i for i, s in enumerate(folder.samples) if s.path.name == "c_huge.jpg"][0]
    with pytest.raises(DatasetError) as error:
        folder.read_image(huge)
    assert "c_huge.jpg" in str(error.value) and "too many pixels" in str(error.value)
    problem = folder.decode_check(huge)
    assert isinstance(problem, DatasetError) and "too many pixels" in str(problem)
