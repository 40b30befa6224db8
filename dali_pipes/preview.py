"""A preview PNG of what the model sees: augmented images with masks, boxes and labels.

Destination instances are drawn in green, instances pasted in this batch in magenta: a
tinted fill, the mask outline, the box and the category name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

DESTINATION_COLOUR = (40, 220, 90)
PASTED_COLOUR = (235, 40, 220)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` with a 4-neighbour outside it."""
    m = mask.astype(bool)
    padded = np.pad(m, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & m
    return m & ~interior


def render_sample(
    image: torch.Tensor, target: dict[str, torch.Tensor], category_names: dict[int, str] | None = None
) -> Image.Image:
    """Draw one sample: image (3, H, W) uint8, target as yielded by the loader."""
    canvas = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
    masks = target["masks"].detach().cpu().numpy().astype(bool)
    pasted = target["pasted"].detach().cpu().numpy().astype(bool)
    for mask, is_pasted in zip(masks, pasted):
        colour = np.array(PASTED_COLOUR if is_pasted else DESTINATION_COLOUR, dtype=np.float32)
        canvas[mask] = 0.65 * canvas[mask] + 0.35 * colour
        canvas[mask_outline(mask)] = colour
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    boxes = target["boxes"].detach().cpu().numpy()
    labels = target["labels"].detach().cpu().numpy()
    for box, label, is_pasted in zip(boxes, labels, pasted):
        colour = PASTED_COLOUR if is_pasted else DESTINATION_COLOUR
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        name = (category_names or {}).get(int(label), str(int(label)))
        text_y = max(0.0, y0 - 11)
        draw.rectangle([x0, text_y, x0 + 6 * len(name) + 4, text_y + 11], fill=colour)
        draw.text((x0 + 2, text_y), name, fill=(0, 0, 0))
    return picture


def render_grid(
    samples: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    path: str | Path,
    *,
    category_names: dict[int, str] | None = None,
    columns: int = 4,
    tile_size: int = 384,
    title: str = "",
) -> Path:
    """Write a PNG grid of rendered samples (each downscaled to ``tile_size``) to ``path``."""
    if not samples:
        raise ValueError("render_grid: no samples to draw")
    tiles = [render_sample(img, tgt, category_names).resize((tile_size, tile_size)) for img, tgt in samples]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    header = 22
    grid = Image.new("RGB", (columns * tile_size, rows * tile_size + header), (20, 20, 20))
    draw = ImageDraw.Draw(grid)
    legend = f"{title}   green: destination instances   magenta: pasted instances"
    draw.text((6, 5), legend, fill=(230, 230, 230))
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % columns) * tile_size, header + (k // columns) * tile_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
