"""Classification reference trainer: a torchvision ResNet on decal's CutMix batches
(Yun et al. 2019, github.com/clovaai/CutMix-PyTorch).

Modules (one concept each):

* :mod:`.config` — :class:`ClassificationConfig`, the paper's defaults with citations, presets.
* :mod:`.model` — the ResNet of the configured depth, local weights.
* :mod:`.losses` — soft-target cross-entropy (= CutMix's area-weighted loss), top-k counts.
* :mod:`.evaluate` — the non-mixed centre-crop evaluation reader, top-1/top-5.
* :mod:`.train` — the job (:func:`train`), :func:`evaluate_checkpoint`, the CLI entry.

Example::

    from decal.trainers.common.config import load_config
    from decal.trainers.classification import ClassificationConfig, PRESETS, train

    result = train(load_config(ClassificationConfig, preset="tiny", presets=PRESETS))
"""

from .config import PRESETS, ClassificationConfig, EvalConfig, ModelConfig
from .evaluate import EvalFolder, evaluate_classifier
from .losses import soft_target_cross_entropy, topk_correct
from .model import build_classifier, load_weights
from .train import evaluate_checkpoint, load_classifier, train

__all__ = [
    "PRESETS",
    "ClassificationConfig",
    "EvalConfig",
    "ModelConfig",
    "EvalFolder",
    "evaluate_classifier",
    "soft_target_cross_entropy",
    "topk_correct",
    "build_classifier",
    "load_weights",
    "evaluate_checkpoint",
    "load_classifier",
    "train",
]
