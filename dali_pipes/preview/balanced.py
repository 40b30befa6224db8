"""The preview of balanced Copy-Paste (``decal preview balanced``): a PNG grid of its batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..balanced.loader import BalancedCopyPasteLoader
from ..coco.sample_data import ensure_sample_dataset
from .instances import category_names, first_samples, render_grid

__all__ = ["preview_balanced_copy_paste"]


def preview_balanced_copy_paste(
    path: str | Path,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    *,
    warmup_batches: int = 3,
    images: int = 8,
    tile_size: int = 320,
    **options: Any,
) -> Path:
    """Write a PNG grid of balanced Copy-Paste batches (destination instances green, pasted
    ones magenta). The first ``warmup_batches`` batches fill the bank and are not drawn.
    Defaults to the embedded sample dataset."""
    if annotation_file is None:
        annotation_file, image_dir = ensure_sample_dataset()
    defaults = dict(batch_size=2, output_size=384, jitter="lsj", seed=0, bank_min_area=64, max_num_pasted=4)
    with BalancedCopyPasteLoader(annotation_file, image_dir, **{**defaults, **options}) as loader:
        shown = first_samples(loader, images, skip_batches=warmup_batches)
    bank = loader.stats["bank"]
    title = (
        f"balanced copy-paste ({loader.config.bank_weighting}); bank {bank['instances']} instances, "
        f"{bank['bytes'] / 1024:.0f} KiB"
    )
    return render_grid(shown, path, category_names=category_names(loader), tile_size=tile_size, title=title)
