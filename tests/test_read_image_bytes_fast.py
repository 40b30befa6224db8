"""The reader's hot read path (``CocoDataset.read_image_bytes``: cached path and size,
``read_file_bytes``, raw header checks) against the full checked path it short-cuts
(``numpy.fromfile`` + ``CocoDataset._checked_bytes`` on the record, what every read did
before): the same bytes and the same errors for every image, corrupt ones included."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coco_factory import write_coco_dataset, write_images, write_json
from decal.dali_pipes.coco import file_bytes
from decal.dali_pipes.coco.file_bytes import read_file_bytes
from decal.dali_pipes.coco.reader import CocoDataset
from decal.dali_pipes.core.errors import DatasetError

H, W = 40, 60


def _outcome(read) -> tuple:
    """``("bytes", data)`` or ``("error", file, image_id, field, reason)`` of ``read()``
    (Pillow's object addresses in a reason blanked: they differ between two reads)."""
    try:
        data = read()
    except DatasetError as e:
        return ("error", e.file, e.image_id, e.field, re.sub(r"at 0x[0-9a-f]+", "at 0x", e.reason))
    assert data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous
    return ("bytes", data.tobytes())


def _reference(ds: CocoDataset, index: int) -> tuple:
    """The checked path, from the record: how every read went before the hot path."""
    def read() -> np.ndarray:
        rec = ds[index]
        try:
            data = np.fromfile(rec.path, dtype=np.uint8)
        except OSError as e:
            raise DatasetError(rec.path, f"cannot read image file: {e.strerror or e}",
                               image_id=rec.image_id, field="file_name") from e
        return ds._checked_bytes(rec, data)
    return _outcome(read)


def _corrupt_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A json of 13 images of W x H: good JPEG/PNG files and one of every way a file can be bad
    (``missing.jpg`` and ``folder.jpg`` are files for the index to be built; the test then
    deletes the one and turns the other into a directory)."""
    names = ["good.jpg", "good.png", "wide.jpg", "tall.png", "garbage.jpg", "truncated.jpg", "anim.gif",
             "missing.jpg", "folder.jpg", "empty.jpg", "huge.jpg", "sub/nested.jpg", "header_only.png"]
    coco = {"images": [{"id": i + 1, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)],
            "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    d = tmp_path / "images"
    write_images(coco, d)
    Image.new("RGB", (W, H)).save(d / "good.png", format="PNG")
    Image.new("RGB", (W + 1, H)).save(d / "wide.jpg", format="JPEG")
    Image.new("RGB", (W, H + 2)).save(d / "tall.png", format="PNG")
    (d / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    full = (d / "truncated.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    Image.new("RGB", (W, H)).save(d / "anim.gif", format="GIF")
    (d / "empty.jpg").write_bytes(b"")
    Image.new("L", (W, H)).save(d / "huge.jpg", format="JPEG")
    huge = bytearray((d / "huge.jpg").read_bytes())
    sof = huge.index(b"\xff\xc0")
    huge[sof + 5 : sof + 9] = (9000).to_bytes(2, "big") + (9000).to_bytes(2, "big")  # header claims 9000x9000
    (d / "huge.jpg").write_bytes(bytes(huge))
    png = (d / "good.png").read_bytes()
    (d / "header_only.png").write_bytes(png[:33])  # signature + IHDR, no image data
    return write_json(tmp_path / "inst.json", coco), d


@pytest.mark.parametrize("max_image_pixels", [W * H, 10_000_000, None])
def test_hot_path_gives_the_same_bytes_and_errors_as_the_checked_path(tmp_path: Path, max_image_pixels) -> None:
    json_path, image_dir = _corrupt_dataset(tmp_path)
    ds = CocoDataset.open(json_path, image_dir, cache_dir=tmp_path / "cache", max_image_pixels=max_image_pixels)
    (image_dir / "missing.jpg").unlink()  # gone after the index was built
    (image_dir / "folder.jpg").unlink()
    (image_dir / "folder.jpg").mkdir()  # a directory where the file was
    outcomes, reasons = [], []
    for index in range(len(ds)):
        expected = _reference(ds, index)
        for key in (index, np.int64(index), index - len(ds), index):  # the last one: a cache hit
            assert _outcome(lambda: ds.read_image_bytes(key)) == expected, (ds[index].file_name, key)
        outcomes.append(expected[0] if expected[0] == "bytes" else expected[3])
        reasons.append(expected[-1] if expected[0] == "error" else "")
    # the cases are what they claim: good files read, every bad one fails on its own field
    tall = "width" if max_image_pixels == W * H else "height"  # 60x42 is over a limit of 60x40
    assert outcomes[:2] == ["bytes", "bytes"] and outcomes[2:5] == ["width", tall, "file_name"]
    assert outcomes[5] == "bytes" and outcomes[6:10] == ["file_name"] * 4 and outcomes[11] == "bytes"
    assert outcomes[10] == "width"  # a header of 9000x9000: over the limit, else not the json's size
    assert reasons[10].startswith("file is 9000x9000" if max_image_pixels is None else "too many pixels")
    assert outcomes[12] == "bytes"  # the header is all the hot path reads


def test_hot_path_enforces_a_pixel_limit_lowered_after_load(tmp_path: Path) -> None:
    """The json's sizes passed the limit at load; a limit lowered afterwards (or an index
    compiled with another one) is still enforced on the file's header, as before."""
    json_path, image_dir = _corrupt_dataset(tmp_path)
    ds = CocoDataset(json_path, image_dir)
    ds.max_image_pixels = W * H - 1
    for index in (0, 1):  # the good JPEG and PNG
        expected = _reference(ds, index)
        assert expected[0] == "error" and expected[3] == "width" and expected[4].startswith("too many pixels")
        assert _outcome(lambda: ds.read_image_bytes(index)) == expected


def test_hot_path_matches_on_a_generated_dataset_and_after_pickling(tmp_path: Path) -> None:
    json_path, image_dir = write_coco_dataset(tmp_path, num_images=8, seed=5, with_rle=True, with_crowd=True)
    ds = CocoDataset(json_path, image_dir)
    for index in range(len(ds)):
        assert _outcome(lambda: ds.read_image_bytes(index)) == _reference(ds, index)
        assert ds.read_image_bytes(index).tobytes() == ds[index].path.read_bytes()
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._file_entries == {}  # the per-read cache does not travel to a worker
    assert [copy.read_image_bytes(i).tobytes() for i in range(len(ds))] == [
        ds.read_image_bytes(i).tobytes() for i in range(len(ds))]


def test_an_index_out_of_range_is_an_index_error_every_time(tmp_path: Path) -> None:
    json_path, image_dir = write_coco_dataset(tmp_path, num_images=3)
    ds = CocoDataset(json_path, image_dir)
    for _ in range(2):
        with pytest.raises(IndexError, match="out of range"):
            ds.read_image_bytes(3)
    assert ds._file_entries == {}


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 1 << 20])
def test_read_file_bytes_equals_numpy_fromfile(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    got = read_file_bytes(str(path))
    assert got.dtype == np.uint8 and got.shape == (size,) and got.flags.c_contiguous and got.flags.writeable
    assert np.array_equal(got, np.fromfile(path, dtype=np.uint8))


def test_read_file_bytes_keeps_reading_after_a_short_read(tmp_path: Path, monkeypatch) -> None:
    data = np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8)
    path = tmp_path / "f.bin"
    path.write_bytes(data.tobytes())
    real_readv = os.readv
    monkeypatch.setattr(file_bytes.os, "readv", lambda fd, bufs: real_readv(fd, [memoryview(bufs[0])[:777]]))
    assert np.array_equal(read_file_bytes(str(path)), data)


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_read_file_bytes_raises_the_oserror_numpy_raises(tmp_path: Path, make: str) -> None:
    path = tmp_path / "x.jpg"
    if make == "directory":
        path.mkdir()
    with pytest.raises(OSError) as ours:
        read_file_bytes(str(path))
    with pytest.raises(OSError) as numpys:
        np.fromfile(path, dtype=np.uint8)
    assert (type(ours.value), ours.value.errno, ours.value.strerror) == (
        type(numpys.value), numpys.value.errno, numpys.value.strerror)
