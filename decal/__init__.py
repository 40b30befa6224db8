"""decal: GPU data loading and Copy-Paste-family augmentation on NVIDIA DALI, for PyTorch.

The public API is re-exported lazily, so ``import decal`` stays cheap (no DALI, CuPy or
torch import until a name is used)::

    from decal import CopyPasteLoader
"""

from __future__ import annotations

from .dali_pipes import EXPORTS as LOADER_EXPORTS
from .kernels.lazy_exports import lazy_exports
from .server import EXPORTS as SERVER_EXPORTS

from .kernels.version import VERSION

__version__ = VERSION

#: The loaders and their configs (:mod:`decal.dali_pipes`'s face), the remote loader and the
#: server (:mod:`decal.server`'s face, less its ``ConfigError``), and the building blocks below.
EXPORTS = {
    **LOADER_EXPORTS,
    **{name: module for name, module in SERVER_EXPORTS.items() if name != "ConfigError"},
    "Loader": "decal.dali_pipes.core.loader_protocol",
    "LabelMap": "decal.dali_pipes.core.label_map",
    "CopyPasteParams": "decal.kernels.copy_paste",
    "ScaleJitter": "decal.dali_pipes.core.scale_jitter",
    "DatasetError": "decal.dali_pipes.core.errors",
    "ensure_sample_dataset": "decal.dali_pipes.coco.sample_data",
    "ImageFolder": "decal.dali_pipes.folder.image_folder",
    "GpuMaskCopyPasteLoader": "decal.dali_pipes.copy_paste.loader",
    "CocoIndex": "decal.dali_pipes.coco.index",
    "open_index": "decal.dali_pipes.coco.index",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
