"""A synthetic LVIS-sized instance json (~100k images, ~1.2M polygon instances), generated fast.

Every coordinate is drawn at once in NumPy (star-shaped polygons of 8–39 vertices around a
log-uniform radius, clipped to the image, rounded to 0.01 px as LVIS stores them); per-image
instance counts are long-tailed (lognormal weights, a few images empty); categories follow a
Zipf-like long tail over 1,203 LVIS-style categories carrying ``frequency`` ``r``/``c``/``f``.
``bbox`` and ``area`` are the polygon's extent and shoelace area (not pycocotools-rasterised:
the loaders' figures do not depend on them). Images are named as LVIS does, by ``coco_url``;
the files are symbolic links to two real JPEGs (640×480 and 480×640; a file system allows
far fewer hard links than LVIS has images), so readers that check
headers (:meth:`~decal.dali_pipes.coco.reader.CocoDataset.read_image_bytes`) pass.

The json is written in chunks with the standard library's C encoder; nothing holds all
annotations as Python objects at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["make_lvis_like"]

_SIZES = ((480, 640), (640, 480))  # (height, width)
_CHUNK = 50_000


def _segment_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at every segment (lengths > 0)."""
    total = np.cumsum(values)
    ends = np.cumsum(lengths)
    before = np.concatenate([[0.0], total[ends[:-1] - 1]])
    return total - np.repeat(before, lengths)


def _polygons(rng: np.random.Generator, heights: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex counts (N,), flat xy (sum 2K,) float64) of N random star polygons."""
    n = len(heights)
    k = rng.integers(8, 40, n)
    side = np.minimum(heights, widths).astype(np.float64)
    radius = np.exp(rng.uniform(np.log(4.0), np.log(0.45 * side)))
    cx, cy = rng.uniform(0, widths), rng.uniform(0, heights)
    gaps = rng.uniform(0.2, 1.0, int(k.sum()))
    turn = _segment_cumsum(gaps, k)
    angle = 2 * np.pi * turn / np.repeat(turn[np.cumsum(k) - 1], k)
    r = np.repeat(radius, k) * rng.uniform(0.55, 1.0, len(gaps))
    x = np.clip(np.repeat(cx, k) + r * np.cos(angle), 0, np.repeat(widths, k))
    y = np.clip(np.repeat(cy, k) + r * np.sin(angle), 0, np.repeat(heights, k))
    return k, np.round(np.stack([x, y], axis=1), 2).reshape(-1)


def _shoelace(xy: np.ndarray, k: np.ndarray) -> np.ndarray:
    pts = xy.reshape(-1, 2)
    starts = np.cumsum(k) - k
    nxt = np.arange(1, len(pts) + 1)
    nxt[np.cumsum(k) - 1] = starts
    cross = pts[:, 0] * pts[nxt, 1] - pts[nxt, 0] * pts[:, 1]
    return 0.5 * np.abs(np.add.reduceat(cross, starts))


def make_lvis_like(root: str | Path, num_images: int = 100_000, num_instances: int = 1_200_000, *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/lvis_like.json`` and ``root/images/`` unless already there (same sizes
    and seed); returns ``(json_path, image_dir)``."""
    from .data import photos  # the real photos the two JPEGs are cut from

    root = Path(root)
    json_path, image_dir = root / "lvis_like.json", root / "images"
    stamp = root / f".complete-v2-{num_images}-{num_instances}-{seed}"  # v2: images under train2017/
    if stamp.exists() and json_path.exists():
        return json_path, image_dir
    rng = np.random.default_rng(seed)
    (image_dir / "train2017").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    masters = []
    photo = photos()[1]
    for h, w in _SIZES:
        path = root / f"master_{w}x{h}.jpg"
        Image.fromarray(photo).resize((w, h)).save(path, format="JPEG", quality=90)
        masters.append(path)

    portrait = rng.random(num_images) < 0.25
    heights = np.where(portrait, _SIZES[1][0], _SIZES[0][0])
    widths = np.where(portrait, _SIZES[1][1], _SIZES[0][1])
    weights = rng.lognormal(0.0, 1.0, num_images) * (rng.random(num_images) > 0.01)
    counts = rng.multinomial(num_instances, weights / weights.sum())
    n_cat = 1203
    cat_p = 1.0 / np.arange(1, n_cat + 1) ** 0.9
    categories = [
        {"id": c, "name": f"lvis_class_{c}", "synset": f"class_{c}.n.01",
         "frequency": "f" if c <= 400 else ("c" if c <= 860 else "r")}
        for c in range(1, n_cat + 1)
    ]
    images = [
        {"id": i + 1, "coco_url": f"http://images.cocodataset.org/train2017/{i + 1:012d}.jpg",
         "height": int(heights[i]), "width": int(widths[i]), "neg_category_ids": [], "not_exhaustive_category_ids": []}
        for i in range(num_images)
    ]
    for i in range(num_images):
        target = image_dir / "train2017" / f"{i + 1:012d}.jpg"  # LVIS names keep their split folder
        if not target.exists():
            os.symlink(masters[int(portrait[i])].resolve(), target)

    image_of = np.repeat(np.arange(num_images), counts)
    tmp = json_path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        out.write('{"info": {"description": "decal bench: synthetic LVIS-sized instances"}, "images": ')
        out.write(json.dumps(images))
        out.write(', "categories": ')
        out.write(json.dumps(categories))
        out.write(', "annotations": [')
        for begin in range(0, len(image_of), _CHUNK):
            img = image_of[begin : begin + _CHUNK]
            h, w = heights[img], widths[img]
            k, xy = _polygons(rng, h, w)
            pts = xy.reshape(-1, 2)
            starts = np.cumsum(k) - k
            x0, x1 = np.minimum.reduceat(pts[:, 0], starts), np.maximum.reduceat(pts[:, 0], starts)
            y0, y1 = np.minimum.reduceat(pts[:, 1], starts), np.maximum.reduceat(pts[:, 1], starts)
            area = np.round(_shoelace(xy, k), 2)
            cats = rng.choice(n_cat, len(img), p=cat_p / cat_p.sum()) + 1
            bounds = np.concatenate([[0], np.cumsum(2 * k)]).tolist()
            coords = xy.tolist()
            boxes = np.round(np.stack([x0, y0, x1 - x0, y1 - y0], axis=1), 2).tolist()
            anns = [
                {"id": begin + j + 1, "image_id": int(img[j]) + 1, "category_id": int(cats[j]),
                 "segmentation": [coords[bounds[j] : bounds[j + 1]]], "area": float(area[j]), "bbox": boxes[j]}
                for j in range(len(img))
            ]
            text = json.dumps(anns)[1:-1]
            if begin:
                out.write(", ")
            out.write(text)
        out.write("]}")
    os.replace(tmp, json_path)
    stamp.write_text("ok\n")
    return json_path, image_dir
