"""decal's CutMix boxes, λ, images and targets against timm 1.0.31's own code, on scripted draws.

timm (``timm/data/mixup.py``) draws from the global ``np.random``; decal from a
``numpy.random.Generator``. Both are given the same scripted draws: every uniform draw is a
fraction ``u`` in [0, 1) and an integer draw in ``[low, high)`` is ``low + floor(u·(high − low))``,
so the two sides get the same integer whenever they ask for the same range. timm draws one box
at a time (``cy, cx`` per sample); decal draws the boxes of a batch vectorised (every ``cy``,
then every ``cx``), so decal's queue is the transpose of timm's. The independent restatement of
the formulas, with hand-worked numbers, is tests/test_cutmix.py.

Skipped when timm is not installed (it is in the ``test`` extra, pinned to 1.0.31).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

pytest.importorskip("timm", minversion="1.0.31")
timm_mixup = pytest.importorskip("timm.data.mixup")

from decal.dali_pipes.cutmix.twin import (  # noqa: E402
    MixConfig,
    apply_mix,
    cutmix_bbox_and_lam,
    draw_mix_params,
    mix_targets,
    rand_bbox_minmax,
)


def _integer(u: Any, low: Any, high: Any) -> np.ndarray:
    low, high = np.asarray(low), np.asarray(high)
    return (low + np.floor(np.asarray(u) * (high - low))).astype(np.int64)


class FractionQueues:
    """Scripted draws: ``rand``/``beta`` values and integer fractions, taken in order."""

    def __init__(self, rand=(), beta=(), fractions=()):
        self.rand, self.beta_values, self.fractions = deque(rand), deque(beta), deque(fractions)

    def take(self, queue: deque, size: Any) -> Any:
        if size is None:
            return queue.popleft()
        return np.array([queue.popleft() for _ in range(int(np.prod(size)))]).reshape(size)

    def exhausted(self) -> bool:
        return not (self.rand or self.beta_values or self.fractions)


class ScriptedDraws:
    """Both sides' random source over one :class:`FractionQueues`: timm's ``np.random``
    (``rand``, ``beta``, ``randint``) and decal's ``Generator`` (``random``, ``beta``,
    ``integers``)."""

    def __init__(self, queues: FractionQueues):
        self.q = queues

    def rand(self, *shape):
        return self.q.take(self.q.rand, shape[0] if shape else None)

    def random(self, size=None):
        return self.q.take(self.q.rand, size)

    def beta(self, a, b, size=None):
        return self.q.take(self.q.beta_values, size)

    def randint(self, low, high=None, size=None):
        if size is None and np.ndim(high) > 0:
            size = np.shape(high)
        return _integer(self.q.take(self.q.fractions, size), low, high)

    integers = randint


class NumpyWithScriptedRandom:
    """numpy, except ``.random``: what timm's module sees as ``np`` during a test."""

    def __init__(self, random: ScriptedDraws):
        self.random = random

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@pytest.fixture
def script(monkeypatch):
    """Install scripted draws into timm's module; returns a function that makes the two sides."""

    def make(rand=(), beta=(), timm_fractions=(), decal_fractions=()):
        timm_q = FractionQueues(rand, beta, timm_fractions)
        monkeypatch.setattr(timm_mixup, "np", NumpyWithScriptedRandom(ScriptedDraws(timm_q)))
        decal_q = FractionQueues(rand, beta, decal_fractions)
        return timm_q, ScriptedDraws(decal_q), decal_q

    return make


SHAPES = [(16, 20), (15, 21), (30, 22), (33, 33), (7, 64), (224, 224), (225, 199)]


@pytest.mark.parametrize("correct_lam", [True, False])
def test_rand_bbox_and_lam_match_timm(script, correct_lam: bool) -> None:
    draws = np.random.default_rng(1)
    for height, width in SHAPES:
        for _ in range(60):
            lam = float(draws.beta(1.0, 1.0))
            u = draws.random(2)
            timm_q, rng, decal_q = script(timm_fractions=u, decal_fractions=u)
            box_t, lam_t = timm_mixup.cutmix_bbox_and_lam((3, height, width), lam, correct_lam=correct_lam)
            box_d, lam_d = cutmix_bbox_and_lam(rng, height, width, lam, correct_lam=correct_lam)
            assert timm_q.exhausted() and decal_q.exhausted()
            assert tuple(int(v) for v in box_d) == tuple(int(v) for v in box_t), (height, width, lam, u)
            assert float(lam_d) == pytest.approx(float(lam_t), abs=1e-12)


def test_rand_bbox_minmax_matches_timm_including_the_last_position(script) -> None:
    draws = np.random.default_rng(2)
    seen_last = False
    for height, width in SHAPES:
        for minmax in [(0.2, 0.8), (0.3, 0.9), (0.05, 0.5)]:
            for _ in range(30):
                u = draws.random(4)
                u[2:] = np.where(draws.random(2) < 0.2, 0.999999, u[2:])  # push corners to the far end
                timm_q, rng, _ = script(timm_fractions=u, decal_fractions=u)
                box_t = timm_mixup.rand_bbox_minmax((height, width), minmax)
                box_d = rand_bbox_minmax(rng, height, width, minmax)
                assert tuple(int(v) for v in box_d) == tuple(int(v) for v in box_t)
                assert box_d[1] <= height and box_d[3] <= width
                seen_last |= int(box_d[1]) == height or int(box_d[3]) == width
    assert seen_last  # the box touching the far edge is reachable (timm >= 1.0.29)


def _timm_collate(cfg: MixConfig, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """timm's ``FastCollateMixup`` on (B, H, W, C) uint8 images: (mixed images, targets)."""
    mixer = timm_mixup.FastCollateMixup(**asdict(cfg))  # MixConfig's fields are timm's arguments
    batch = [(np.ascontiguousarray(img.transpose(2, 0, 1)), int(y)) for img, y in zip(images, labels)]
    out, target = mixer(batch)
    return out.numpy().transpose(0, 2, 3, 1), target.numpy()


CONFIGS = [
    MixConfig(num_classes=5, cutmix_alpha=1.0, mode="batch", label_smoothing=0.1),
    MixConfig(num_classes=5, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1),
    MixConfig(num_classes=5, cutmix_alpha=1.0, mode="pair", label_smoothing=0.1),
    MixConfig(num_classes=5, cutmix_minmax=(0.2, 0.8), mode="elem"),
    MixConfig(num_classes=5, cutmix_minmax=(0.2, 0.8), mode="pair", correct_lam=False),
    MixConfig(num_classes=5, cutmix_alpha=1.0, mixup_alpha=0.8, switch_prob=0.5, prob=0.8, mode="elem"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.mode}-minmax{c.cutmix_minmax is not None}-mixup{c.mixup_alpha}")
def test_whole_batches_match_timm_fast_collate_mixup(script, cfg: MixConfig) -> None:
    """Images, λ-weighted targets and boxes of decal's twin against timm's collate, batch by batch."""
    b, h, w = 6, 15, 21  # odd sides: where timm 1.0.29 changed the edges
    draws = np.random.default_rng(3)
    n = 1 if cfg.mode == "batch" else (b // 2 if cfg.mode == "pair" else b)
    box_fields = 4 if cfg.cutmix_minmax is not None else 2
    both = cfg.mixup_alpha > 0 and cfg.effective_cutmix_alpha > 0
    for trial in range(25):
        images = draws.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
        labels = draws.integers(0, cfg.num_classes, b)
        lam_draws = draws.beta(1.0, 1.0, n).astype(np.float32)
        if cfg.mode == "batch":  # rand < prob, [rand < switch], beta
            rand = [draws.random()] + ([draws.random()] if both else [])
            beta = list(lam_draws)
        else:  # [rand(n) switch], beta(n) cutmix, [beta(n) mixup], rand(n) prob
            rand = (list(draws.random(n)) if both else []) + list(draws.random(n))
            beta = list(lam_draws) + (list(draws.beta(0.8, 0.8, n)) if both else [])
        u = draws.random((n, box_fields))  # at most one box per owner; unused ones are left over
        # timm asks per owner (cy, cx); decal per field over owners: the transpose, owners only.
        # Left-over fractions are harmless: both sides stop asking at the same point.
        timm_q, rng, decal_q = script(rand=rand, beta=beta, timm_fractions=u.ravel())
        expected_images, expected_targets = _timm_collate(cfg, images.copy(), labels)
        used_owners = (u.size - len(timm_q.fractions)) // box_fields
        owners_u = u[:used_owners]
        decal_q.fractions.extend(owners_u.T.ravel())
        params = draw_mix_params(rng, b, h, w, cfg)
        assert decal_q.exhausted() and not timm_q.rand and not timm_q.beta_values, trial
        out = apply_mix(images, params.partner, params.boxes, params.weight)
        if cfg.mixup_alpha > 0:  # MixUp: timm rounds with rint, decal floor(v + .5): .5 ties only
            assert np.abs(out.astype(int) - expected_images.astype(int)).max() <= 1
            np.testing.assert_array_equal(out[params.use_cutmix], expected_images[params.use_cutmix])
        else:
            np.testing.assert_array_equal(out, expected_images)
        targets = mix_targets(labels, params.lam, params.partner, cfg.num_classes, cfg.label_smoothing)
        np.testing.assert_allclose(targets, expected_targets, rtol=0, atol=2e-7)
