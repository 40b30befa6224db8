"""CutMix / MixUp on a batch: the host-side draws, the soft targets, and the NumPy twin.

Semantics of timm 1.0.31's ``Mixup`` / ``FastCollateMixup`` (``timm/data/mixup.py``, Ross
Wightman), for CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train Strong
Classifiers with Localizable Features") and MixUp (Zhang et al. 2018):

* partner: sample ``i`` mixes with sample ``j = B - 1 - i`` (timm mixes with the batch
  flipped, ``x.flip(0)``, in every mode);
* ``mode="batch"``: one draw for the whole batch: with probability ``prob`` mix, then (both
  enabled) CutMix with probability ``switch_prob`` else MixUp; λ ~ Beta(α, α) of the chosen
  kind; one box for all samples;
* ``mode="elem"``: the same draws independently per sample (each its own λ and box);
* ``mode="pair"``: per pair (i, B-1-i): one draw for the first half of the batch, the pair
  swaps the same box (CutMix) or blends both ways with the same λ (MixUp);
* CutMix box (timm 1.0.31 ``rand_bbox``): side ratio √(1−λ), ``cut = int(side · ratio)``,
  centre ``cy ~ U{0..H-1}``, ``cx ~ U{0..W-1}``, edges ``[c - cut // 2, c + (cut + 1) // 2)``
  clipped to the image (so an unclipped box has exactly ``cut`` pixels on each side; timm
  before 1.0.29 used ``c + cut // 2`` and lost a pixel on odd sides); or (``cutmix_minmax``)
  timm 1.0.31's ``rand_bbox_minmax``, whose corner ``yl ~ U{0..H-cut_h}`` includes the last
  position;
* ``correct_lam`` (or ``cutmix_minmax``): λ = 1 − clipped box area / image area;
* targets (timm ``mixup_target``): ``off = smoothing / C``, ``on = 1 − smoothing + off``,
  ``y = λ · onehot(y_i) + (1 − λ) · onehot(y_partner)``; float32 (B, C).

Images are mixed as uint8 before normalisation, as timm's ``FastCollateMixup`` does (the
path timm uses with its GPU prefetcher): the CutMix box is copied, the MixUp blend rounded
(timm ``np.rint``; here ``floor(v + 0.5)``, the shared compositing kernel, so the two differ
only on exact .5 ties). Every image op is one call of
:func:`decal.kernels.composite.composite` with alpha = ``weight`` inside ``box`` and 0 outside
(CutMix: box = cut box, weight 1; MixUp: box = whole image, weight 1 − λ; unmixed: weight 0).

Odd batch sizes (timm asserts an even batch): accepted. The middle sample ``m = B // 2`` is
its own partner in every mode; it is left unmixed (weight 0) and reported with λ = 1, so its
target is its own (smoothed) one-hot label, exactly what timm's formulas give for a sample
mixed with itself. In ``pair`` mode it is the one sample outside every pair.

Randomness comes from a ``numpy.random.Generator`` (one per batch, drawn on the host), so the
numbers differ from timm's global ``np.random`` stream; the sequence of draws per mode follows
timm's (``_params_per_batch`` / ``_params_per_elem``), except that the boxes of a batch are
drawn vectorised after the λs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...kernels.array_module import cupy_module

__all__ = [
    "MixConfig",
    "MixParams",
    "mirror_partner",
    "rand_bbox",
    "rand_bbox_minmax",
    "cutmix_bbox_and_lam",
    "draw_mix_params",
    "one_hot",
    "mix_targets",
    "mix_alpha",
    "apply_mix",
]

Mode = Literal["batch", "elem", "pair"]


@dataclass(frozen=True)
class MixConfig:
    """CutMix/MixUp parameters, with timm ``Mixup``'s meaning.

    Attributes:
        num_classes: C, the width of the soft targets.
        mixup_alpha: MixUp is enabled if > 0 (Beta(α, α)).
        cutmix_alpha: CutMix is enabled if > 0 (Beta(α, α)). Defaults make this CutMix only.
        cutmix_minmax: (min, max) box side ratios; enables CutMix with α forced to 1 and uses
            ``rand_bbox_minmax`` instead of λ for the box (as timm).
        prob: probability of mixing a batch (``batch``) or a sample/pair (``elem``/``pair``).
        switch_prob: probability of CutMix rather than MixUp when both are enabled.
        mode: ``"batch"``, ``"elem"`` or ``"pair"``.
        correct_lam: λ = 1 − clipped box area / image area.
        label_smoothing: ε of the smoothed one-hot targets.
    """

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: Mode = "batch"
    correct_lam: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.mode not in ("batch", "elem", "pair"):
            raise ValueError(f"mode must be 'batch', 'elem' or 'pair', got {self.mode!r}")
        for name in ("prob", "switch_prob", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {self.mixup_alpha}, {self.cutmix_alpha}")
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"cutmix_minmax must be 0 <= min < max <= 1, got {self.cutmix_minmax}")
        if self.effective_cutmix_alpha <= 0 and self.mixup_alpha <= 0:
            raise ValueError("one of mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax must be set")

    @property
    def effective_cutmix_alpha(self) -> float:
        """timm forces α = 1 when ``cutmix_minmax`` is set."""
        return 1.0 if self.cutmix_minmax is not None else float(self.cutmix_alpha)


@dataclass(frozen=True)
class MixParams:
    """What was drawn for one batch of B images of H×W.

    Attributes:
        partner: (B,) int64, the sample mixed into each sample (``B - 1 - i``).
        lam: (B,) float32, weight of the sample's own label (1 = unmixed), after
            ``correct_lam``.
        use_cutmix: (B,) bool, CutMix (True) or MixUp (False) for mixed samples.
        boxes: (B, 4) int64 ``(yl, yh, xl, xh)``, the region taken from the partner (the
            whole image for MixUp; empty for unmixed samples).
        weight: (B,) float32, alpha inside ``boxes`` (1 CutMix, 1 − λ MixUp, 0 unmixed).
    """

    partner: np.ndarray
    lam: np.ndarray
    use_cutmix: np.ndarray
    boxes: np.ndarray
    weight: np.ndarray

    @property
    def mixed(self) -> np.ndarray:
        """(B,) bool, samples whose image changes."""
        return self.weight > 0


def mirror_partner(batch_size: int) -> np.ndarray:
    """timm's partner of every sample: ``B - 1 - i`` (the batch flipped)."""
    return np.arange(batch_size - 1, -1, -1, dtype=np.int64)


def rand_bbox(
    rng: np.random.Generator, height: int, width: int, lam: Any, count: int | None = None, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """timm 1.0.31 ``rand_bbox``: a box of sides ``cut_h = int(H·√(1−λ))`` ×
    ``cut_w = int(W·√(1−λ))`` around a uniform centre ``(cy, cx)``, rows
    ``[cy - cut_h // 2, cy + (cut_h + 1) // 2)`` (columns alike), clipped to the image.
    ``lam`` may be an array of ``count`` values (one box each). Returns int64
    ``(yl, yh, xl, xh)``, half-open pixel bounds."""
    ratio = np.sqrt(1.0 - np.asarray(lam, dtype=np.float64))
    cut_h = (height * ratio).astype(np.int64)
    cut_w = (width * ratio).astype(np.int64)
    margin_y = (margin * cut_h).astype(np.int64)
    margin_x = (margin * cut_w).astype(np.int64)
    cy = rng.integers(margin_y, height - margin_y, size=count)
    cx = rng.integers(margin_x, width - margin_x, size=count)
    yl = np.clip(cy - cut_h // 2, 0, height)
    yh = np.clip(cy + (cut_h + 1) // 2, 0, height)
    xl = np.clip(cx - cut_w // 2, 0, width)
    xh = np.clip(cx + (cut_w + 1) // 2, 0, width)
    return yl, yh, xl, xh


def rand_bbox_minmax(
    rng: np.random.Generator, height: int, width: int, minmax: tuple[float, float], count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """timm 1.0.31 ``rand_bbox_minmax``: box sides uniform in ``[int(S·min), int(S·max))``,
    top-left corner uniform in ``[0, S - cut]`` (every position inside the image, the last
    included). Returns int64 ``(yl, yu, xl, xu)``, half-open pixel bounds."""
    cut_h = rng.integers(int(height * minmax[0]), int(height * minmax[1]), size=count)
    cut_w = rng.integers(int(width * minmax[0]), int(width * minmax[1]), size=count)
    yl = rng.integers(0, height - cut_h + 1)
    xl = rng.integers(0, width - cut_w + 1)
    return yl, yl + cut_h, xl, xl + cut_w


def cutmix_bbox_and_lam(
    rng: np.random.Generator,
    height: int,
    width: int,
    lam: Any,
    ratio_minmax: tuple[float, float] | None = None,
    correct_lam: bool = True,
    count: int | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]:
    """timm 1.0.31 ``cutmix_bbox_and_lam``: the box, and λ corrected to 1 − box area / image area
    when ``correct_lam`` or ``ratio_minmax`` is set (otherwise λ unchanged)."""
    if ratio_minmax is not None:
        yl, yu, xl, xu = rand_bbox_minmax(rng, height, width, ratio_minmax, count=count)
    else:
        yl, yu, xl, xu = rand_bbox(rng, height, width, lam, count=count)
    if correct_lam or ratio_minmax is not None:
        box_area = (yu - yl) * (xu - xl)
        lam = 1.0 - box_area / float(height * width)
    return (yl, yu, xl, xu), lam


def _draw_lams(rng: np.random.Generator, n: int, cfg: MixConfig) -> tuple[np.ndarray, np.ndarray]:
    """timm ``_params_per_elem`` for n samples/pairs: (λ float64, use_cutmix bool)."""
    cut_alpha, mix_alpha = cfg.effective_cutmix_alpha, cfg.mixup_alpha
    use_cutmix = np.zeros(n, dtype=bool)
    if mix_alpha > 0 and cut_alpha > 0:
        use_cutmix = rng.random(n) < cfg.switch_prob
        lam_mix = np.where(use_cutmix, rng.beta(cut_alpha, cut_alpha, size=n), rng.beta(mix_alpha, mix_alpha, size=n))
    elif mix_alpha > 0:
        lam_mix = rng.beta(mix_alpha, mix_alpha, size=n)
    else:
        use_cutmix = np.ones(n, dtype=bool)
        lam_mix = rng.beta(cut_alpha, cut_alpha, size=n)
    lam = np.where(rng.random(n) < cfg.prob, lam_mix.astype(np.float32).astype(np.float64), 1.0)
    return lam, use_cutmix


def _draw_batch_lam(rng: np.random.Generator, cfg: MixConfig) -> tuple[float, bool]:
    """timm ``_params_per_batch``: (λ, use_cutmix)."""
    if not rng.random() < cfg.prob:
        return 1.0, False
    cut_alpha, mix_alpha = cfg.effective_cutmix_alpha, cfg.mixup_alpha
    if mix_alpha > 0 and cut_alpha > 0:
        use_cutmix = bool(rng.random() < cfg.switch_prob)
        lam = rng.beta(cut_alpha, cut_alpha) if use_cutmix else rng.beta(mix_alpha, mix_alpha)
    elif mix_alpha > 0:
        use_cutmix, lam = False, rng.beta(mix_alpha, mix_alpha)
    else:
        use_cutmix, lam = True, rng.beta(cut_alpha, cut_alpha)
    return float(lam), use_cutmix


def draw_mix_params(rng: np.random.Generator, batch_size: int, height: int, width: int, cfg: MixConfig) -> MixParams:
    """Draw the mix of one batch (see the module docstring for the semantics)."""
    b = int(batch_size)
    partner = mirror_partner(b)
    lam = np.ones(b, dtype=np.float64)
    use_cutmix = np.zeros(b, dtype=bool)
    if cfg.mode == "batch":
        lam_b, cut_b = _draw_batch_lam(rng, cfg)
        lam[:] = lam_b
        use_cutmix[:] = cut_b
    elif cfg.mode == "elem":
        lam, use_cutmix = _draw_lams(rng, b, cfg)
    else:  # pair: one draw per pair (i, B-1-i), i < B // 2
        half = b // 2
        lam_h, cut_h = _draw_lams(rng, half, cfg)
        lam[:half], lam[b - half :] = lam_h, lam_h[::-1]
        use_cutmix[:half], use_cutmix[b - half :] = cut_h, cut_h[::-1]
    boxes = np.zeros((b, 4), dtype=np.int64)
    boxes[:] = (0, height, 0, width)
    active = lam != 1.0
    if b % 2 == 1:  # the middle sample is its own partner: left unmixed
        active[b // 2] = False
        lam[b // 2] = 1.0
    cut = active & use_cutmix
    # which samples own a box draw: all cut samples (batch: one box shared; pair: first half)
    if cfg.mode == "batch":
        owners = np.flatnonzero(cut)[:1]
    elif cfg.mode == "pair":
        owners = np.flatnonzero(cut[: b // 2])
    else:
        owners = np.flatnonzero(cut)
    if owners.size:
        count = None if cfg.mode == "batch" else owners.size
        (yl, yh, xl, xh), lam_c = cutmix_bbox_and_lam(
            rng, height, width, lam[owners] if count else lam[owners[0]], cfg.cutmix_minmax, cfg.correct_lam, count=count
        )
        drawn = np.stack(np.broadcast_arrays(yl, yh, xl, xh), axis=-1).reshape(-1, 4)
        lam_c = np.broadcast_to(np.asarray(lam_c, dtype=np.float64), (len(drawn),))
        if cfg.mode == "batch":
            boxes[cut] = drawn[0]
            lam[cut] = lam_c[0]
        elif cfg.mode == "pair":
            boxes[owners], boxes[b - 1 - owners] = drawn, drawn
            lam[owners], lam[b - 1 - owners] = lam_c, lam_c
        else:
            boxes[owners] = drawn
            lam[owners] = lam_c
    weight = np.where(active, np.where(use_cutmix, 1.0, 1.0 - lam), 0.0).astype(np.float32)
    boxes[~active] = 0
    # a sample whose (corrected) λ came out 1 (an empty box) is unmixed too
    lam = np.where(active, lam, 1.0)
    return MixParams(
        partner=partner,
        lam=lam.astype(np.float32),
        use_cutmix=use_cutmix & active,
        boxes=boxes,
        weight=weight,
    )


def one_hot(labels: np.ndarray, num_classes: int, on_value: float = 1.0, off_value: float = 0.0) -> np.ndarray:
    """(B, C) float32: ``on_value`` at each label, ``off_value`` elsewhere (timm ``one_hot``)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    out = np.full((labels.size, num_classes), off_value, dtype=np.float32)
    out[np.arange(labels.size), labels] = on_value
    return out


def mix_targets(
    labels: np.ndarray, lam: np.ndarray, partner: np.ndarray, num_classes: int, smoothing: float = 0.0
) -> np.ndarray:
    """timm ``mixup_target`` with per-sample λ and partners: (B, C) float32
    ``λ·onehot_ε(y) + (1−λ)·onehot_ε(y[partner])``, ``off = ε/C``, ``on = 1 − ε + off``."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    y1 = one_hot(labels, num_classes, on_value, off_value)
    y2 = one_hot(labels[np.asarray(partner, dtype=np.int64)], num_classes, on_value, off_value)
    lam32 = np.asarray(lam, dtype=np.float32).reshape(-1, 1)
    return (y1 * lam32 + y2 * (np.float32(1.0) - lam32)).astype(np.float32)


def mix_alpha(boxes: Any, weight: Any, height: int, width: int, xp: Any = np) -> Any:
    """(B, H, W) float32 alpha: ``weight[b]`` inside ``boxes[b] = (yl, yh, xl, xh)``, else 0.

    Vectorised over the batch (NumPy or CuPy arrays, ``xp`` their module)."""
    boxes = xp.asarray(boxes).reshape(-1, 4)
    weight = xp.asarray(weight, dtype=xp.float32).reshape(-1)
    ys = xp.arange(height)[None, :, None]
    xs = xp.arange(width)[None, None, :]
    yl, yh, xl, xh = (boxes[:, k][:, None, None] for k in range(4))
    inside = (ys >= yl) & (ys < yh) & (xs >= xl) & (xs < xh)
    return inside.astype(xp.float32) * weight[:, None, None]


def apply_mix(images: Any, partner: Any, boxes: Any, weight: Any) -> Any:
    """Mix a batch of (B, H, W, C) uint8 images (NumPy: the twin; CuPy: one kernel launch)."""
    from ...kernels.composite import composite

    xp = np if isinstance(images, np.ndarray) else cupy_module()
    _, height, width, _ = images.shape
    alpha = mix_alpha(boxes, weight, height, width, xp=xp)
    return composite(images, images, partner, alpha)


