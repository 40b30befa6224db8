"""Detection reference trainer: torchvision Mask R-CNN on decal's Copy-Paste batches.

Modules (one concept each):

* :mod:`.config` — :class:`DetectionConfig` and its sections, the papers' defaults, presets.
* :mod:`.labels` — category ids ↔ contiguous labels, instance/image counts, LVIS groups.
* :mod:`.model` — building Mask R-CNN (any ResNet-FPN, v1/v2 heads), local weights, batches.
* :mod:`.heads` — torchvision RoI heads with a pluggable classification loss and FASA.
* :mod:`.losses` — cross-entropy and Seesaw classification losses, box regression loss.
* :mod:`.fasa` — FASA feature augmentation and sampling adaptation.
* :mod:`.evaluate` — COCOeval box/mask AP; the protocol chosen per json.
* :mod:`.lvis_eval` — LVIS's federated evaluation (APr/APc/APf) through the LVIS API.
* :mod:`.iou_types` — the detections each IoU type evaluates.
* :mod:`.pseudo_label` — self-training: pseudo-labelling a folder, merging jsons.
* :mod:`.train` — the job (:func:`train`), its hooks, and the CLI entry.

Example::

    from decal.trainers.common.config import load_config
    from decal.trainers.detection import DetectionConfig, PRESETS, train

    cfg = load_config(DetectionConfig, "my.toml", presets=PRESETS)
    result = train(cfg)
"""

from .config import PRESETS, DetectionConfig, EvalConfig, FasaConfig, ModelConfig, SeesawConfig, SelfTrainingConfig
from .evaluate import coco_evaluate, evaluate_detector, evaluate_results
from .fasa import FASA
from .labels import LabelMap
from .lvis_eval import lvis_evaluate
from .losses import CrossEntropyClassification, SeesawLoss, seesaw_cross_entropy
from .model import build_detector, build_maskrcnn, prepare_batch
from .pseudo_label import load_detector, merge_coco, pseudo_label_folder
from .train import evaluate_checkpoint, train

__all__ = [
    "PRESETS",
    "DetectionConfig",
    "EvalConfig",
    "FasaConfig",
    "ModelConfig",
    "SeesawConfig",
    "SelfTrainingConfig",
    "coco_evaluate",
    "evaluate_detector",
    "evaluate_results",
    "lvis_evaluate",
    "FASA",
    "LabelMap",
    "CrossEntropyClassification",
    "SeesawLoss",
    "seesaw_cross_entropy",
    "build_detector",
    "build_maskrcnn",
    "prepare_batch",
    "load_detector",
    "merge_coco",
    "pseudo_label_folder",
    "evaluate_checkpoint",
    "train",
]
