"""decal: GPU data loading and Copy-Paste-family augmentation on NVIDIA DALI, for PyTorch.

The public API is re-exported lazily, so ``import decal`` stays cheap (no DALI, CuPy or
torch import until a name is used)::

    from decal import CopyPasteLoader
"""

from __future__ import annotations

from .kernels.lazy_exports import lazy_exports

from .kernels.version import VERSION

__version__ = VERSION

_EXPORTS = {
    "CopyPasteLoader": "decal.dali_pipes.copy_paste.loader",
    "CopyPasteLoaderConfig": "decal.dali_pipes.copy_paste.loader",
    "Batch": "decal.dali_pipes.core.batch",
    "Loader": "decal.dali_pipes.core.loader_protocol",
    "LabelMap": "decal.dali_pipes.core.label_map",
    "CopyPasteParams": "decal.kernels.copy_paste",
    "ScaleJitter": "decal.dali_pipes.core.scale_jitter",
    "DatasetError": "decal.dali_pipes.core.errors",
    "ensure_sample_dataset": "decal.dali_pipes.coco.sample_data",
    "CutMixLoader": "decal.dali_pipes.cutmix.loader",
    "CutMixLoaderConfig": "decal.dali_pipes.cutmix.loader",
    "CP2Loader": "decal.dali_pipes.cp2.loader",
    "CP2LoaderConfig": "decal.dali_pipes.cp2.loader",
    "ImageFolder": "decal.dali_pipes.folder.image_folder",
    "BalancedCopyPasteLoader": "decal.dali_pipes.balanced.loader",
    "BalancedCopyPasteLoaderConfig": "decal.dali_pipes.balanced.loader",
    "MosaicLoader": "decal.dali_pipes.mosaic.loader",
    "MosaicLoaderConfig": "decal.dali_pipes.mosaic.loader",
    "SelfTrainingLoader": "decal.dali_pipes.self_training.loader",
    "SelfTrainingLoaderConfig": "decal.dali_pipes.self_training.loader",
    "GpuMaskCopyPasteLoader": "decal.dali_pipes.copy_paste.loader",
    "CocoIndex": "decal.dali_pipes.coco.index",
    "open_index": "decal.dali_pipes.coco.index",
    "RemoteLoader": "decal.server.remote_loader",
    "RemoteLoaderError": "decal.server.remote_loader",
    "DecalServer": "decal.server.app",
    "ServerConfig": "decal.server.config",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
