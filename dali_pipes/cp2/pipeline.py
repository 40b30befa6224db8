"""The CP² DALI pipeline: foreground views pasted onto background views through rectangles.

Graph (one per loader)::

    external_source(CP2Source)      fg, bg_q, bg_k bytes; 4 views' draws; rect_q, rect_k
      fg ─ decoders.image ─┬─ slice(crop_q) ─ resize(S×S) ─ color_twist ─ gaussian_blur ─ flip ─ fg_q
                           └─ slice(crop_k) ─ (same ops, own draws)                           ─ fg_k
      bg_q ─ decoders.image_slice(crop) ─ resize ─ color_twist ─ gaussian_blur ─ flip ─ bg_q
      bg_k ─ (same)                                                                  ─ bg_k
      python_function(CP2Step)   one composite launch: I = fg inside the rectangle, bg outside;
                                 masks M (S×S) and M[s//2::s, s//2::s] (S/s × S/s)
      crop_mirror_normalize      I_q, I_k float32 CHW (or uint8 CHW)

All randomness is drawn on the host by :class:`CP2Source` (see :mod:`decal.dali_pipes.cp2.twin`
for the semantics and where DALI's ops differ from torchvision's). The foreground is decoded
once for its two views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ..core.epoch_source import LoaderPosition
from .twin import CP2MaskConfig, CP2ViewConfig, ViewParams, compose_cp2, draw_view_params, random_erasing_rects
from ..core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ..core.errors import DatasetError
from ..folder.source import FolderBatchSource, Payload
from ..folder.image_folder import ImageFolder
from ...kernels.array_module import cupy_module
from ..core.graph import pipeline_arguments

__all__ = ["CP2Outputs", "OUTPUT_NAMES", "VIEW_NAMES", "CP2Source", "CP2Step", "build_cp2_pipeline"]

class CP2Outputs(NamedTuple):
    """The CP² pipeline's outputs, by name (B samples each).

    Attributes:
        image_q, image_k: (3, S, S) the two composed views (uint8, or float32 normalised).
        mask_q, mask_k: (S, S) uint8 foreground masks; mask_q_feat, mask_k_feat: the masks
            at feature resolution (S / stride).
        position: (POSITION_FIELDS,) int64, a :class:`~decal.dali_pipes.core.epoch_source.PositionRow`.
        fg_q, fg_k, bg_q, bg_k: the four augmented views, only with ``return_views`` (else None).
    """

    image_q: Any
    image_k: Any
    mask_q: Any
    mask_k: Any
    mask_q_feat: Any
    mask_k_feat: Any
    position: Any
    fg_q: Any = None
    fg_k: Any = None
    bg_q: Any = None
    bg_k: Any = None


#: Names of the pipeline's outputs, in order (the views only with ``return_views``).
OUTPUT_NAMES = CP2Outputs._fields
#: The four augmented views of a sample.
VIEW_NAMES = ("fg_q", "fg_k", "bg_q", "bg_k")

#: rng streams of a batch
FG_VIEW_STREAM, BG_PICK_STREAM, BG_VIEW_STREAM, MASK_STREAM = 0, 1, 2, 3


class CP2Source(FolderBatchSource):
    """Batch-mode ``external_source`` callable for the CP² pipeline.

    Columns per sample: ``fg``, ``bg_q``, ``bg_k`` (file bytes); for each view V of
    :data:`VIEW_NAMES`: ``V_crop`` (4,) int32 ``[x, y, w, h]``, ``V_colour`` (4,) float32
    (``fn.color_twist`` brightness, contrast, saturation, hue°), ``V_blur`` (2,) float32
    ``[sigma, window]``, ``V_flip`` () int32; ``rect_q``, ``rect_k`` (4,) int32
    ``[y, x, h, w]``; ``position`` (5,) int64.

    Backgrounds come from ``backgrounds`` (default: the foreground folder itself), two per
    sample, drawn uniformly from stream 1 of the batch's generator; an unreadable background
    is skipped (``on_error="skip"``) and redrawn.
    """

    column_names = (
        ("fg", "bg_q", "bg_k")
        + tuple(f"{v}_{c}" for v in VIEW_NAMES for c in ("crop", "colour", "blur", "flip"))
        + ("rect_q", "rect_k", "position")
    )

    def __init__(
        self,
        dataset: ImageFolder,
        *,
        view: CP2ViewConfig,
        mask: CP2MaskConfig,
        backgrounds: ImageFolder | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dataset, **kw)
        self.view = view
        self.mask = mask
        self.backgrounds = backgrounds if backgrounds is not None else dataset

    @property
    def output_size(self) -> int:
        return self.view.output_size

    def _bad_background(self, index: int) -> bool:
        bad = self.bad_indices if self.backgrounds is self.dataset else self.bad_extra_indices
        return index in bad

    def _pick_backgrounds(self, rng: np.random.Generator, count: int) -> list[Payload]:
        picked: list[Payload] = []
        n = len(self.backgrounds)
        tries = 0
        while len(picked) < count:
            for index in rng.integers(0, n, size=count - len(picked)):
                tries += 1
                if self._bad_background(int(index)):
                    continue
                payload = self.load(int(index), self.backgrounds)
                if payload is not None:
                    picked.append(payload)
            if tries > 100 * count + 1000:
                raise DatasetError(self.backgrounds.root, "no readable background image found")
        return picked

    def columns(self, start: LoaderPosition, cursor: int, payloads: list[Payload]) -> tuple[tuple[list[Any], ...], list]:
        b = len(payloads)
        backgrounds = self._pick_backgrounds(self.batch_rng(start, BG_PICK_STREAM), 2 * b)
        fg_size = np.array([p[2] for p in payloads], dtype=np.int64).reshape(b, 2)
        bg_size = np.array([p[2] for p in backgrounds], dtype=np.int64).reshape(2 * b, 2)
        fg_rng = self.batch_rng(start, FG_VIEW_STREAM)
        bg_rng = self.batch_rng(start, BG_VIEW_STREAM)
        views: dict[str, ViewParams] = {
            "fg_q": draw_view_params(fg_rng, fg_size[:, 0], fg_size[:, 1], self.view),
            "fg_k": draw_view_params(fg_rng, fg_size[:, 0], fg_size[:, 1], self.view),
            "bg_q": draw_view_params(bg_rng, bg_size[:b, 0], bg_size[:b, 1], self.view),
            "bg_k": draw_view_params(bg_rng, bg_size[b:, 0], bg_size[b:, 1], self.view),
        }
        mask_rng = self.batch_rng(start, MASK_STREAM)
        s = self.view.output_size
        rect_q = random_erasing_rects(mask_rng, b, s, s, self.mask.area, self.mask.ratio)
        rect_k = random_erasing_rects(mask_rng, b, s, s, self.mask.area, self.mask.ratio)
        view_columns: list[list[Any]] = []
        for name in VIEW_NAMES:
            params = views[name]
            view_columns += [
                list(params.crop.astype(np.int32)),
                list(params.colour_twist()),
                list(params.blur_args()),
                [np.int32(f) for f in params.flip],
            ]
        columns = (
            [p[1] for p in payloads],
            [p[1] for p in backgrounds[:b]],
            [p[1] for p in backgrounds[b:]],
            *view_columns,
            list(rect_q.astype(np.int32)),
            list(rect_k.astype(np.int32)),
            self.position_column(start, cursor, b),
        )
        return columns, [(self.backgrounds, p[0]) for p in backgrounds]


@dataclass(frozen=True)
class CP2Step:
    """The ``fn.python_function`` body (batch mode): the compositions and masks of a batch.

    Inputs per sample: fg_q, fg_k, bg_q, bg_k S×S×3 uint8, rect_q, rect_k (4,) int32.
    Outputs: I_q, I_k (S×S×3), M_q, M_k (S×S), M_q, M_k at the stride (S'×S'), uint8.
    NumPy on the CPU backend, CuPy on the GPU (one composite launch, DALI's stream).
    """

    stride: int

    def __call__(self, fg_q, fg_k, bg_q, bg_k, rect_q, rect_k):
        xp = np if isinstance(fg_q[0], np.ndarray) else cupy_module()
        out = compose_cp2(
            xp.stack(fg_q), xp.stack(fg_k), xp.stack(bg_q), xp.stack(bg_k),
            xp.stack(rect_q), xp.stack(rect_k), self.stride,
        )  # fmt: skip
        n = len(fg_q)
        return tuple(
            [array[i] for i in range(n)]
            for array in (out.image_q, out.image_k, out.mask_q, out.mask_k, out.mask_q_feat, out.mask_k_feat)
        )



def build_cp2_pipeline(
    source: CP2Source,
    *,
    normalize: bool = True,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    return_views: bool = False,
    device: Literal["cpu", "gpu"] = "cpu",
    device_id: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
) -> Pipeline:
    """Build (not yet run) the pipeline over ``source``; outputs are :data:`OUTPUT_NAMES`
    (the four uint8 HWC views only with ``return_views``)."""
    arguments = pipeline_arguments(source, device, device_id, num_threads, prefetch_queue_depth)
    on_gpu = device == "gpu"
    size = source.output_size
    step = CP2Step(source.mask.stride)
    decoder_device = "mixed" if on_gpu else "cpu"

    def augment(images, crop, colour, blur, flip, *, sliced: bool):
        if not sliced:
            images = fn.slice(images, crop[0:2], crop[2:4], axis_names="WH")
        images = fn.resize(images, size=(size, size), antialias=True, interp_type=types.INTERP_LINEAR)
        images = fn.color_twist(images, brightness=colour[0], contrast=colour[1], saturation=colour[2], hue=colour[3])
        window = fn.cast(blur[1], dtype=types.INT32)
        images = fn.gaussian_blur(images, sigma=blur[0], window_size=window)
        return fn.flip(images, horizontal=flip)

    @pipeline_def(**arguments)
    def cp2_pipeline():
        columns = fn.external_source(source=source, num_outputs=len(CP2Source.column_names), batch=True)
        named = dict(zip(CP2Source.column_names, columns))
        decode = dict(output_type=types.RGB, adjust_orientation=False)
        fg = fn.decoders.image(named["fg"], device=decoder_device, **decode)
        views = {}
        for name in VIEW_NAMES:
            crop = named[f"{name}_crop"]
            args = (crop, named[f"{name}_colour"], named[f"{name}_blur"], named[f"{name}_flip"])
            if name.startswith("fg"):
                views[name] = augment(fg, *args, sliced=False)
            else:
                encoded = named[name]
                sliced = fn.decoders.image_slice(
                    encoded, crop[0:2], crop[2:4], axis_names="WH", device=decoder_device, **decode
                )
                views[name] = augment(sliced, *args, sliced=True)
        rect_q, rect_k = named["rect_q"], named["rect_k"]
        if on_gpu:
            rect_q, rect_k = rect_q.gpu(), rect_k.gpu()
        image_q, image_k, mask_q, mask_k, mask_q_feat, mask_k_feat = fn.python_function(
            views["fg_q"],
            views["fg_k"],
            views["bg_q"],
            views["bg_k"],
            rect_q,
            rect_k,
            function=step,
            batch_processing=True,
            num_outputs=6,
            device=device,
            output_layouts=["HWC", "HWC", "HW", "HW", "HW", "HW"],
        )
        if normalize:
            norm = dict(mean=[255.0 * m for m in mean], std=[255.0 * s for s in std], dtype=types.FLOAT, output_layout="CHW")
            image_q = fn.crop_mirror_normalize(image_q, **norm)
            image_k = fn.crop_mirror_normalize(image_k, **norm)
        else:
            image_q = fn.transpose(image_q, perm=[2, 0, 1], output_layout="CHW")
            image_k = fn.transpose(image_k, perm=[2, 0, 1], output_layout="CHW")
        outputs = CP2Outputs(
            image_q=image_q, image_k=image_k, mask_q=mask_q, mask_k=mask_k, mask_q_feat=mask_q_feat,
            mask_k_feat=mask_k_feat, position=named["position"], **(views if return_views else {}),
        )
        return tuple(output for output in outputs if output is not None)

    return cp2_pipeline()
