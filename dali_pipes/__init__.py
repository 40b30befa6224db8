"""The loaders and their configs, re-exported lazily (``from decal.dali_pipes import CutMixLoader``),
so that a user of one name imports only its module (no DALI until a loader is used)."""

from __future__ import annotations

from ..kernels.lazy_exports import lazy_exports

#: Name -> defining module of each lazily re-exported name (the face :mod:`decal` builds on it).
EXPORTS = {
    "CopyPasteLoader": "decal.dali_pipes.copy_paste.loader",
    "CopyPasteLoaderConfig": "decal.dali_pipes.copy_paste.loader",
    "BalancedCopyPasteLoader": "decal.dali_pipes.balanced.loader",
    "BalancedCopyPasteLoaderConfig": "decal.dali_pipes.balanced.loader",
    "SelfTrainingLoader": "decal.dali_pipes.self_training.loader",
    "SelfTrainingLoaderConfig": "decal.dali_pipes.self_training.loader",
    "MosaicLoader": "decal.dali_pipes.mosaic.loader",
    "MosaicLoaderConfig": "decal.dali_pipes.mosaic.loader",
    "CutMixLoader": "decal.dali_pipes.cutmix.loader",
    "CutMixLoaderConfig": "decal.dali_pipes.cutmix.loader",
    "ClassificationBatch": "decal.dali_pipes.folder.batches",
    "CP2Loader": "decal.dali_pipes.cp2.loader",
    "CP2LoaderConfig": "decal.dali_pipes.cp2.loader",
    "CP2Batch": "decal.dali_pipes.folder.batches",
    "Batch": "decal.dali_pipes.core.batch",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
