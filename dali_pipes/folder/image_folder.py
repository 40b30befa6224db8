"""An ImageFolder-style reader: one sub-directory per class, or one unlabelled tree.

Semantics of ``torchvision.datasets.ImageFolder`` (which timm's ``ReaderImageFolder``
follows too):

* labelled (default): the classes are the immediate sub-directories of ``root``, sorted by
  name; class ``k`` is the k-th of them. Every image file below a class directory (at any
  depth, symbolic links followed) belongs to that class. Files directly in ``root`` are
  ignored (counted in :attr:`FolderStats.ignored_files`).
* unlabelled (``labelled=False``): every image file below ``root`` at any depth, label -1;
  what CP² needs (its foregrounds and backgrounds come from one folder, labels unused).

An image file is one whose extension (case-insensitive) is in ``extensions`` (the formats
DALI's decoder reads); other files and hidden files (names starting with ``.``) are ignored
and counted. Files are listed in sorted path order, so indices are stable across runs.

Bad files: listing never opens a file. :meth:`ImageFolder.read_image` reads the bytes and
parses only the header (PIL, no decoding) for the size that the host-side crop draws need;
a file that cannot be read, is not an image, or is in a format DALI does not decode raises a
:class:`~decal.dali_pipes.core.errors.DatasetError` that names the file. Loaders either raise it
(``on_error="raise"``) or skip the file and count it (``on_error="skip"``). A file whose header
parses but whose data is corrupt fails inside DALI's decoder; the loaders then find the culprit
with :meth:`ImageFolder.decode_check`. ``verify=True`` checks every header up front instead.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.errors import DatasetError, skip_reason

__all__ = ["IMAGE_EXTENSIONS", "DECODABLE_FORMATS", "FolderImage", "FolderStats", "ImageFolder", "ensure_demo_image_folder"]

#: File extensions listed as images (what DALI's image decoder reads).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2")
#: PIL format names accepted after the header check (DALI decodes these).
DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"})


@dataclass(frozen=True)
class FolderImage:
    """One listed image: its path and class index (-1 when unlabelled)."""

    path: Path
    label: int


@dataclass
class FolderStats:
    """What the listing left out or what the reader skipped.

    Attributes:
        ignored_files: files that are not images by extension, hidden files, and (labelled)
            files directly in ``root``.
        empty_classes: class directories without any image (kept as classes, so indices stay
            the sorted-directory indices).
        skipped_images: reason -> count of images skipped with ``on_error="skip"`` by
            ``verify=True`` (the loaders keep their own counts of what they skip later).
    """

    ignored_files: int = 0
    empty_classes: list[str] = field(default_factory=list)
    skipped_images: dict[str, int] = field(default_factory=dict)


class ImageFolder:
    """A list of image files with class indices, read from a directory tree.

    Args:
        root: the directory.
        labelled: one sub-directory per class (True) or every image below ``root`` (False).
        extensions: file extensions that count as images (lower case, with the dot).
        on_error: with ``verify=True``, ``"raise"`` on the first bad file or ``"skip"`` it.
        verify: parse every file's header now (slow for large folders) rather than when
            the file is first read.

    Raises:
        DatasetError: ``root`` is missing or not a directory, holds no image, or (labelled)
            holds no class directory; with ``verify`` and ``on_error="raise"``, a bad file.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        labelled: bool = True,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        on_error: Literal["raise", "skip"] = "raise",
        verify: bool = False,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        self.labelled = bool(labelled)
        self.extensions = tuple(e.lower() for e in extensions)
        self.on_error = on_error
        self.stats = FolderStats()
        if not self.root.exists():
            raise DatasetError(self.root, "image folder does not exist")
        if not self.root.is_dir():
            raise DatasetError(self.root, "image folder is not a directory")
        if self.labelled:
            self.classes = sorted(
                entry.name for entry in os.scandir(self.root) if entry.is_dir() and not entry.name.startswith(".")
            )
            if not self.classes:
                raise DatasetError(
                    self.root, "no class sub-directory (an ImageFolder has one directory per class; "
                    "use labelled=False for a flat folder of images)"
                )
            self.stats.ignored_files += sum(
                1 for entry in os.scandir(self.root) if not entry.is_dir()
            )
            samples: list[FolderImage] = []
            for label, name in enumerate(self.classes):
                files = self._list(self.root / name)
                if not files:
                    self.stats.empty_classes.append(name)
                samples.extend(FolderImage(p, label) for p in files)
        else:
            self.classes = []
            samples = [FolderImage(p, -1) for p in self._list(self.root)]
        if not samples:
            raise DatasetError(self.root, f"no image files (extensions {', '.join(self.extensions)}) found")
        self.samples = samples
        if verify:
            self._verify_all()

    # -- listing -----------------------------------------------------------------------
    def _list(self, directory: Path) -> list[Path]:
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in self.extensions:
                    found.append(Path(dirpath) / name)
                else:
                    self.stats.ignored_files += 1
        return sorted(found)

    def _verify_all(self) -> None:
        kept: list[FolderImage] = []
        for index, sample in enumerate(self.samples):
            try:
                self.read_image(index)
            except DatasetError as error:
                if self.on_error == "raise":
                    raise
                key = skip_reason(error)
                self.stats.skipped_images[key] = self.stats.skipped_images.get(key, 0) + 1
                continue
            kept.append(sample)
        if not kept:
            raise DatasetError(self.root, "no readable image left after verification")
        self.samples = kept

    # -- access ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> FolderImage:
        return self.samples[index]

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.labelled else "unlabelled"
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {kind})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: k for k, name in enumerate(self.classes)}

    @property
    def targets(self) -> np.ndarray:
        """(N,) int64 class index of every image (-1 when unlabelled)."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def read_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The encoded file of image ``index`` and its (height, width) from the header.

        The size is the stored one, before any EXIF orientation (the pipelines decode with
        ``adjust_orientation=False``, as torchvision's PIL loader does).

        Raises:
            DatasetError: naming the file: unreadable, not an image, or a format DALI does
                not decode.
        """
        path = self.samples[index].path
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as error:
            raise DatasetError(path, f"cannot read image file: {error.strerror or error}") from error
        if data.size == 0:
            raise DatasetError(path, "not a readable image: empty file")
        try:
            with Image.open(io.BytesIO(data.tobytes())) as image:
                fmt = image.format
                width, height = image.size
        except Image.DecompressionBombError as error:
            raise DatasetError(path, f"too many pixels for Pillow to open: {error}") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise DatasetError(path, f"not a readable image: {error}") from error
        if fmt not in DECODABLE_FORMATS:
            raise DatasetError(path, f"unsupported image format: {fmt} (DALI decodes {', '.join(sorted(DECODABLE_FORMATS))})")
        if width < 1 or height < 1:
            raise DatasetError(path, f"not a readable image: size {width}x{height}")
        return data, (height, width)

    def decode_check(self, index: int) -> DatasetError | None:
        """Fully decode image ``index`` with PIL: the error it causes, or None (slow; for the
        failure path, to find which file of a batch DALI could not decode)."""
        path = self.samples[index].path
        try:
            with Image.open(path) as image:
                image.load()
        except Image.DecompressionBombError as error:
            return DatasetError(path, f"too many pixels for Pillow to decode: {error}")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            return DatasetError(path, f"image does not decode: {error}")
        return None


# -- demo data -------------------------------------------------------------------------
_DEMO_VERSION = "1"


def ensure_demo_image_folder(cache_dir: str | Path | None = None) -> Path:
    """A tiny labelled ImageFolder built from the embedded sample photos, for demos/tests.

    Two classes, ``arc2017`` and ``voc`` (the two photos of
    :func:`~decal.dali_pipes.coco.sample_data.ensure_sample_dataset`), three JPEGs each: the photo,
    its mirror image, and a centre crop. Built once next to the sample data cache.
    """
    from ..coco.sample_data import ensure_sample_dataset

    _, image_dir = ensure_sample_dataset()
    root = Path(cache_dir) if cache_dir is not None else image_dir.parent.parent / "image_folder"
    marker = root / "COMPLETE"
    try:
        if marker.read_text().strip() == _DEMO_VERSION:
            return root
    except OSError:
        pass
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".image_folder-", dir=root.parent))
    try:
        for name in ("arc2017", "voc"):
            with Image.open(image_dir / f"{name}.jpg") as photo:
                rgb = photo.convert("RGB")
            (staging / name).mkdir()
            w, h = rgb.size
            variants = {
                "photo": rgb,
                "mirror": rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                "centre": rgb.crop((w // 6, h // 6, w - w // 6, h - h // 6)),
            }
            for tag, picture in variants.items():
                picture.save(staging / name / f"{name}_{tag}.jpg", format="JPEG", quality=92)
        (staging / "COMPLETE").write_text(_DEMO_VERSION)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        try:
            staging.rename(root)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
