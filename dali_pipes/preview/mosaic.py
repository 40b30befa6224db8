"""The preview of Mosaic (``decal preview mosaic``): a PNG grid of its samples with the tiles
outlined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import ImageDraw

from ..coco.sample_data import ensure_sample_dataset
from ..mosaic.loader import MosaicLoader
from ..mosaic.twin import NUM_TILES
from .instances import category_names, first_samples, render_sample, tile_grid

__all__ = ["preview_mosaic", "render_mosaic_grid"]


def render_mosaic_grid(
    samples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    path: str | Path,
    *,
    category_names: dict[int, str] | None = None,
    columns: int = 4,
    tile_size: int = 320,
    title: str = "",
) -> Path:
    """A PNG grid of Mosaic samples: instances as in the copy-paste preview (green), each
    tile's region outlined in yellow with its number, and the mosaic centre marked."""
    if not samples:
        raise ValueError("render_mosaic_grid: no samples to draw")
    rendered = []
    for image, target in samples:
        picture = render_sample(image, target, category_names)
        draw = ImageDraw.Draw(picture)
        tiles = target["tiles"].cpu().numpy()
        used = [k for k in range(NUM_TILES) if tiles[k, 2] > tiles[k, 0]]
        for k in used:
            x0, y0, x1, y1 = (int(v) for v in tiles[k])
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 210, 0), width=2)
            draw.text((x0 + 3, y0 + 2), f"tile {k}", fill=(255, 210, 0))
        if len(used) > 1:  # the centre is the corner the four tiles share
            cx = int(tiles[0, 0] if tiles[0, 0] == tiles[1, 2] else tiles[0, 2])
            cy = int(tiles[0, 3])
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], outline=(255, 60, 60), width=2)
        rendered.append(picture.resize((tile_size, tile_size)))
    legend = f"{title}   yellow: tile regions   red circle: mosaic centre   green: instances"
    return tile_grid(rendered, path, tile_size=tile_size, columns=columns, legend=legend)


def preview_mosaic(
    path: str | Path,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    images: int = 8,
    tile_size: int = 320,
    **options: Any,
) -> Path:
    """Write a PNG grid of balanced-Mosaic samples (defaults: the embedded sample dataset,
    384 px, mosaic probability 0.5)."""
    if annotation_file is None:
        annotation_file, image_dir = ensure_sample_dataset()
    defaults = dict(batch_size=4, output_size=384, seed=0)
    with MosaicLoader(annotation_file, image_dir, **{**defaults, **options}) as loader:
        shown = first_samples(loader, images)
    title = f"balanced mosaic (p={loader.config.mosaic_prob})"
    return render_mosaic_grid(shown, path, category_names=category_names(loader), tile_size=tile_size, title=title)
