"""The host side shared by the image-folder pipelines (CutMix, CP²): epoch order, batches,
skipping bad files, and the torchvision ``RandomResizedCrop`` window draw.

Determinism follows the copy-paste source: the epoch order is a function of (seed, epoch),
sharded after sampling; batch ``k`` of an epoch draws its randomness from
``np.random.default_rng([seed, epoch, shard_id, k, stream])``, one ``stream`` per kind of
draw (see the subclasses). So a run is a function of its seed, and a run resumed from a
:class:`~decal.dali_pipes.core.epoch_source.LoaderPosition` continues exactly as it would
have. The draws depend on the image sizes (read from each file's header on the host), never
on anything DALI computes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..core.epoch_source import POSITION_FIELDS, EpochBatchSource
from .image_folder import ImageFolder
from ..core.samplers import UniformSampler

__all__ = ["FolderBatchSource", "random_resized_crop_params", "Payload", "POSITION_FIELDS"]

#: (dataset index, encoded bytes, (height, width)).
Payload = tuple[int, np.ndarray, tuple[int, int]]


def random_resized_crop_params(
    rng: np.random.Generator,
    heights: Sequence[int] | np.ndarray,
    widths: Sequence[int] | np.ndarray,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    attempts: int = 10,
) -> np.ndarray:
    """Crop windows of torchvision's ``RandomResizedCrop.get_params``, for a batch at once.

    Per image of size H×W: up to ``attempts`` tries of area fraction ~ U(scale) and aspect
    ratio w/h ~ exp(U(log ratio)), ``w = round(sqrt(area·aspect))``,
    ``h = round(sqrt(area/aspect))`` (round half to even, as Python's ``round``); the first
    try with ``0 < w <= W`` and ``0 < h <= H`` wins, placed uniformly
    (``y ~ U{0..H-h}``, ``x ~ U{0..W-w}``). If none fits, the fallback is torchvision's
    central crop clamped to the ratio range. All tries are drawn up front (vectorised), so
    the sequence of draws differs from torchvision's, the distribution does not.

    Returns:
        (B, 4) int64 ``[x, y, w, h]`` in pixels.
    """
    h_img = np.asarray(heights, dtype=np.int64)
    w_img = np.asarray(widths, dtype=np.int64)
    n = len(h_img)
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    area = (h_img * w_img).astype(np.float64)[:, None]
    target_area = area * rng.uniform(scale[0], scale[1], size=(n, attempts))
    log_ratio = np.log(np.asarray(ratio, dtype=np.float64))
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, attempts)))
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= w_img[:, None]) & (h > 0) & (h <= h_img[:, None])
    first = np.argmax(fits, axis=1)
    found = fits[np.arange(n), first]
    cw = np.where(found, w[np.arange(n), first], 0)
    ch = np.where(found, h[np.arange(n), first], 0)
    # fallback: central crop (torchvision): the whole image, clamped to the ratio range
    in_ratio = w_img / h_img
    lo, hi = min(ratio), max(ratio)
    fw = np.where(in_ratio < lo, w_img, np.where(in_ratio > hi, np.rint(h_img * hi).astype(np.int64), w_img))
    fh = np.where(in_ratio < lo, np.rint(w_img / lo).astype(np.int64), h_img)
    cw = np.where(found, cw, np.clip(fw, 1, w_img))
    ch = np.where(found, ch, np.clip(fh, 1, h_img))
    y = rng.integers(0, h_img - ch + 1)
    x = rng.integers(0, w_img - cw + 1)
    y = np.where(found, y, (h_img - ch) // 2)
    x = np.where(found, x, (w_img - cw) // 2)
    return np.stack([x, y, cw, ch], axis=1).astype(np.int64)


class FolderBatchSource(EpochBatchSource):
    """Batch-mode ``fn.external_source`` callable over an :class:`ImageFolder` (base class of
    the CutMix and CP² sources): a uniform (optionally shuffled) epoch order, and payloads
    :data:`Payload` read with :meth:`ImageFolder.read_image`. Subclasses set
    :attr:`column_names` and implement :meth:`columns`.
    """

    def __init__(
        self,
        dataset: ImageFolder,
        *,
        seed: int,
        shuffle: bool = True,
        **run: Any,
    ) -> None:
        """``run``: the other options of :class:`EpochBatchSource` (``batch_size``,
        ``shard_id``, ``num_shards``, ``drop_last``, ``on_error``, ``position``)."""
        super().__init__(dataset, UniformSampler(len(dataset), seed=seed, shuffle=shuffle), seed=seed, **run)

    def read(self, dataset: ImageFolder, index: int) -> Payload:
        """(index, bytes, (h, w)) of one image; DatasetError for a bad file."""
        encoded, size = dataset.read_image(index)
        return index, encoded, size
