"""Scale jitter (LSJ / SSJ) and flip: the per-sample geometry, drawn on the host.

Large Scale Jitter (Ghiasi et al. 2021, §3; detectron2 ``ResizeScale`` + ``FixedSizeCrop``):
the image is resized so that its longer side is ``r · output_size`` with r uniform in
[0.1, 2.0] (LSJ) or [0.8, 1.25] (SSJ), then a random ``output_size``² window is cut from it.
Where the resized image is smaller than the window, the window sticks out and the rest is
padded with gray. The window's anchor is ``crop_pos · (resized − output_size)`` per axis
with ``crop_pos`` uniform in [0, 1] (DALI ``fn.crop`` semantics): a large image is cropped at a
random place, and a small one lands at a random place on the gray canvas (detectron2 and
mmdetection put it at the top-left; a random place is our choice, and it keeps more
positional variety). A horizontal flip follows with probability ``flip_prob``.

Drawing the geometry in Python (rather than with DALI's random operators) makes the CPU and
GPU pipelines and a resumed run make identical draws for the same (seed, epoch, position).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScaleJitter:
    """Range of r, the ratio of the resized longer side to the output size."""

    min_scale: float
    max_scale: float

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"'jitter': needs 0 < min <= max, got ({self.min_scale}, {self.max_scale})"
            )

    @classmethod
    def lsj(cls) -> "ScaleJitter":
        """Large Scale Jitter, r in [0.1, 2.0] (Ghiasi et al. 2021)."""
        return cls(0.1, 2.0)

    @classmethod
    def ssj(cls) -> "ScaleJitter":
        """Standard Scale Jitter, r in [0.8, 1.25] (Ghiasi et al. 2021)."""
        return cls(0.8, 1.25)

    @classmethod
    def parse(cls, value: "ScaleJitter | str | tuple[float, float]") -> "ScaleJitter":
        """Accept a ScaleJitter, ``"lsj"``, ``"ssj"``, ``"none"`` or a (min, max) pair."""
        if isinstance(value, ScaleJitter):
            return value
        if isinstance(value, str):
            named = {"lsj": cls.lsj, "ssj": cls.ssj, "none": lambda: cls(1.0, 1.0)}
            if value.lower() not in named:
                raise ValueError(f"'jitter': expected 'lsj', 'ssj', 'none' or (min, max), got {value!r}")
            return named[value.lower()]()
        if (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
        ):
            return cls(float(value[0]), float(value[1]))
        raise ValueError(f"'jitter': expected 'lsj', 'ssj', 'none' or (min, max), got {value!r}")


@dataclass(frozen=True)
class Geometry:
    """Per-sample geometry of one batch, one entry per sample (float32 unless stated).

    Attributes:
        scale: (B,) r, the resized longer side divided by the output size.
        crop_x: (B,) crop window anchor as a fraction of (resized width − output size).
        crop_y: (B,) the same for the height.
        flip: (B,) int32, 1 to flip horizontally, else 0.
    """

    scale: np.ndarray
    crop_x: np.ndarray
    crop_y: np.ndarray
    flip: np.ndarray

    def columns(self) -> list[np.ndarray]:
        """The source's ``scale``, ``crop_x``, ``crop_y`` and ``flip`` columns: one (B,)
        array each, which ``fn.external_source`` takes as B scalars in one dense copy
        (a list of B arrays would cost DALI a conversion per sample)."""
        return [self.scale, self.crop_x, self.crop_y, self.flip]


def draw_geometry(rng: np.random.Generator, batch_size: int, jitter: ScaleJitter, flip_prob: float) -> Geometry:
    """Draw the geometry of ``batch_size`` samples from ``rng``."""
    scale = rng.uniform(jitter.min_scale, jitter.max_scale, size=batch_size)
    crop = rng.uniform(0.0, 1.0, size=(2, batch_size))
    flip = rng.uniform(0.0, 1.0, size=batch_size) < flip_prob
    return Geometry(
        scale=scale.astype(np.float32),
        crop_x=crop[0].astype(np.float32),
        crop_y=crop[1].astype(np.float32),
        flip=flip.astype(np.int32),
    )
