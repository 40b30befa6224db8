"""CP² compositions: the host-side draws, the masks, and the NumPy twin of the composition.

Wang et al. 2022, "CP2: Copy-Paste Contrastive Pretraining for Semantic Segmentation"
(ECCV 2022), and its code (github.com/wangf3014/CP2, ``main.py``, ``builder.py``,
``loader.py``). What the code does, and this module follows:

* every foreground image gives two views (MoCo v2's ``TwoCropsTransform``) with the MoCo v2
  augmentation: ``RandomResizedCrop(224, scale=(0.2, 1.))``, ``ColorJitter(0.4, 0.4, 0.4,
  0.1)`` with p 0.8, ``RandomGrayscale(p=0.2)``, ``GaussianBlur`` σ ~ U[0.1, 2] with p 0.5
  (PIL ``ImageFilter.GaussianBlur(radius=σ)``), ``RandomHorizontalFlip``;
* two background images, each from its own shuffled loader over the same folder (``bg0`` for
  the query, ``bg1`` for the key), with the same augmentation followed by
  ``RandomErasing(p=1., scale=(0.5, 0.8), ratio=(0.8, 1.25), value=0.)``: the erased
  rectangle is the foreground mask. The two backgrounds erase independently, so **M_q and M_k
  are two independent rectangles** (not one shared one);
* ``mask_q = (bg0[:, 0] == 0)``, ``image_q = fg_q · mask_q + bg0`` (the background is zero
  inside the rectangle): the foreground view inside the rectangle, the background outside;
  likewise for k;
* the masks at the encoder's output stride s (16 → 224/16 = 14 × 14) are sampled, not pooled:
  ``mask[:, s//2::s, s//2::s]`` (the pixel at the centre of each s × s cell).

torchvision ``RandomErasing.get_params`` (drawn by :func:`random_erasing_rects`): up to 10
tries of area ~ U(scale)·H·W and aspect ~ exp(U(log ratio)), ``h = round(sqrt(area·aspect))``,
``w = round(sqrt(area/aspect))``, accepted if ``h < H and w < W``, placed uniformly; if no try
fits, nothing is erased (an empty mask: the composite is the background alone), as in
torchvision. CP2's ``(bg == 0)`` test would also count background pixels that are exactly 0
after normalisation; decal's masks are the rectangles alone.

decal composes on uint8 before normalisation (a binary mask commutes with the per-pixel
normalisation, so the result is the same), with :func:`decal.kernels.composite.composite`
(alpha = the uint8 rectangle mask), one launch for both views of the batch.

Where DALI's operators differ from torchvision's (documented, accepted):

* ``fn.color_twist`` applies brightness, contrast, saturation and hue in one fixed order
  (torchvision draws a random order per image); its contrast pivots on mid-grey 128, not the
  image mean; its hue rotates the chroma (YIQ) plane by ``360 · hue_factor`` degrees instead
  of shifting the HSV hue; values are clamped once at the end, not after each op.
* grayscale is ``color_twist(saturation=0)`` folded into the same op: the luma
  0.299 R + 0.587 G + 0.114 B, as torchvision's ``rgb_to_grayscale`` (±1 rounding).
* blur: ``fn.gaussian_blur`` with σ and a window of ``2·ceil(3σ) + 1`` (PIL approximates the
  Gaussian with box blurs); "no blur" is a window of 1 (the identity).
* backgrounds: CP2 walks two more shuffled passes over the data (``DistributedSampler`` seeds
  1024 and 2048); decal draws the two backgrounds of each sample uniformly (with replacement)
  from ``rng(seed, epoch, shard, batch, 1)``: the same per-draw distribution, resumable from
  the foreground position alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..folder.source import random_resized_crop_params
from ...kernels.array_module import cupy_module

__all__ = [
    "CP2ViewConfig",
    "CP2MaskConfig",
    "ViewParams",
    "CP2Composition",
    "draw_view_params",
    "random_erasing_rects",
    "rect_masks",
    "feature_masks",
    "feature_size",
    "compose_cp2",
]


@dataclass(frozen=True)
class CP2ViewConfig:
    """The MoCo v2 view augmentation of CP2's ``main.py`` (its defaults)."""

    output_size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.output_size < 1:
            raise ValueError(f"output_size must be >= 1, got {self.output_size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must be 0 < min <= max <= 1, got {self.scale}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be 0 < min <= max, got {self.blur_sigma}")


@dataclass(frozen=True)
class CP2MaskConfig:
    """The foreground rectangle (CP2's ``RandomErasing``) and the feature stride."""

    area: tuple[float, float] = (0.5, 0.8)
    ratio: tuple[float, float] = (0.8, 1.25)
    stride: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"area must be 0 < min <= max <= 1, got {self.area}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be 0 < min <= max, got {self.ratio}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


@dataclass(frozen=True)
class ViewParams:
    """The draws of one view for a batch of B images.

    Attributes:
        crop: (B, 4) int64 ``[x, y, w, h]`` crop window in the source image.
        jitter: (B,) bool, colour jitter applied.
        brightness, contrast, saturation: (B,) float32 factors (1 when not jittered).
        hue: (B,) float32, torchvision hue factor in [-0.5, 0.5] (0 when not jittered).
        grayscale: (B,) bool.
        blur: (B,) bool; sigma: (B,) float32 (the drawn σ, used only where ``blur``).
        flip: (B,) bool.
    """

    crop: np.ndarray
    jitter: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    hue: np.ndarray
    grayscale: np.ndarray
    blur: np.ndarray
    sigma: np.ndarray
    flip: np.ndarray

    def colour_twist(self) -> np.ndarray:
        """(B, 4) float32 ``fn.color_twist`` arguments ``[brightness, contrast, saturation,
        hue in degrees]``; grayscale folded in as saturation 0."""
        saturation = np.where(self.grayscale, 0.0, self.saturation)
        return np.stack([self.brightness, self.contrast, saturation, 360.0 * self.hue], axis=1).astype(np.float32)

    def blur_args(self) -> np.ndarray:
        """(B, 2) float32 ``[sigma, window]`` for ``fn.gaussian_blur``: window
        ``2·ceil(3σ) + 1`` where blurred, 1 (the identity) elsewhere."""
        window = np.where(self.blur, 2 * np.ceil(3.0 * self.sigma) + 1, 1.0)
        sigma = np.where(self.blur, self.sigma, 1.0)
        return np.stack([sigma, window], axis=1).astype(np.float32)


def draw_view_params(
    rng: np.random.Generator,
    heights: Sequence[int] | np.ndarray,
    widths: Sequence[int] | np.ndarray,
    cfg: CP2ViewConfig,
) -> ViewParams:
    """Draw one MoCo v2 view for each image of size ``heights[i] × widths[i]``."""
    n = len(heights)
    crop = random_resized_crop_params(rng, heights, widths, cfg.scale, cfg.ratio)
    jitter = rng.random(n) < cfg.jitter_prob

    def factor(strength: float) -> np.ndarray:
        return rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, size=n)

    brightness, contrast, saturation = factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation)
    hue = rng.uniform(-cfg.hue, cfg.hue, size=n)
    grayscale = rng.random(n) < cfg.grayscale_prob
    blur = rng.random(n) < cfg.blur_prob
    sigma = rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], size=n)
    flip = rng.random(n) < cfg.flip_prob
    f32 = np.float32
    return ViewParams(
        crop=crop,
        jitter=jitter,
        brightness=np.where(jitter, brightness, 1.0).astype(f32),
        contrast=np.where(jitter, contrast, 1.0).astype(f32),
        saturation=np.where(jitter, saturation, 1.0).astype(f32),
        hue=np.where(jitter, hue, 0.0).astype(f32),
        grayscale=grayscale,
        blur=blur,
        sigma=sigma.astype(f32),
        flip=flip,
    )


def random_erasing_rects(
    rng: np.random.Generator,
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.5, 0.8),
    ratio: tuple[float, float] = (0.8, 1.25),
    attempts: int = 10,
) -> np.ndarray:
    """torchvision ``RandomErasing.get_params`` for ``count`` images of H×W at once.

    Returns:
        (count, 4) int64 ``[y, x, h, w]``; ``h = w = 0`` (nothing erased) where no try fits.
    """
    if count == 0:
        return np.zeros((0, 4), dtype=np.int64)
    area = float(height * width)
    erase_area = area * rng.uniform(scale[0], scale[1], size=(count, attempts))
    log_ratio = np.log(np.asarray(ratio, dtype=np.float64))
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(count, attempts)))
    h = np.rint(np.sqrt(erase_area * aspect)).astype(np.int64)
    w = np.rint(np.sqrt(erase_area / aspect)).astype(np.int64)
    fits = (h < height) & (w < width)
    first = np.argmax(fits, axis=1)
    rows = np.arange(count)
    found = fits[rows, first]
    h = np.where(found, h[rows, first], 0)
    w = np.where(found, w[rows, first], 0)
    y = rng.integers(0, height - h + 1)
    x = rng.integers(0, width - w + 1)
    return np.stack([np.where(found, y, 0), np.where(found, x, 0), h, w], axis=1).astype(np.int64)


def rect_masks(rects: Any, height: int, width: int, xp: Any = np) -> Any:
    """(B, H, W) uint8, 1 inside each ``[y, x, h, w]`` rectangle (NumPy or CuPy)."""
    rects = xp.asarray(rects).reshape(-1, 4)
    ys = xp.arange(height)[None, :, None]
    xs = xp.arange(width)[None, None, :]
    y0, x0, h, w = (rects[:, k][:, None, None] for k in range(4))
    return ((ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)).astype(xp.uint8)


def feature_masks(masks: Any, stride: int) -> Any:
    """CP2's masks at the output stride: ``masks[..., s//2::s, s//2::s]`` (centre samples)."""
    return masks[..., stride // 2 :: stride, stride // 2 :: stride]


def feature_size(output_size: int, stride: int) -> int:
    """Side of :func:`feature_masks` for an ``output_size`` image (224, 16 → 14)."""
    return len(range(stride // 2, output_size, stride)) if output_size > stride // 2 else 0


@dataclass(frozen=True)
class CP2Composition:
    """I_q, I_k (B, S, S, 3) uint8; M_q, M_k (B, S, S) uint8; the masks at the feature stride
    (B, S', S') uint8."""

    image_q: Any
    image_k: Any
    mask_q: Any
    mask_k: Any
    mask_q_feat: Any
    mask_k_feat: Any


def compose_cp2(fg_q: Any, fg_k: Any, bg_q: Any, bg_k: Any, rect_q: Any, rect_k: Any, stride: int) -> CP2Composition:
    """Paste each foreground view onto its background through its rectangle (NumPy: the
    twin; CuPy: one composite launch for both views of the batch).

    Args:
        fg_q, fg_k, bg_q, bg_k: (B, S, S, 3) uint8 augmented views.
        rect_q, rect_k: (B, 4) ``[y, x, h, w]`` (see :func:`random_erasing_rects`).
        stride: the feature stride of the masks (16 in CP2).
    """
    from ...kernels.composite import composite

    xp = np if isinstance(fg_q, np.ndarray) else cupy_module()
    b, height, width, _ = fg_q.shape
    masks = rect_masks(xp.concatenate([xp.asarray(rect_q).reshape(-1, 4), xp.asarray(rect_k).reshape(-1, 4)]), height, width, xp)
    dst = xp.concatenate([bg_q, bg_k])
    src = xp.concatenate([fg_q, fg_k])
    images = composite(dst, src, xp.arange(2 * b, dtype=xp.int64), masks)
    small = xp.ascontiguousarray(feature_masks(masks, stride))
    return CP2Composition(images[:b], images[b:], masks[:b], masks[b:], small[:b], small[b:])


