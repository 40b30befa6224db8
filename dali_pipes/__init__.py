"""The loaders and their configs, re-exported lazily (``from decal.dali_pipes import CutMixLoader``),
so that a user of one name imports only its module (no DALI until a loader is used)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CopyPasteLoader": "decal.dali_pipes.torch_iterator",
    "CopyPasteLoaderConfig": "decal.dali_pipes.torch_iterator",
    "BalancedCopyPasteLoader": "decal.dali_pipes.balanced_copy_paste",
    "BalancedCopyPasteLoaderConfig": "decal.dali_pipes.balanced_copy_paste",
    "SelfTrainingLoader": "decal.dali_pipes.self_training",
    "SelfTrainingLoaderConfig": "decal.dali_pipes.self_training",
    "MosaicLoader": "decal.dali_pipes.mosaic_pipeline",
    "MosaicLoaderConfig": "decal.dali_pipes.mosaic_pipeline",
    "CutMixLoader": "decal.dali_pipes.classification_loader",
    "CutMixLoaderConfig": "decal.dali_pipes.classification_loader",
    "ClassificationBatch": "decal.dali_pipes.classification_loader",
    "CP2Loader": "decal.dali_pipes.cp2_loader",
    "CP2LoaderConfig": "decal.dali_pipes.cp2_loader",
    "CP2Batch": "decal.dali_pipes.cp2_loader",
    "Batch": "decal.dali_pipes.batch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'decal.dali_pipes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
