"""The options of the Copy-Paste loader family, declared once (:class:`~decal.dali_pipes.core.option_schema.Option`).

``CopyPasteLoaderConfig`` (``dali_pipes/copy_paste/loader.py``) takes its fields from
:data:`COPY_PASTE_OPTIONS`; the server validates a request's ``CopyPasteParams`` with the
same bounds (``server/pipelines.py``); ``RemoteLoader`` forwards the served ones
(``server/remote_loader.py``); ``tests/test_option_schema.py`` checks that the proto
message ``CopyPasteParams`` and the README's option table list the same options.

Units: sizes and thresholds in pixels of the S×S output; probabilities in [0, 1].
"""

from __future__ import annotations

from typing import Any

from ..core.common_options import DEVICE_OPTIONS, DROP_LAST, NUM_SHARDS, ON_ERROR, SEED, SHARD_ID, SHUFFLE, WORKER_OPTIONS
from ..core.option_schema import Option

__all__ = ["COPY_PASTE_OPTIONS"]

#: Every option of ``CopyPasteLoader``, in the config's field order.
COPY_PASTE_OPTIONS: tuple[Option, ...] = (
    Option("batch_size", int, 8, "images per batch; the last batch of an epoch may be smaller unless `drop_last`", low=1),
    Option("output_size", int, 1024, "S: every output image is S×S", low=1, served=True, server_low=8, limit="max_output_size"),
    Option(
        "jitter", Any, "lsj",
        '`"lsj"`: longer side resized to r·S, r ∈ [0.1, 2.0]; `"ssj"`: r ∈ [0.8, 1.25]; `"none"`; or `(min, max)`',
        served=True,
    ),
    Option("flip_prob", float, 0.5, "horizontal flip probability", low=0.0, high=1.0, served=True),
    Option("pad_value", int, 114, "gray level around images smaller than S", low=0, high=255, served=True),
    Option("copy_paste", bool, True, "False: scale jitter and flip only", served=True),
    Option("max_num_pasted", int, 100, "cap on instances pasted into one image", low=0, served=True, limit="max_num_pasted"),
    Option(
        "blend_sigma", float, 0.0, "Gaussian sigma (px) of the alpha used to blend the image; 0 = hard paste",
        low=0.0, high=64.0, served=True,
    ),
    Option(
        "mask_occluded_thr", int, 300, "a partly occluded instance survives if more pixels remain …",
        low=0, high=2**31 - 1, served=True,
    ),
    Option(
        "bbox_occluded_thr", float, 10.0, "… or its box moved at most this many pixels (mmdetection)",
        low=0.0, high=1e6, served=True,
    ),
    Option("paste_by_box", bool, False, "use filled boxes as masks (datasets without masks)", served=True),
    Option(
        "mask_source", str | None, None,
        '`"descriptors"`: polygon/RLE descriptions to the step, masks rasterised there (same bits as `"host"`); '
        '`"host"`: H×W×(N+1) masks rasterised by the source; None = descriptors on the GPU, host on the CPU',
        choices=("host", "descriptors"),
    ),
    Option(
        "subpixel", bool, False,
        '`mask_source="descriptors"`: rasterise polygons at the output resolution (sharper when upscaled; not the host masks\' bits)',
    ),
    SEED,
    SHUFFLE,
    Option(
        "repeat_factor_threshold", float | None, None,
        "t for LVIS repeat-factor sampling (0.001 in LVIS); None = uniform",
        low=0.0, high=1.0, low_open=True, served=True,
    ),
    SHARD_ID,
    NUM_SHARDS,
    DROP_LAST,
    ON_ERROR,
    *DEVICE_OPTIONS,
    Option(
        "step_threads", int | None, None,
        "CPU backend: threads of the copy-paste step (per-sample chunks, same batches bit for bit); None = `num_threads`",
        low=1,
    ),
    *WORKER_OPTIONS,
)  # fmt: skip
