"""The CutMix (classification) DALI pipeline: ImageFolder → random resized crop → flip →
CutMix/MixUp on the batch → normalise.

Graph (one per loader)::

    external_source(CutMixSource)            encoded, crop [x,y,w,h], flip, label, target, ...
      ├─ decoders.image_slice (mixed on GPU, cpu)   decode only the crop window (ROI decode)
      ├─ resize(S×S)                        linear + antialias (torchvision RandomResizedCrop)
      ├─ flip(horizontal)
      ├─ python_function(CutMixStep)        one compositing launch per batch
      └─ crop_mirror_normalize              float32 CHW, (x/255 − mean)/std  (or uint8 CHW)

Every random number is drawn on the host in :class:`CutMixSource`: the crop windows
(torchvision ``RandomResizedCrop.get_params`` on each file's header size, stream 0), the flips
(stream 0) and the mix (:func:`~decal.dali_pipes.cutmix.twin.draw_mix_params`, stream 1), together
with the soft targets. DALI only executes them, so the CPU and GPU pipelines agree up to the
decoders' and resamplers' rounding.

Output choice: images leave the pipeline normalised, float32 (B, 3, S, S) with ImageNet
mean/std (what a torchvision model takes), or, with ``normalize=False``, uint8 (B, 3, S, S)
(4× less memory and PCIe, normalise on the device later; previews use it). Mixing happens on
uint8 before normalisation either way, as in timm's ``FastCollateMixup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ...kernels.array_module import cupy_module
from ..core.epoch_source import LoaderPosition
from .twin import MixConfig, apply_mix, draw_mix_params, mix_targets
from ..folder.source import FolderBatchSource, Payload, random_resized_crop_params
from ..folder.image_folder import ImageFolder
from ..core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ..core.graph import pipeline_arguments

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OUTPUT_NAMES",
    "CutMixOutputs",
    "CutMixSource",
    "CutMixStep",
    "build_cutmix_pipeline",
]


class CutMixOutputs(NamedTuple):
    """The CutMix pipeline's outputs, by name (B samples each).

    Attributes:
        images: (3, S, S) uint8, or float32 normalised with ``normalize``.
        targets: (K,) float32 soft targets.
        labels: () int64 class of the destination image.
        lam: () float32 share of the destination's label.
        position: (POSITION_FIELDS,) int64, a :class:`~decal.dali_pipes.core.epoch_source.PositionRow`.
        unmixed: (S, S, 3) uint8 images before mixing, only with ``return_unmixed`` (else None).
    """

    images: Any
    targets: Any
    labels: Any
    lam: Any
    position: Any
    unmixed: Any = None


#: Names of the pipeline's outputs, in order (``unmixed`` only with ``return_unmixed``).
OUTPUT_NAMES = CutMixOutputs._fields

#: rng streams of a batch
VIEW_STREAM, MIX_STREAM = 0, 1


class CutMixSource(FolderBatchSource):
    """Batch-mode ``external_source`` callable for the CutMix pipeline.

    ======== ====================================================== =======
    column   per sample                                             dtype
    ======== ====================================================== =======
    encoded  file bytes                                             uint8
    crop     (4,) ``x, y, w, h`` crop window in pixels              int32
    flip     () 1 = flip horizontally                               int32
    label    () class index                                         int64
    target   (C,) soft target                                       float32
    lam      () weight of the own label                             float32
    partner  () batch row mixed into this sample                    int64
    box      (4,) ``yl, yh, xl, xh`` region taken from the partner  int32
    weight   () alpha inside the box                                float32
    position (5,) seed, epoch, shard, batch index, cursor           int64
    ======== ====================================================== =======
    """

    column_names = ("encoded", "crop", "flip", "label", "target", "lam", "partner", "box", "weight", "position")

    def __init__(
        self,
        dataset: ImageFolder,
        *,
        mix: MixConfig | None,
        output_size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        label_smoothing: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(dataset, **kw)
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be 0 < min <= max, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if not dataset.labelled:
            raise ValueError("CutMix needs a labelled ImageFolder (one sub-directory per class)")
        if mix is not None and mix.num_classes < dataset.num_classes:
            raise ValueError(f"num_classes {mix.num_classes} < the folder's {dataset.num_classes} classes")
        self.mix = mix
        self.num_classes = mix.num_classes if mix is not None else dataset.num_classes
        self.output_size = int(output_size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip_prob = float(flip_prob)
        self.label_smoothing = float(mix.label_smoothing if mix is not None else label_smoothing)

    def columns(
        self, start: LoaderPosition, cursor: int, payloads: list[Payload]
    ) -> tuple[tuple[list[Any], ...], list]:
        b = len(payloads)
        sizes = np.array([p[2] for p in payloads], dtype=np.int64).reshape(b, 2)
        view_rng = self.batch_rng(start, VIEW_STREAM)
        crops = random_resized_crop_params(view_rng, sizes[:, 0], sizes[:, 1], self.scale, self.ratio)
        flips = view_rng.random(b) < self.flip_prob
        labels = np.array([self.dataset[p[0]].label for p in payloads], dtype=np.int64)
        if self.mix is not None:
            s = self.output_size
            params = draw_mix_params(self.batch_rng(start, MIX_STREAM), b, s, s, self.mix)
            partner, lam, boxes, weight = params.partner, params.lam, params.boxes, params.weight
        else:
            partner = np.arange(b, dtype=np.int64)
            lam = np.ones(b, dtype=np.float32)
            boxes = np.zeros((b, 4), dtype=np.int64)
            weight = np.zeros(b, dtype=np.float32)
        targets = mix_targets(labels, lam, partner, self.num_classes, self.label_smoothing)
        columns = (
            [p[1] for p in payloads],
            list(crops.astype(np.int32)),
            [np.int32(f) for f in flips],
            [np.int64(v) for v in labels],
            list(targets),
            [np.float32(v) for v in lam],
            [np.int64(v) for v in partner],
            list(boxes.astype(np.int32)),
            [np.float32(v) for v in weight],
            self.position_column(start, cursor, b),
        )
        return columns, []


@dataclass(frozen=True)
class CutMixStep:
    """The ``fn.python_function`` body (batch mode): stack the batch and mix it.

    Inputs per sample: image S×S×3 uint8, partner () int64, box (4,) int32, weight ()
    float32. NumPy on the CPU backend, CuPy on the GPU (one composite launch, on DALI's
    stream; no host synchronisation).
    """

    def __call__(self, images, partners, boxes, weights):
        xp = np if isinstance(images[0], np.ndarray) else cupy_module()
        stacked = xp.stack(images)
        partner = xp.stack(partners).reshape(-1).astype(xp.int64)
        box = xp.stack(boxes).reshape(-1, 4)
        weight = xp.stack(weights).reshape(-1)
        mixed = apply_mix(stacked, partner, box, weight)
        return [mixed[i] for i in range(len(images))]



def build_cutmix_pipeline(
    source: CutMixSource,
    *,
    normalize: bool = True,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    return_unmixed: bool = False,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
) -> Pipeline:
    """Build (not yet run) the pipeline over ``source``; outputs are :data:`OUTPUT_NAMES`
    (without ``unmixed`` unless ``return_unmixed``: the crops before mixing, uint8 HWC).

    Args:
        source: the batch callable; its ``batch_size`` is the pipeline's max batch size and
            its ``output_size`` the side S of the square output.
        normalize: float32 ``(x/255 − mean)/std`` CHW output; False for uint8 CHW.
        mean, std: per-channel, in [0, 1] units.
        device: ``"gpu"`` decodes with nvJPEG (``device="mixed"``) and runs every later step
            on the GPU; ``"cpu"`` uses DALI's CPU backend throughout.
    """
    arguments = pipeline_arguments(source, device, device_id, num_threads, prefetch_queue_depth)
    on_gpu = device == "gpu"
    size = source.output_size
    if size < 1:
        raise ValueError(f"output_size must be >= 1, got {size}")
    step = CutMixStep()

    @pipeline_def(**arguments)
    def cutmix_pipeline():
        encoded, crop, flip, label, target, lam, partner, box, weight, position = fn.external_source(
            source=source, num_outputs=len(CutMixSource.column_names), batch=True
        )
        images = fn.decoders.image_slice(
            encoded,
            crop[0:2],
            crop[2:4],
            axis_names="WH",
            device="mixed" if on_gpu else "cpu",
            output_type=types.RGB,
            adjust_orientation=False,
        )
        images = fn.resize(images, size=(size, size), antialias=True, interp_type=types.INTERP_LINEAR)
        images = fn.flip(images, horizontal=flip)
        if on_gpu:
            partner, box, weight = partner.gpu(), box.gpu(), weight.gpu()
        mixed = fn.python_function(
            images,
            partner,
            box,
            weight,
            function=step,
            batch_processing=True,
            num_outputs=1,
            device=device,
            output_layouts="HWC",
        )
        if normalize:
            out = fn.crop_mirror_normalize(
                mixed,
                mean=[255.0 * m for m in mean],
                std=[255.0 * s for s in std],
                dtype=types.FLOAT,
                output_layout="CHW",
            )
        else:
            out = fn.transpose(mixed, perm=[2, 0, 1], output_layout="CHW")
        outputs = CutMixOutputs(
            images=out, targets=target, labels=label, lam=lam, position=position, unmixed=images if return_unmixed else None
        )
        return tuple(output for output in outputs if output is not None)

    return cutmix_pipeline()
