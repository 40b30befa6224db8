"""CP² reference trainer: copy-paste contrastive pretraining of DeepLab v3, and fine-tuning
for semantic segmentation (Wang et al. 2022, github.com/wangf3014/CP2).

Modules (one concept each):

* :mod:`.config` — :class:`CP2Config` (pretraining), :class:`CP2FinetuneConfig`, the papers'
  defaults with their citations, presets (``tiny``).
* :mod:`.losses` — masked average pooling, the instance (InfoNCE) and dense losses.
* :mod:`.model` — the dilated ResNet + ASPP encoder, :class:`CP2Model` (momentum key
  encoder, queue, shuffling BN), :class:`Segmenter`, Quick Tuning weight loading.
* :mod:`.segmentation` — a COCO-json semantic segmentation reader, its resumable loader, mIoU.
* :mod:`.train` — the jobs (:func:`train`, :func:`finetune`, :func:`evaluate_checkpoint`) and the CLI entry.

Example::

    from decal.trainers.common.config import load_config
    from decal.trainers.cp2 import CP2Config, PRESETS, train

    result = train(load_config(CP2Config, preset="tiny", presets=PRESETS))
"""

from .config import FINETUNE_PRESETS, PRESETS, ContrastConfig, CP2Config, CP2FinetuneConfig, EncoderConfig, ModelConfig
from .losses import cp2_dense_loss, cp2_instance_loss, masked_average_pool
from .model import CP2Model, DeepLabV3Encoder, Segmenter, build_cp2_model, build_segmenter, load_backbone_weights
from .segmentation import SegmentationLoader, SemanticCoco, evaluate_segmenter, segmentation_metrics
from .train import evaluate_checkpoint, finetune, load_segmenter, train

__all__ = [
    "FINETUNE_PRESETS",
    "PRESETS",
    "ContrastConfig",
    "CP2Config",
    "CP2FinetuneConfig",
    "EncoderConfig",
    "ModelConfig",
    "cp2_dense_loss",
    "cp2_instance_loss",
    "masked_average_pool",
    "CP2Model",
    "DeepLabV3Encoder",
    "Segmenter",
    "build_cp2_model",
    "build_segmenter",
    "load_backbone_weights",
    "SegmentationLoader",
    "SemanticCoco",
    "evaluate_segmenter",
    "segmentation_metrics",
    "evaluate_checkpoint",
    "finetune",
    "load_segmenter",
    "train",
]
