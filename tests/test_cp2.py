"""CP² draws, masks and the NumPy twin of the composition, against the CP2 code's semantics
(github.com/wangf3014/CP2 main.py: RandomErasing(p=1, scale=(0.5, 0.8), ratio=(0.8, 1.25),
value=0) on each background; ``image_q = fg_q * mask_q + bg0``; masks at the stride by
``mask[:, s//2::s, s//2::s]``) and torchvision's ``RandomErasing.get_params``."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from decal.dali_pipes.cp2.twin import (
    CP2MaskConfig,
    CP2ViewConfig,
    compose_cp2,
    draw_view_params,
    feature_masks,
    feature_size,
    random_erasing_rects,
    rect_masks,
)


class UniformScript:
    """Stands in for the generator in random_erasing_rects: scripted uniforms and integers."""

    def __init__(self, uniform, integers):
        self.uniform_q, self.integers_q = deque(uniform), deque(integers)

    def uniform(self, low, high, size):
        return np.array([self.uniform_q.popleft() for _ in range(int(np.prod(size)))]).reshape(size)

    def integers(self, low, high):
        return np.array([self.integers_q.popleft() for _ in range(len(high))])


def test_erasing_rect_hand_values() -> None:
    # 224²: area fraction 0.6 → 30105.6 px, aspect 1 → h = w = round(173.51) = 174;
    # y ~ U{0..50}, x ~ U{0..50}
    rng = UniformScript(uniform=[0.6] * 10 + [0.0] * 10, integers=[7, 50])
    rect = random_erasing_rects(rng, 1, 224, 224)
    assert rect.tolist() == [[7, 50, 174, 174]]
    # aspect = exp(log 1.25) = 1.25 (h/w) at area 0.8: h = round(sqrt(40140.8·1.25)) = 224 is not
    # < 224 (rejected); the second try (area 0.5, aspect 0.8) fits: h = round(141.99) = 142, w = 177
    rng = UniformScript(uniform=[0.8, 0.5] + [0.5] * 8 + [math.log(1.25), math.log(0.8)] + [0.0] * 8, integers=[1, 2])
    assert random_erasing_rects(rng, 1, 224, 224).tolist() == [[1, 2, 142, 177]]


def test_erasing_fallback_erases_nothing_like_torchvision() -> None:
    """No try fits (an area of 99–100 % cannot be < H × < W): torchvision returns the image
    unchanged, so CP2's mask would be empty; ours is empty too."""
    rng = np.random.default_rng(0)
    rects = random_erasing_rects(rng, 5, 32, 32, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    assert (rects[:, 2:] == 0).all() and rect_masks(rects, 32, 32).sum() == 0
    image = torch.rand(3, 32, 32)
    erased = T.RandomErasing(p=1.0, scale=(0.99, 1.0), ratio=(1.0, 1.0), value=0.0)(image.clone())
    torch.testing.assert_close(erased, image)


def test_erasing_rects_follow_the_ranges_and_torchvision_distribution() -> None:
    n, s = 4000, 224
    rects = random_erasing_rects(np.random.default_rng(1), n, s, s)
    y, x, h, w = rects.T
    assert (h > 0).all() and (y >= 0).all() and (x >= 0).all() and (y + h <= s).all() and (x + w <= s).all()
    area = h * w / (s * s)
    assert area.min() >= 0.5 - 2 * s / (s * s) and area.max() <= 0.8 + 2 * s / (s * s)
    aspect = h / w
    assert aspect.min() >= 0.8 * (1 - 1 / w.min()) and aspect.max() <= 1.25 * (1 + 1 / h.min())
    torch.manual_seed(0)
    image = torch.zeros(3, s, s)
    ref = np.array(
        [T.RandomErasing.get_params(image, scale=(0.5, 0.8), ratio=(0.8, 1.25), value=[0.0])[:4] for _ in range(n)]
    )
    assert abs(area.mean() - (ref[:, 2] * ref[:, 3] / (s * s)).mean()) < 0.01
    assert abs(np.log(aspect).mean() - np.log(ref[:, 2] / ref[:, 3]).mean()) < 0.01
    assert abs(y.mean() - ref[:, 0].mean()) < 1.5 and abs(x.mean() - ref[:, 1].mean()) < 1.5


def test_masks_and_stride_sampling() -> None:
    masks = rect_masks(np.array([[8, 0, 16, 224], [0, 0, 0, 0], [0, 0, 224, 224]]), 224, 224)
    assert masks.shape == (3, 224, 224) and masks.dtype == np.uint8
    assert masks[0].sum() == 16 * 224 and masks[0, 8:24].all() and masks[1].sum() == 0
    small = feature_masks(masks, 16)
    assert small.shape == (3, 14, 14) == (3, feature_size(224, 16), feature_size(224, 16))
    # CP2 samples pixel 8 + 16 k: rows 8 and 24 → feature rows 0 (inside) and 1 (outside)
    assert small[0, 0].all() and not small[0, 1:].any() and small[2].all() and not small[1].any()
    np.testing.assert_array_equal(small, masks[:, 8::16, 8::16])
    assert feature_size(64, 16) == 4 and feature_size(8, 16) == 0


def test_composition_is_cp2_formula() -> None:
    rng = np.random.default_rng(2)
    b, s = 3, 64
    fg_q, fg_k, bg_q, bg_k = (rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8) for _ in range(4))
    rect_q = random_erasing_rects(rng, b, s, s)
    rect_k = random_erasing_rects(rng, b, s, s)
    out = compose_cp2(fg_q, fg_k, bg_q, bg_k, rect_q, rect_k, 16)
    for fg, bg, rect, image, mask, small in [
        (fg_q, bg_q, rect_q, out.image_q, out.mask_q, out.mask_q_feat),
        (fg_k, bg_k, rect_k, out.image_k, out.mask_k, out.mask_k_feat),
    ]:
        m = np.zeros((b, s, s), np.uint8)
        for i, (y, x, h, w) in enumerate(rect):
            m[i, y : y + h, x : x + w] = 1
        np.testing.assert_array_equal(mask, m)
        np.testing.assert_array_equal(image, fg * m[..., None] + bg * (1 - m[..., None]))
        np.testing.assert_array_equal(small, m[:, 8::16, 8::16])
        # CP2 composes after normalisation: fg_norm * mask + bg_norm erased to 0 inside
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        norm = lambda a: (a / 255.0 - mean) / std  # noqa: E731
        cp2 = norm(fg) * m[..., None] + norm(bg) * (1 - m[..., None])
        np.testing.assert_allclose(norm(image), cp2, atol=1e-12)
    assert not np.array_equal(out.mask_q, out.mask_k)  # independent rectangles, as in CP2


def test_view_draws_follow_moco_v2() -> None:
    cfg = CP2ViewConfig()
    n = 6000
    rng = np.random.default_rng(3)
    params = draw_view_params(rng, np.full(n, 300), np.full(n, 400), cfg)
    assert abs(params.jitter.mean() - 0.8) < 0.02
    assert abs(params.grayscale.mean() - 0.2) < 0.02
    assert abs(params.blur.mean() - 0.5) < 0.02 and abs(params.flip.mean() - 0.5) < 0.02
    j = params.jitter
    for factor in (params.brightness, params.contrast, params.saturation):
        assert factor[j].min() >= 0.6 and factor[j].max() <= 1.4 and (factor[~j] == 1).all()
    assert np.abs(params.hue[j]).max() <= 0.1 and (params.hue[~j] == 0).all()
    assert params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0
    twist = params.colour_twist()
    np.testing.assert_array_equal(twist[params.grayscale, 2], 0.0)  # grayscale: saturation 0
    np.testing.assert_allclose(twist[:, 3], 360.0 * params.hue, rtol=1e-6)  # hue factor → degrees
    blur = params.blur_args()
    np.testing.assert_array_equal(blur[~params.blur, 1], 1.0)  # a window of 1: identity
    np.testing.assert_array_equal(blur[params.blur, 1], 2 * np.ceil(3 * params.sigma[params.blur]) + 1)
    area = params.crop[:, 2] * params.crop[:, 3] / (300 * 400)
    assert area.min() >= 0.2 - 0.01 and area.max() <= 1.0


def test_configs_are_validated() -> None:
    with pytest.raises(ValueError, match="area"):
        CP2MaskConfig(area=(0.9, 0.5))
    with pytest.raises(ValueError, match="stride"):
        CP2MaskConfig(stride=0)
    with pytest.raises(ValueError, match="hue"):
        CP2ViewConfig(hue=0.7)
    with pytest.raises(ValueError, match="blur_sigma"):
        CP2ViewConfig(blur_sigma=(0.0, 2.0))
