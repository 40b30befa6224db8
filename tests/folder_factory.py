"""Synthetic ImageFolder trees of real JPEG files for the CutMix / CP² / image-folder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_image(rng: np.random.Generator, height: int, width: int, hue: int) -> np.ndarray:
    """A smooth, textured RGB picture (gradients + a few discs), so resampling is testable."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array([(hue * 67) % 256, (hue * 131 + 40) % 256, (hue * 29 + 90) % 256], dtype=np.float32)
    image = base + 60.0 * np.sin(x[..., None] / (5.0 + hue) + np.array([0.0, 1.0, 2.0]))
    image += 40.0 * np.cos(y[..., None] / 7.0 + np.array([2.0, 0.5, 1.0]))
    for _ in range(3):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(4, 16)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(
    root: Path,
    *,
    classes: int = 3,
    per_class: int = 3,
    size_range: tuple[int, int] = (48, 120),
    seed: int = 0,
    labelled: bool = True,
) -> Path:
    """``root/class_k/img_j.jpg`` (or ``root/img_kj.jpg`` when not labelled); returns root."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(classes):
        directory = root / f"class_{k}" if labelled else root
        directory.mkdir(exist_ok=True)
        for j in range(per_class):
            h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
            name = f"img_{j}.jpg" if labelled else f"img_{k}{j}.jpg"
            Image.fromarray(synthetic_image(rng, h, w, k)).save(directory / name, format="JPEG", quality=95)
    return root


def corrupt_jpeg(path: Path) -> None:
    """Keep the JPEG header, wreck the entropy-coded data and the end marker."""
    data = bytearray(path.read_bytes())
    body = len(data) // 3
    data[body:] = b"\x00\xff" * ((len(data) - body) // 2) + b"\x00" * ((len(data) - body) % 2)
    path.write_bytes(bytes(data[: body + 40]))
