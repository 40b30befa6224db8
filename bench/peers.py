"""The nearest GPU peers on the same batch, in the same run (``decal bench --modes peers``).

* copy-paste: decal's step (:func:`~decal.kernels.copy_paste_fused.copy_paste_batch_fused`:
  random subset of each partner's instances, union alpha, composite, occlusion update of the
  destination masks, boxes and areas recomputed, occluded instances dropped) against kornia's
  ``kornia.augmentation.RandomTransplantation`` (kornia 0.9: one randomly chosen label of the
  previous image of the batch transplanted into each image, image and label map). kornia works
  on a semantic label map, so it gets one made from the same instance masks (pixel = 1 + index
  of the last instance covering it within its image, 0 = background) and the images as
  (B, 3, S, S) float32, as it requires.
* CutMix: decal's (:mod:`decal.dali_pipes.cutmix.twin`: host draws, one compositing launch, timm
  soft targets) against ``torchvision.transforms.v2.CutMix`` on the same (B, 3, S, S) uint8
  images and (B,) labels (the label of each image's first instance).

Each row: median milliseconds per batch over ``repeats`` calls after one untimed call, with
the device synchronised after each; images/s from it; and the device memory held at the peak
(CuPy's pool after a call that started from an empty pool for decal, torch's
``max_memory_allocated`` for the peers; both count the inputs). Rows are measured on the GPU
(``device="gpu"``); on the CPU (``device="cpu"``: NumPy and torch CPU tensors) only the
plumbing is exercised (the test suite), and ``decal bench`` skips the mode with a reason
without a GPU. A missing package (kornia, torchvision) skips its row with a reason.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable, Literal

import numpy as np

from .sample_batch import SampleBatch

Device = Literal["gpu", "cpu"]


def _module(name: str) -> tuple[Any, str | None]:
    """``(module, None)`` or ``(None, why it cannot be used)``."""
    try:
        return importlib.import_module(name), None
    except Exception as error:  # ImportError, or a broken install failing at import
        return None, f"{name} not importable ({type(error).__name__}: {error})"


def _sync(device: Device) -> Callable[[], None]:
    if device == "cpu":
        return lambda: None
    import cupy

    return cupy.cuda.runtime.deviceSynchronize


def time_ms(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    """Median wall-clock milliseconds of ``fn(); sync()`` over ``repeats`` calls, after one
    untimed call (compilation, allocator warm-up)."""
    fn()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _row(name: str, ms: float, batch: int, memory_bytes: int | None, note: str) -> dict[str, Any]:
    return {"name": name, "ms": round(ms, 3), "images_per_s": round(batch / ms * 1e3, 1) if ms > 0 else None,
            "device_memory_gib": None if memory_bytes is None else round(memory_bytes / 2**30, 3), "note": note}


def _measured(name: str, step: Callable[[], Any], a: "PeerArrays", memory: Callable[..., int | None],
              note: str, repeats: int) -> dict[str, Any]:
    """A row for ``step`` on the batch ``a``, or ``{"name", "error"}`` if it raises (a peer's
    failure must not cost the other rows)."""
    try:
        ms = time_ms(step, _sync(a.device), repeats)
        return _row(name, ms, a.size, memory(a.device, step), note)
    except Exception as error:
        return {"name": name, "error": f"{type(error).__name__}: {error}"[:300]}


def _decal_memory(device: Device, fn: Callable[[], Any]) -> int | None:
    """Bytes CuPy's pool holds after ``fn`` ran from an emptied pool (None on the CPU)."""
    if device == "cpu":
        return None
    import cupy

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    fn()
    cupy.cuda.runtime.deviceSynchronize()
    return int(pool.total_bytes())


def _torch_memory(device: Device, fn: Callable[[], Any]) -> int | None:
    """torch's peak allocated bytes during ``fn`` (None on the CPU)."""
    if device == "cpu":
        return None
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


class PeerArrays:
    """One batch's arrays on ``device``, built once for every row: decal's (NumPy or CuPy:
    images (B, S, S, 3) uint8, masks (M, S, S) uint8 with their areas and boxes, rasterised
    from the descriptors) and the torch tensors the peers take (images (B, 3, S, S) uint8 and
    float32 in [0, 1], the (B, S, S) int64 label map, (B,) int64 image labels)."""

    def __init__(self, batch: SampleBatch, device: Device) -> None:
        import torch

        from decal.kernels.instance_masks import rasterize_instances

        self.device = device
        self.torch_device = "cuda" if device == "gpu" else "cpu"
        desc = batch.descriptors.to_device() if device == "gpu" else batch.descriptors
        self.masks, self.areas, self.boxes = rasterize_instances(desc)
        if device == "gpu":
            import cupy

            self.xp = cupy
            self.images = cupy.asarray(batch.images)
        else:
            self.xp = np
            self.images = batch.images
        self.offsets, self.labels, self.crowd = batch.offsets, batch.labels, batch.crowd
        self.size = int(batch.images.shape[0])
        nchw = torch.as_tensor(np.ascontiguousarray(batch.images.transpose(0, 3, 1, 2)), device=self.torch_device)
        self.images_nchw_u8 = nchw
        self.images_nchw_f32 = nchw.float() / 255.0
        self.label_map = torch.as_tensor(self._label_map(), device=self.torch_device)
        first = np.minimum(batch.offsets[:-1], max(len(batch.labels) - 1, 0))
        image_labels = batch.labels[first] if len(batch.labels) else np.zeros(self.size, np.int64)
        self.image_labels_host = image_labels.astype(np.int64)
        self.num_classes = int(image_labels.max()) + 1 if self.size else 1
        self.image_labels = torch.as_tensor(self.image_labels_host, device=self.torch_device)

    def _label_map(self) -> np.ndarray:
        """(B, S, S) int64: 1 + index of the last instance covering the pixel within its image."""
        xp, out = self.xp, []
        side = self.images.shape[1]
        for b in range(self.size):
            lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
            if hi == lo:
                out.append(np.zeros((side, side), np.int64))
                continue
            ids = xp.arange(1, hi - lo + 1, dtype=xp.int64)[:, None, None]
            plane = (self.masks[lo:hi].astype(xp.int64) * ids).max(axis=0)
            out.append(plane.get() if xp is not np else plane)
        return np.stack(out)


def copy_paste_rows(a: PeerArrays, repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """decal's copy-paste step and kornia's ``RandomTransplantation`` on the batch ``a``."""
    from decal.kernels.copy_paste import CopyPasteParams
    from decal.kernels.copy_paste_fused import copy_paste_batch_fused

    params = CopyPasteParams()
    rng = np.random.default_rng(seed)

    def decal_step() -> Any:
        return copy_paste_batch_fused(a.images, a.masks, a.areas, a.boxes, a.offsets, a.labels, a.crowd, params, rng)

    rows = [_measured("decal copy_paste_batch_fused", decal_step, a, _decal_memory,
                      f"uint8 NHWC, {a.masks.shape[0]} instance masks; boxes, areas, occlusion filter included", repeats)]
    kornia_aug, why = _module("kornia.augmentation")
    if kornia_aug is None:
        return rows + [{"name": "kornia RandomTransplantation", "skipped": why}]
    import torch

    torch.manual_seed(seed)
    transplant = kornia_aug.RandomTransplantation(p=1.0)

    def kornia_step() -> Any:
        return transplant(a.images_nchw_f32, a.label_map)

    rows.append(_measured("kornia RandomTransplantation", kornia_step, a, _torch_memory,
                          "float32 NCHW + int64 label map; one label per image, no boxes", repeats))
    return rows


def cutmix_rows(a: PeerArrays, repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """decal's CutMix and ``torchvision.transforms.v2.CutMix`` on the batch ``a``'s images."""
    from decal.dali_pipes.cutmix.twin import MixConfig, apply_mix, draw_mix_params, mix_targets

    cfg = MixConfig(num_classes=a.num_classes)
    rng = np.random.default_rng(seed)
    _, side, _, _ = a.images.shape

    def decal_step() -> Any:
        mix = draw_mix_params(rng, a.size, side, side, cfg)
        images = apply_mix(a.images, a.xp.asarray(mix.partner), a.xp.asarray(mix.boxes), a.xp.asarray(mix.weight))
        targets = a.xp.asarray(mix_targets(a.image_labels_host, mix.lam, mix.partner, cfg.num_classes))
        return images, targets

    rows = [_measured("decal CutMix (draw, composite, targets)", decal_step, a, _decal_memory,
                      "uint8 NHWC, batch mode, timm targets", repeats)]
    v2, why = _module("torchvision.transforms.v2")
    if v2 is None:
        return rows + [{"name": "torchvision v2.CutMix", "skipped": why}]
    import torch

    torch.manual_seed(seed)
    cutmix = v2.CutMix(num_classes=a.num_classes)

    def torchvision_step() -> Any:
        return cutmix(a.images_nchw_u8, a.image_labels)

    rows.append(_measured("torchvision v2.CutMix", torchvision_step, a, _torch_memory,
                          "uint8 NCHW, one box per batch, soft targets", repeats))
    return rows
