"""A preview PNG of what the model sees: augmented images with masks, boxes and labels.

Destination instances are drawn in green, instances pasted in this batch in magenta: a light
tinted fill, the mask outline, the box and the category name. Each tile is drawn at its
display size (so text stays readable when a 1024² sample becomes a 384² tile), labels are
placed where they do not cover an earlier label (one that finds no free place is left out and
counted), and a caption strip at the bottom of each tile says what happened to the sample:
the scale-jitter ratio r, whether it was flipped, and how many instances were pasted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.scale_jitter import Geometry, ScaleJitter, draw_geometry

DESTINATION_COLOUR = (40, 220, 90)
PASTED_COLOUR = (235, 40, 220)
#: Weight of the instance colour in a mask's fill (the image keeps the rest).
TINT = 0.2
#: Height in pixels of a tile's caption strip and of a label's background.
CAPTION_HEIGHT = 16
LABEL_HEIGHT = 12

__all__ = ["mask_outline", "render_sample", "render_grid", "sample_caption", "copy_paste_captions"]


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` with a 4-neighbour outside it."""
    m = mask.astype(bool)
    padded = np.pad(m, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & m
    return m & ~interior


def sample_caption(target: dict[str, torch.Tensor], scale: float | None = None, flip: bool | None = None) -> str:
    """A tile's caption, e.g. ``"r=1.37  flipped  pasted 4 of 17"`` (r and the flip only
    when known)."""
    parts = []
    if scale is not None:
        parts.append(f"r={scale:.2f}")
    if flip is not None:
        parts.append("flipped" if flip else "not flipped")
    pasted = int(target["pasted"].sum()) if "pasted" in target else 0
    parts.append(f"pasted {pasted} of {int(target['labels'].numel())}")
    return "  ".join(parts)


def copy_paste_captions(batch: Any, *, seed: int, shard_id: int, jitter: Any, flip_prob: float) -> list[str]:
    """Captions of a :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoader` batch, with
    the geometry each sample got.

    The geometry is drawn again from the batch's position exactly as
    :class:`~decal.dali_pipes.copy_paste.source.CopyPasteSource` drew it (every draw comes
    from ``(seed, epoch, shard, batch)``), so nothing extra travels through the pipeline.
    """
    from ..copy_paste.source import GEOMETRY_STREAM

    position = batch.position
    rng = np.random.default_rng([seed, position.epoch, shard_id, position.batch_index - 1, GEOMETRY_STREAM])
    geometry: Geometry = draw_geometry(rng, len(batch), ScaleJitter.parse(jitter), flip_prob)
    return [
        sample_caption(target, float(geometry.scale[i]), bool(geometry.flip[i]))
        for i, target in enumerate(batch.targets)
    ]


def _place_label(width: int, size: int, box: tuple[float, float, float, float], taken: list[tuple[float, float, float, float]]) -> tuple[float, float] | None:
    """Top-left corner for a ``width`` × LABEL_HEIGHT label of ``box`` on a ``size``² tile:
    above the box, inside its top, below it, or further down inside it; None when every
    place covers a label already drawn."""
    x0, y0, x1, y1 = box
    x = min(max(0.0, x0), max(0.0, size - width))
    candidates = [y0 - LABEL_HEIGHT, y0, y1, *np.arange(y0 + LABEL_HEIGHT, y1 - LABEL_HEIGHT, LABEL_HEIGHT)]
    for y in candidates:
        y = float(y)
        if y < 0 or y + LABEL_HEIGHT > size - CAPTION_HEIGHT:
            continue
        rect = (x, y, x + width, y + LABEL_HEIGHT)
        if all(rect[2] <= t[0] or rect[0] >= t[2] or rect[3] <= t[1] or rect[1] >= t[3] for t in taken):
            return x, y
    return None


def render_sample(
    image: torch.Tensor,
    target: dict[str, torch.Tensor],
    category_names: dict[int, str] | None = None,
    *,
    size: int | None = None,
    caption: str | None = None,
) -> Image.Image:
    """Draw one sample: image (3, H, W) uint8, target as yielded by the loader, on a
    ``size``² tile (default: the image's own size), with ``caption`` (if given, plus the
    number of labels left out) in a strip at the bottom."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    size = size or max(height, width)
    ys = (np.arange(size) * height // size).clip(0, height - 1)
    xs = (np.arange(size) * width // size).clip(0, width - 1)
    rgb = image.detach().cpu().permute(1, 2, 0).numpy()
    canvas = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.float32)
    masks = target["masks"].detach().cpu().numpy().astype(bool)[:, ys][:, :, xs]  # nearest
    pasted = target["pasted"].detach().cpu().numpy().astype(bool)
    tint = np.zeros_like(canvas)
    covered = np.zeros(canvas.shape[:2], dtype=bool)
    for mask, is_pasted in zip(masks, pasted):  # each pixel is tinted once, by its last instance
        tint[mask] = PASTED_COLOUR if is_pasted else DESTINATION_COLOUR
        covered |= mask
    canvas[covered] = (1 - TINT) * canvas[covered] + TINT * tint[covered]
    for mask, is_pasted in zip(masks, pasted):
        canvas[mask_outline(mask)] = PASTED_COLOUR if is_pasted else DESTINATION_COLOUR
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    boxes = target["boxes"].detach().cpu().numpy() * np.array([size / width, size / height] * 2)
    labels = target["labels"].detach().cpu().numpy()
    for box, is_pasted in zip(boxes, pasted):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=PASTED_COLOUR if is_pasted else DESTINATION_COLOUR, width=1)
    taken: list[tuple[float, float, float, float]] = []
    hidden = 0
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable") if len(boxes) else []
    for k in order:  # larger instances choose their label's place first
        name = (category_names or {}).get(int(labels[k]), str(int(labels[k])))
        text_width = int(draw.textlength(name, font=font)) + 4
        place = _place_label(text_width, size, tuple(boxes[k]), taken)
        if place is None:
            hidden += 1
            continue
        x, y = place
        taken.append((x, y, x + text_width, y + LABEL_HEIGHT))
        draw.rectangle([x, y, x + text_width, y + LABEL_HEIGHT - 1], fill=PASTED_COLOUR if pasted[k] else DESTINATION_COLOUR)
        draw.text((x + 2, y), name, fill=(0, 0, 0), font=font)
    if caption is not None:
        if hidden:
            caption += f"  ({hidden} label{'s' if hidden > 1 else ''} hidden)"
        draw.rectangle([0, size - CAPTION_HEIGHT, size, size], fill=(0, 0, 0))
        draw.text((4, size - CAPTION_HEIGHT + 2), caption, fill=(240, 240, 240), font=font)
    return picture


def render_grid(
    samples: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    path: str | Path,
    *,
    category_names: dict[int, str] | None = None,
    columns: int = 4,
    tile_size: int = 384,
    title: str = "",
    captions: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid of rendered samples (each drawn on a ``tile_size``² tile, with its
    caption: ``captions[k]`` or :func:`sample_caption`) to ``path``."""
    if not samples:
        raise ValueError("render_grid: no samples to draw")
    if captions is not None and len(captions) != len(samples):
        raise ValueError(f"render_grid: {len(captions)} captions for {len(samples)} samples")
    tiles = [
        render_sample(img, tgt, category_names, size=tile_size, caption=sample_caption(tgt) if captions is None else captions[k])
        for k, (img, tgt) in enumerate(samples)
    ]
    legend = f"{title}   green: destination instances   magenta: pasted instances"
    return tile_grid(tiles, path, tile_size=tile_size, columns=columns, legend=legend)


def tile_grid(tiles: Sequence[Image.Image], path: str | Path, *, tile_size: int, columns: int, legend: str) -> Path:
    """Write ``tiles`` (each ``tile_size``² px, row by row, at most ``columns`` a row) as one
    PNG at ``path`` under a one-line ``legend``; returns the path."""
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    header = 22
    grid = Image.new("RGB", (columns * tile_size, rows * tile_size + header), (20, 20, 20))
    ImageDraw.Draw(grid).text((6, 5), legend, fill=(230, 230, 230))
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % columns) * tile_size, header + (k // columns) * tile_size))
    return save_png(grid, path)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Save ``image`` at ``path`` (its folder made if needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def first_samples(loader: Any, count: int, skip_batches: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """The first ``count`` (image, target) pairs of ``loader``'s batches after the first
    ``skip_batches`` batches, crossing epochs as needed (a preview's samples)."""
    shown: list[tuple[torch.Tensor, dict]] = []
    seen = 0
    while len(shown) < count:
        for batch in loader:
            seen += 1
            if seen <= skip_batches:
                continue
            shown.extend(zip(batch.images, batch.targets))
            if len(shown) >= count:
                break
    return shown[:count]


def category_names(loader: Any) -> dict[int, str]:
    """Category id → name (the id where the json gives none) of an instance loader."""
    return {cid: str(c.get("name", cid)) for cid, c in loader.categories.items()}
