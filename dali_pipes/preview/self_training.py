"""The preview of self-training Copy-Paste (``decal preview self-training``): a PNG grid of
its batches, each tile captioned with its source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..coco.sample_data import ensure_sample_dataset
from ..self_training.loader import SelfTrainingLoader, ensure_unlabelled_sample
from .instances import category_names, first_samples, render_sample, save_png

__all__ = ["preview_self_training"]


def preview_self_training(
    path: str | Path,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    second_images: str | Path | None = None,
    second_annotations: str | Path | None = None,
    images: int = 8,
    tile_size: int = 320,
    **options: Any,
) -> Path:
    """Write a PNG grid of self-training Copy-Paste batches, each tile captioned with its
    source (labelled / second set). Defaults: the embedded sample dataset as the labelled
    set, crops of an unlabelled photo as the second set, ratio 0.5."""
    if annotation_file is None:
        annotation_file, image_dir = ensure_sample_dataset()
    if second_images is None:
        second_images = ensure_unlabelled_sample()
    defaults = dict(batch_size=4, output_size=384, jitter="ssj", seed=0, max_num_pasted=6)
    with SelfTrainingLoader(
        annotation_file, image_dir, second_images=second_images, second_annotations=second_annotations,
        **{**defaults, **options},
    ) as loader:  # fmt: skip
        shown = first_samples(loader, images)
    names = category_names(loader)
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    header, caption = 22, 16
    grid = Image.new("RGB", (columns * tile_size, header + rows * (tile_size + caption)), (20, 20, 20))
    draw = ImageDraw.Draw(grid)
    draw.text(
        (6, 5),
        f"self-training copy-paste, second-set ratio {loader.config.second_ratio}   "
        "green: the image's own (pseudo) labels   magenta: pasted ground truth",
        fill=(230, 230, 230),
    )
    for k, (image, target) in enumerate(shown):
        x, y = (k % columns) * tile_size, header + (k // columns) * (tile_size + caption)
        grid.paste(render_sample(image, target, names).resize((tile_size, tile_size)), (x, y))
        domain = "labelled" if int(target["domain"]) == 0 else "second set"
        draw.text((x + 4, y + tile_size + 2), f"{domain}: {int(target['pasted'].sum())} pasted", fill=(230, 230, 230))
    return save_png(grid, path)
