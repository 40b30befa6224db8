"""Preview PNGs of the CutMix and CP² pipelines (``decal preview cutmix|cp2``).

* CutMix: a grid of mixed images, each captioned with λ (the weight of its own label) and
  the two largest entries of its soft target (class name and weight).
* CP²: one row per sample: ``fg_q | bg_q | I_q | M_q || fg_k | bg_k | I_k | M_k`` (the views
  only when the batch carries them), the masks drawn white on black with the feature-stride
  samples marked (green dot = 1, red dot = 0) and the rectangle outlined on I_q / I_k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.normalization import IMAGENET_MEAN, IMAGENET_STD
from .instances import save_png

__all__ = ["to_uint8_hwc", "render_cutmix_grid", "render_cp2_grid", "preview_cutmix", "preview_cp2"]

_BACKGROUND = (20, 20, 20)
_TEXT = (235, 235, 235)
_MASK_ON = (40, 220, 90)
_MASK_OFF = (230, 50, 50)
_OUTLINE = (255, 210, 0)


def to_uint8_hwc(
    image: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """(3, H, W) uint8 or normalised float32 → (H, W, 3) uint8 (float is de-normalised)."""
    array = image.detach().cpu()
    if array.dtype != torch.uint8:
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        array = (array.float() * s + m).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def render_cutmix_grid(
    batch: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    columns: int = 4,
    tile_size: int = 224,
    title: str = "",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Path:
    """Write a PNG grid of a :class:`~decal.dali_pipes.cutmix.loader.ClassificationBatch`:
    each mixed image with λ and its top-2 soft-target classes."""
    n = len(batch)
    if n == 0:
        raise ValueError("render_cutmix_grid: empty batch")
    caption = 30
    columns = min(columns, n)
    rows = -(-n // columns)
    header = 22
    grid = Image.new("RGB", (columns * tile_size, header + rows * (tile_size + caption)), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    draw.text((6, 5), f"{title}   caption: lam (own-label weight) | top-2 soft-target classes", fill=_TEXT)
    targets = batch.targets.detach().float().cpu()
    lam = batch.lam.detach().float().cpu()
    labels = batch.labels.detach().cpu()
    for i in range(n):
        tile = Image.fromarray(to_uint8_hwc(batch.images[i], mean, std)).resize((tile_size, tile_size))
        x, y = (i % columns) * tile_size, header + (i // columns) * (tile_size + caption)
        grid.paste(tile, (x, y))
        values, classes = torch.topk(targets[i], k=min(2, targets.shape[1]))
        names = [class_names[int(c)] if int(c) < len(class_names) else str(int(c)) for c in classes]
        own = class_names[int(labels[i])] if int(labels[i]) < len(class_names) else str(int(labels[i]))
        draw.text((x + 4, y + tile_size + 2), f"#{i} {own}  lam={float(lam[i]):.3f}", fill=_TEXT)
        draw.text(
            (x + 4, y + tile_size + 15),
            "  ".join(f"{name} {float(v):.3f}" for name, v in zip(names, values)),
            fill=_TEXT,
        )
    return save_png(grid, path)


def _mask_tile(mask: torch.Tensor, feat: torch.Tensor, stride: int, tile_size: int) -> Image.Image:
    m = mask.detach().cpu().numpy().astype(np.uint8) * 255
    size = m.shape[0]
    tile = Image.fromarray(np.stack([m] * 3, axis=-1)).resize((tile_size, tile_size), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(tile)
    f = feat.detach().cpu().numpy()
    scale = tile_size / size
    radius = max(2, int(scale * stride / 6))
    for r in range(f.shape[0]):
        for c in range(f.shape[1]):
            cy, cx = (stride // 2 + r * stride + 0.5) * scale, (stride // 2 + c * stride + 0.5) * scale
            colour = _MASK_ON if f[r, c] else _MASK_OFF
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    return tile


def _outlined(image: np.ndarray, mask: torch.Tensor, tile_size: int) -> Image.Image:
    tile = Image.fromarray(image).resize((tile_size, tile_size))
    m = mask.detach().cpu().numpy().astype(bool)
    if m.any():
        ys, xs = np.nonzero(m)
        scale = tile_size / m.shape[0]
        box = [xs.min() * scale, ys.min() * scale, (xs.max() + 1) * scale - 1, (ys.max() + 1) * scale - 1]
        ImageDraw.Draw(tile).rectangle(box, outline=_OUTLINE, width=2)
    return tile


def render_cp2_grid(
    batch: Any,
    path: str | Path,
    *,
    stride: int = 16,
    max_rows: int = 4,
    tile_size: int = 160,
    title: str = "",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Path:
    """Write a PNG of a :class:`~decal.dali_pipes.cp2.loader.CP2Batch`: per sample the
    (views,) compositions and masks of q and k side by side."""
    n = min(len(batch), max_rows)
    if n == 0:
        raise ValueError("render_cp2_grid: empty batch")
    views = batch.views
    names = (["fg_q", "bg_q"] if views else []) + ["I_q", "M_q"] + (["fg_k", "bg_k"] if views else []) + ["I_k", "M_k"]
    gap, header, label = 8, 22, 14
    half = len(names) // 2
    width = len(names) * tile_size + gap
    grid = Image.new("RGB", (width, header + label + n * tile_size), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    draw.text((6, 5), f"{title}   masks: white = foreground, dots = stride-{stride} samples (green 1, red 0)", fill=_TEXT)
    for k, name in enumerate(names):
        x = k * tile_size + (gap if k >= half else 0)
        draw.text((x + 4, header), name, fill=_TEXT)
    for i in range(n):
        tiles: list[Image.Image] = []
        for side in ("q", "k"):
            mask = getattr(batch, f"mask_{side}")[i]
            feat = getattr(batch, f"mask_{side}_feat")[i]
            if views:
                tiles.append(Image.fromarray(views[f"fg_{side}"][i].detach().cpu().numpy()).resize((tile_size, tile_size)))
                tiles.append(Image.fromarray(views[f"bg_{side}"][i].detach().cpu().numpy()).resize((tile_size, tile_size)))
            image = to_uint8_hwc(getattr(batch, f"image_{side}")[i], mean, std)
            tiles.append(_outlined(image, mask, tile_size))
            tiles.append(_mask_tile(mask, feat, stride, tile_size))
        for k, tile in enumerate(tiles):
            x = k * tile_size + (gap if k >= half else 0)
            grid.paste(tile, (x, header + label + i * tile_size))
    return save_png(grid, path)


def preview_cutmix(
    path: str | Path, root: str | Path | None = None, *, batch_size: int = 8, batches: int = 1, **options: Any
) -> Path:
    """Run the CutMix loader on ``root`` (default: the demo folder built from the embedded
    sample photos) and write a preview of batch number ``batches`` to ``path``."""
    from ..cutmix.loader import CutMixLoader
    from ..folder.image_folder import ensure_demo_image_folder

    folder = Path(root) if root is not None else ensure_demo_image_folder()
    options = {"seed": 0, "output_size": 224, **options, "normalize": False, "batch_size": batch_size}
    with CutMixLoader(folder, **options) as loader:
        batch = _take(loader, batches)
    cfg = loader.config
    title = (
        f"decal CutMix  {folder.name}  mode={cfg.mode} cutmix_alpha={cfg.cutmix_alpha} "
        f"mixup_alpha={cfg.mixup_alpha} smoothing={cfg.label_smoothing} seed={cfg.seed}"
    )
    return render_cutmix_grid(batch, loader.classes, path, title=title)


def preview_cp2(
    path: str | Path, root: str | Path | None = None, *, batch_size: int = 4, batches: int = 1, **options: Any
) -> Path:
    """Run the CP² loader on ``root`` (default: the embedded sample photos) and write a
    preview of batch number ``batches`` to ``path``."""
    from ..cp2.loader import CP2Loader

    if root is None:
        from ..coco.sample_data import ensure_sample_dataset

        root = ensure_sample_dataset()[1]
    options = {"seed": 0, **options, "normalize": False, "return_views": True, "batch_size": batch_size}
    with CP2Loader(root, **options) as loader:
        batch = _take(loader, batches)
    cfg = loader.config
    title = f"decal CP2  {Path(root).name}  S={cfg.output_size} stride={cfg.stride} seed={cfg.seed}"
    return render_cp2_grid(batch, path, stride=cfg.stride, max_rows=batch_size, title=title)


def _take(loader: Any, count: int) -> Any:
    """The ``count``-th batch (1-based), crossing epochs if needed."""
    seen = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            seen += 1
            if seen >= count:
                return batch
        if empty:
            raise RuntimeError("the loader yields no batch")
