"""The options of the balanced-Mosaic loader, declared once
(:class:`~decal.dali_pipes.core.option_schema.Option`).

``MosaicLoaderConfig`` (``dali_pipes/mosaic/loader.py``) takes its fields, defaults and
bound checks from them (``with_options``); the server validates
a request's ``MosaicParams`` with the served ones (``server/pipelines.py``), ``RemoteLoader``
forwards them, and the README's Mosaic option table repeats them.

Units: sizes in pixels of the S×S output; probabilities in [0, 1].
"""

from __future__ import annotations

from typing import Any

from ..core.common_options import DEVICE_OPTIONS, RUN_OPTIONS, WORKER_OPTIONS
from ..core.option_schema import Option

__all__ = ["MOSAIC_OPTIONS"]

#: Every option of ``MosaicLoader``, in the config's field order.
MOSAIC_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 8, "images per batch", low=1),
    Option("output_size", int, 640, "S: every output image is S×S", low=1, served=True, server_low=8, limit="max_output_size"),
    Option("jitter", Any, "none", "range of r: a tile's longer side is r·S/2 in a mosaic, r·S alone", served=True),
    Option("flip_prob", float, 0.5, "horizontal flip probability", low=0.0, high=1.0, served=True),
    Option("pad_value", int, 114, "gray level of the canvas", low=0, high=255, served=True),
    Option("mosaic_prob", float, 0.5, "probability that a sample is a 2×2 mosaic", low=0.0, high=1.0, served=True),
    Option("center_range", tuple[float, float], (0.25, 0.75), "the mosaic centre is uniform in this range × S", low=0.0, high=1.0, served=True),
    Option("paste_by_box", bool, False, "use filled boxes as masks (datasets without masks)", served=True),
    Option(
        "mask_source", str | None, None,
        '`"descriptors"`: polygon/RLE descriptions and a geometry table per tile to the step, masks rasterised '
        'onto the canvas there (same bits as `"host"`); `"host"`: H×W×(N+1) masks per tile rasterised by the '
        "source; None = descriptors on the GPU, host on the CPU",
        choices=("host", "descriptors"),
    ),
    Option(
        "subpixel", bool, False,
        '`mask_source="descriptors"`: rasterise polygons at the canvas resolution (sharper when upscaled; not the host masks\' bits)',
    ),
    Option(
        "repeat_factor_threshold", float | None, 0.001,
        "t of repeat-factor sampling (epoch order and the extra tiles); None = uniform",
        low=0.0, high=1.0, low_open=True, served=True,
    ),
    *RUN_OPTIONS,
    *DEVICE_OPTIONS,
    *WORKER_OPTIONS,
)  # fmt: skip
