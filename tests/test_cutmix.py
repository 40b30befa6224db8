"""CutMix/MixUp draws, targets and the NumPy twin against timm 1.0.31's formulas
(timm/data/mixup.py).

timm is not a dependency of the library (tests/test_cutmix_timm.py compares with timm's own
functions when it is installed): each test here scripts the random draws (a stub generator that hands out
fixed values and records what was asked of it) and checks the result against an independent,
loop-per-sample reference written here from timm's code (``rand_bbox``,
``cutmix_bbox_and_lam``, ``mixup_target``, ``Mixup._mix_batch/_mix_elem/_mix_pair``), or
against numbers worked out by hand.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from decal.dali_pipes.cutmix.twin import (
    MixConfig,
    apply_mix,
    cutmix_bbox_and_lam,
    draw_mix_params,
    mix_alpha,
    mix_targets,
    rand_bbox,
)


class ScriptedRng:
    """Stands in for ``np.random.Generator``: returns scripted values, records every call."""

    def __init__(self, random=(), beta=(), integers=()):
        self.queues = {"random": deque(random), "beta": deque(beta), "integers": deque(integers)}
        self.calls: list[tuple] = []

    def _take(self, kind, size):
        if size is None:
            return self.queues[kind].popleft()
        return np.array([self.queues[kind].popleft() for _ in range(int(size))])

    def random(self, size=None):
        self.calls.append(("random", size))
        return self._take("random", size)

    def beta(self, a, b, size=None):
        self.calls.append(("beta", a, b, size))
        return self._take("beta", size)

    def integers(self, low, high=None, size=None):
        self.calls.append(("integers", np.asarray(low).tolist(), np.asarray(high).tolist(), size))
        if size is None and np.ndim(high) > 0:
            size = len(high)
        return self._take("integers", size)

    def exhausted(self) -> bool:
        return not any(self.queues.values())


# -- an independent reference, one sample at a time, from timm's code -----------------------


def ref_box(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """timm 1.0.31 rand_bbox with the centre given: rows [cy - cut_h // 2, cy + (cut_h + 1) // 2)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    top, left = cy - cut_h // 2, cx - cut_w // 2
    return clip(top, h), clip(top + cut_h, h), clip(left, w), clip(left + cut_w, w)


def ref_target(labels, lam, num_classes, smoothing):
    """timm mixup_target: lam scalar or per-sample; partner = the flipped batch."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    b = len(labels)
    out = np.zeros((b, num_classes))
    for i in range(b):
        l_i = lam if np.isscalar(lam) else lam[i]
        y1 = np.full(num_classes, off)
        y1[labels[i]] = on
        y2 = np.full(num_classes, off)
        y2[labels[b - 1 - i]] = on
        out[i] = y1 * l_i + y2 * (1.0 - l_i)
    return out


def ref_blend(a, b, lam):
    """uint8 MixUp as timm FastCollateMixup's blend (float32, rint)."""
    return np.rint(a.astype(np.float32) * lam + b.astype(np.float32) * (1 - lam)).astype(np.uint8)


def images_for(b: int, h: int = 16, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def mixed(images: np.ndarray, params) -> np.ndarray:
    return apply_mix(images, params.partner, params.boxes, params.weight)


# -- hand-worked numbers ------------------------------------------------------------------


def test_rand_bbox_and_correct_lam_hand_values() -> None:
    # H = W = 64, λ = 0.75: side ratio √0.25 = 0.5, cut 32, half 16; centre (cy, cx) = (10, 50)
    rng = ScriptedRng(integers=[10, 50])
    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(rng, 64, 64, 0.75, correct_lam=True)
    assert (yl, yh, xl, xh) == (0, 26, 34, 64)  # clipped at the top and the right
    assert lam == pytest.approx(1 - 26 * 30 / 4096)
    assert rng.calls == [("integers", 0, 64, None), ("integers", 0, 64, None)]
    rng = ScriptedRng(integers=[10, 50])
    _, lam = cutmix_bbox_and_lam(rng, 64, 64, 0.75, correct_lam=False)
    assert lam == 0.75
    # a non-square image: cut_h = int(30·√0.36) = 18, cut_w = int(50·0.6) = 30
    assert tuple(int(v) for v in rand_bbox(ScriptedRng(integers=[15, 25]), 30, 50, 0.64)) == (6, 24, 10, 40)
    # odd sides, timm 1.0.31 (1.0.29 on): H = 30, W = 22, λ = 0.75: cut 15 × 11, centre (10, 5):
    # rows [10 - 7, 10 + 8) = [3, 18), columns [5 - 5, 5 + 6) = [0, 11): exactly cut_h × cut_w
    # (timm <= 1.0.28 gave [3, 17) × [0, 10), a pixel short on each odd side)
    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(ScriptedRng(integers=[10, 5]), 30, 22, 0.75)
    assert (yl, yh, xl, xh) == (3, 18, 0, 11)
    assert lam == pytest.approx(0.75)


def test_targets_hand_values() -> None:
    # C = 3, ε = 0.3: off = 0.1, on = 0.8; labels [0, 2, 1]; partner = [2, 1, 0]
    labels = np.array([0, 2, 1])
    lam = np.array([0.25, 1.0, 0.5], dtype=np.float32)
    targets = mix_targets(labels, lam, np.array([2, 1, 0]), 3, smoothing=0.3)
    expected = [
        [0.25 * 0.8 + 0.75 * 0.1, 0.25 * 0.1 + 0.75 * 0.8, 0.1],  # 0 mixed with label 1
        [0.1, 0.1, 0.8],  # λ = 1: its own smoothed label
        [0.5 * 0.1 + 0.5 * 0.8, 0.5 * 0.8 + 0.5 * 0.1, 0.1],  # 1 mixed with label 0
    ]
    np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-7)
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)


# -- batch mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [4, 5])
def test_batch_mode_cutmix_fixed_draws(batch_size: int) -> None:
    h, w, c = 16, 20, 5
    cfg = MixConfig(num_classes=c, cutmix_alpha=1.0, mixup_alpha=0.8, switch_prob=0.5, label_smoothing=0.1)
    # rand < prob (0.1 < 1): mix; rand < switch_prob (0.3): CutMix; λ = 0.6; centre (4, 17)
    rng = ScriptedRng(random=[0.1, 0.3], beta=[0.6], integers=[4, 17])
    params = draw_mix_params(rng, batch_size, h, w, cfg)
    assert rng.exhausted() and rng.calls[2] == ("beta", 1.0, 1.0, None)
    box = ref_box(h, w, 0.6, 4, 17)
    lam = 1 - (box[1] - box[0]) * (box[3] - box[2]) / (h * w)
    images = images_for(batch_size, h, w)
    ref = images.copy()
    for i in range(batch_size):
        yl, yh, xl, xh = box
        ref[i, yl:yh, xl:xh] = images[batch_size - 1 - i, yl:yh, xl:xh]  # x.flip(0) region
    np.testing.assert_array_equal(mixed(images, params), ref)
    labels = np.arange(batch_size) % c
    expected_lam = np.full(batch_size, lam)
    if batch_size % 2:
        expected_lam[batch_size // 2] = 1.0  # its own partner: unmixed, reported as λ = 1
    np.testing.assert_allclose(params.lam, expected_lam, rtol=1e-6)
    np.testing.assert_allclose(
        mix_targets(labels, params.lam, params.partner, c, 0.1), ref_target(labels, lam, c, 0.1), atol=1e-6
    )  # timm's formula with the batch λ gives the same target for the middle sample too


def test_batch_mode_mixup_branch_and_skip() -> None:
    h, w, c = 16, 20, 4
    cfg = MixConfig(num_classes=c, cutmix_alpha=1.0, mixup_alpha=0.4, switch_prob=0.5)
    rng = ScriptedRng(random=[0.2, 0.7], beta=[0.3])  # 0.7 >= switch_prob: MixUp, λ = 0.3
    params = draw_mix_params(rng, 4, h, w, cfg)
    assert rng.exhausted() and rng.calls[2] == ("beta", 0.4, 0.4, None)
    images = images_for(4, h, w)
    out = mixed(images, params)
    ref = ref_blend(images, images[::-1], np.float32(0.3))
    assert np.abs(out.astype(int) - ref).max() <= 1  # floor(v + .5) vs rint: only .5 ties differ
    exact = np.floor(images.astype(np.float32) * np.float32(0.3) + images[::-1].astype(np.float32) * np.float32(0.7) + 0.5)
    np.testing.assert_array_equal(out, exact.astype(np.uint8))
    np.testing.assert_allclose(params.lam, 0.3, rtol=1e-6)
    # not mixed at all: rand >= prob draws nothing else
    cfg = MixConfig(num_classes=c, prob=0.5)
    rng = ScriptedRng(random=[0.5])
    params = draw_mix_params(rng, 4, h, w, cfg)
    assert rng.exhausted() and len(rng.calls) == 1
    np.testing.assert_array_equal(mixed(images, params), images)
    np.testing.assert_array_equal(params.lam, 1.0)
    labels = np.array([0, 1, 2, 3])
    np.testing.assert_allclose(mix_targets(labels, params.lam, params.partner, c), np.eye(4)[labels])


# -- elem and pair modes ------------------------------------------------------------------


def test_elem_mode_fixed_draws() -> None:
    h, w, c, b = 16, 20, 3, 4
    cfg = MixConfig(num_classes=c, cutmix_alpha=1.0, mixup_alpha=0.5, switch_prob=0.5, prob=0.9, mode="elem")
    # per sample: switch draws, cutmix λs, mixup λs, prob draws; then one centre per cut sample
    rng = ScriptedRng(
        random=[0.1, 0.8, 0.4, 0.9] + [0.5, 0.2, 0.95, 0.3],
        beta=[0.7, 0.1, 0.55, 0.2] + [0.9, 0.35, 0.6, 0.8],
        integers=[3, 15],  # only sample 0 is cut (sample 2 chose CutMix but failed prob): cy, cx
    )
    params = draw_mix_params(rng, b, h, w, cfg)
    assert rng.exhausted()
    # sample 0: CutMix λ 0.7 centre (3, 15); 1: MixUp λ 0.35; 2: prob failed (0.95 >= 0.9): unmixed;
    # 3: MixUp λ 0.8
    box0 = ref_box(h, w, np.float32(0.7), 3, 15)
    lam0 = 1 - (box0[1] - box0[0]) * (box0[3] - box0[2]) / (h * w)
    images = images_for(b, h, w, seed=3)
    ref = images.copy()
    ref[0, box0[0] : box0[1], box0[2] : box0[3]] = images[3, box0[0] : box0[1], box0[2] : box0[3]]
    out = mixed(images, params)
    np.testing.assert_array_equal(out[[0, 2]], ref[[0, 2]])
    assert np.abs(out[1].astype(int) - ref_blend(images[1], images[2], np.float32(0.35))).max() <= 1
    assert np.abs(out[3].astype(int) - ref_blend(images[3], images[0], np.float32(0.8))).max() <= 1
    np.testing.assert_allclose(params.lam, [lam0, 0.35, 1.0, 0.8], rtol=1e-6)
    assert params.use_cutmix.tolist() == [True, False, False, False]
    labels = np.array([0, 1, 2, 1])
    np.testing.assert_allclose(
        mix_targets(labels, params.lam, params.partner, c, 0.2), ref_target(labels, params.lam.astype(float), c, 0.2), atol=1e-6
    )


@pytest.mark.parametrize("batch_size", [4, 5])
def test_pair_mode_fixed_draws(batch_size: int) -> None:
    h, w, c = 16, 20, 6
    cfg = MixConfig(num_classes=c, cutmix_alpha=1.0, mixup_alpha=1.0, switch_prob=0.5, mode="pair")
    # two pairs: (0, B-1) CutMix λ 0.5 centre (8, 5); (1, B-2) MixUp λ 0.25
    rng = ScriptedRng(random=[0.2, 0.7, 0.0, 0.0], beta=[0.5, 0.9, 0.1, 0.25], integers=[8, 5])
    params = draw_mix_params(rng, batch_size, h, w, cfg)
    assert rng.exhausted()
    last = batch_size - 1
    box = ref_box(h, w, np.float32(0.5), 8, 5)
    lam_box = 1 - (box[1] - box[0]) * (box[3] - box[2]) / (h * w)
    images = images_for(batch_size, h, w, seed=5)
    out = mixed(images, params)
    ref_0, ref_last = images[0].copy(), images[last].copy()
    ref_0[box[0] : box[1], box[2] : box[3]] = images[last, box[0] : box[1], box[2] : box[3]]
    ref_last[box[0] : box[1], box[2] : box[3]] = images[0, box[0] : box[1], box[2] : box[3]]
    np.testing.assert_array_equal(out[0], ref_0)
    np.testing.assert_array_equal(out[last], ref_last)  # the pair swaps the same box
    assert np.abs(out[1].astype(int) - ref_blend(images[1], images[last - 1], np.float32(0.25))).max() <= 1
    assert np.abs(out[last - 1].astype(int) - ref_blend(images[last - 1], images[1], np.float32(0.25))).max() <= 1
    expected = [lam_box, 0.25] + ([1.0] if batch_size % 2 else []) + [0.25, lam_box]
    np.testing.assert_allclose(params.lam, expected, rtol=1e-6)  # timm: concat(λ, λ[::-1])
    if batch_size % 2:
        np.testing.assert_array_equal(out[2], images[2])  # the middle sample: in no pair


def test_odd_batches_in_every_mode_leave_the_middle_alone() -> None:
    rng = np.random.default_rng(0)
    images = images_for(7, 24, 24, seed=7)
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    for mode in ("batch", "elem", "pair"):
        cfg = MixConfig(num_classes=3, mixup_alpha=0.5, cutmix_alpha=1.0, mode=mode, label_smoothing=0.1)
        for _ in range(20):
            params = draw_mix_params(rng, 7, 24, 24, cfg)
            np.testing.assert_array_equal(mixed(images, params)[3], images[3])
            assert params.lam[3] == 1.0 and params.weight[3] == 0.0
            target = mix_targets(labels, params.lam, params.partner, 3, 0.1)[3]
            np.testing.assert_allclose(target, [0.1 / 3 + 0.9, 0.1 / 3, 0.1 / 3], atol=1e-6)
    single = draw_mix_params(rng, 1, 8, 8, MixConfig(num_classes=2))
    assert single.lam.tolist() == [1.0] and single.partner.tolist() == [0]


def test_cutmix_minmax_forces_alpha_one_and_corrects_lam() -> None:
    h, w = 40, 50
    cfg = MixConfig(num_classes=2, cutmix_alpha=0.2, cutmix_minmax=(0.2, 0.8))
    # cut_h in [8, 32), cut_w in [10, 40); timm 1.0.31: yl in [0, H - cut_h], xl in [0, W - cut_w]
    rng = ScriptedRng(random=[0.0], beta=[0.9], integers=[20, 30, 5, 7])
    params = draw_mix_params(rng, 2, h, w, cfg)
    assert rng.calls[1] == ("beta", 1.0, 1.0, None)
    assert rng.calls[2:] == [("integers", 8, 32, None), ("integers", 10, 40, None), ("integers", 0, 21, None), ("integers", 0, 21, None)]
    assert params.boxes[0].tolist() == [5, 25, 7, 37]
    np.testing.assert_allclose(params.lam, 1 - 20 * 30 / (h * w), rtol=1e-6)


def test_alpha_is_weight_inside_the_box() -> None:
    alpha = mix_alpha(np.array([[1, 3, 2, 5], [0, 4, 0, 6], [0, 0, 0, 0]]), np.array([1.0, 0.25, 0.0]), 4, 6)
    assert alpha.shape == (3, 4, 6) and alpha.dtype == np.float32
    expected0 = np.zeros((4, 6), np.float32)
    expected0[1:3, 2:5] = 1
    np.testing.assert_array_equal(alpha[0], expected0)
    np.testing.assert_array_equal(alpha[1], 0.25)
    np.testing.assert_array_equal(alpha[2], 0)


def test_statistics_of_real_draws() -> None:
    rng = np.random.default_rng(11)
    cfg = MixConfig(num_classes=10, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.3, prob=0.8, mode="elem")
    params = [draw_mix_params(rng, 64, 32, 32, cfg) for _ in range(60)]
    mixed_frac = np.mean([p.lam != 1.0 for p in params])
    cut = np.concatenate([p.use_cutmix[p.lam != 1.0] for p in params])
    lam_mixup = np.concatenate([p.lam[(p.lam != 1.0) & ~p.use_cutmix] for p in params])
    assert abs(mixed_frac - 0.8) < 0.03
    assert abs(cut.mean() - 0.3) < 0.03
    assert abs(lam_mixup.mean() - 0.5) < 0.03  # Beta(1, 1)
    for p in params:  # λ of a CutMix sample is 1 - its box's share of the image
        areas = (p.boxes[:, 1] - p.boxes[:, 0]) * (p.boxes[:, 3] - p.boxes[:, 2]) / (32 * 32)
        np.testing.assert_allclose(p.lam[p.use_cutmix], 1 - areas[p.use_cutmix], rtol=1e-6)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="mode"):
        MixConfig(num_classes=2, mode="half")
    with pytest.raises(ValueError, match="one of mixup_alpha"):
        MixConfig(num_classes=2, cutmix_alpha=0.0, mixup_alpha=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        MixConfig(num_classes=0)
    with pytest.raises(ValueError, match="prob"):
        MixConfig(num_classes=2, prob=1.5)
    with pytest.raises(ValueError, match="labels"):
        mix_targets(np.array([3]), np.ones(1), np.zeros(1, int), 3)
