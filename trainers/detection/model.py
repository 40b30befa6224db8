"""Build torchvision's Mask R-CNN for a dataset, load local weights, feed it decal batches.

:func:`build_maskrcnn` assembles the model from torchvision's public parts (ResNet,
``BackboneWithFPN``, ``RPNHead``, box and mask heads, ``MaskRCNN``) so that the backbone depth,
widths and anchors are parameters; with the defaults the result has exactly the parameters
(names and shapes) of ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None)``.
Its RoI heads are :class:`~.heads.DecalRoIHeads` (the classification loss and FASA plug in
there). Nothing is ever downloaded: pretrained weights come from local files only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..common.config import fields_of
from ..common.loop import StepOutput
from .config import DetectionConfig, ModelConfig
from .fasa import FASA
from .heads import BoxPredictor, DecalRoIHeads
from .labels import FREQUENCY_GROUPS, LabelMap
from .losses import CrossEntropyClassification, SeesawLoss

__all__ = [
    "build_backbone",
    "build_maskrcnn",
    "build_detector",
    "load_weights",
    "extract_state_dict",
    "prepare_batch",
    "detection_step",
    "predict",
]

#: ``ModelConfig`` fields passed under the same names to torchvision's ``MaskRCNN`` (its RPN
#: and RoI sampling and its inference post-processing).
MASKRCNN_FIELDS = (
    "rpn_batch_size_per_image", "box_batch_size_per_image", "box_positive_fraction",
    "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
)  # fmt: skip
#: ``SeesawConfig`` fields that are :class:`~decal.trainers.detection.losses.SeesawLoss`'s keyword arguments.
SEESAW_FIELDS = ("p", "q", "eps", "loss_weight")
#: ``FasaConfig`` fields that are :class:`~decal.trainers.detection.fasa.FASA`'s keyword arguments.
FASA_FIELDS = ("momentum", "loss_weight", "prob_power", "prob_scale", "up", "down", "start_epoch")


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return extract_state_dict(obj)


def extract_state_dict(obj: Any, *, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint: a plain state dict, torchvision's, or this
    trainer's (``model`` / ``ema``), with ``module.`` prefixes (DDP, EMA) removed."""
    if isinstance(obj, dict) and prefer_ema and isinstance(obj.get("ema"), dict):
        obj = obj["ema"]
    elif isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError("no state dict found in the checkpoint")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def load_weights(module: nn.Module, path: str | Path, *, what: str = "weights") -> dict[str, list[str]]:
    """Load the tensors of ``path`` whose names and shapes match ``module``'s; report the rest.

    Returns:
        ``{"loaded": [...], "skipped": [...] (shape mismatch or unknown), "missing": [...]}``.

    Raises:
        ValueError: when nothing matched (probably the wrong file).
    """
    source = _read_state_dict(path)
    target = module.state_dict()
    loaded, skipped = [], []
    usable = {}
    for key, value in source.items():
        if key in target and target[key].shape == value.shape:
            usable[key] = value
            loaded.append(key)
        else:
            skipped.append(key)
    if not loaded:
        raise ValueError(f"{what} {path}: no tensor matches the model (wrong file?)")
    module.load_state_dict(usable, strict=False)
    missing = [k for k in target if k not in usable]
    return {"loaded": loaded, "skipped": skipped, "missing": missing}


def _freeze_resnet(resnet: nn.Module, trainable_layers: int) -> None:
    """torchvision's rule: train the last ``trainable_layers`` of (conv1, layer1..layer4)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {trainable_layers}")
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers.append("bn1")
    for name, parameter in resnet.named_parameters():
        if not any(name.startswith(layer) for layer in layers):
            parameter.requires_grad_(False)


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """ResNet + FPN (P2–P6), from scratch or from ``cfg.backbone_weights``."""
    pretrained = bool(cfg.backbone_weights)
    frozen_bn = cfg.frozen_bn if cfg.frozen_bn is not None else (pretrained and cfg.variant == "v1")
    norm_layer = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    resnet = getattr(torchvision.models, cfg.backbone)(weights=None, norm_layer=norm_layer)
    if pretrained:
        report = load_weights(resnet, cfg.backbone_weights, what="backbone_weights")
        unexpected = [
            k for k in report["skipped"] if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
        ]
        if unexpected:
            warnings.warn(f"backbone_weights: {len(unexpected)} tensors did not fit, e.g. {unexpected[:3]}")
    trainable = cfg.trainable_backbone_layers
    if trainable is None:
        trainable = 3 if pretrained else 5
    _freeze_resnet(resnet, trainable)
    stage2 = resnet.inplanes // 8
    return BackboneWithFPN(
        resnet,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[stage2 * 2 ** i for i in range(4)],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=nn.BatchNorm2d if cfg.variant == "v2" else None,
    )


def build_maskrcnn(
    cfg: ModelConfig,
    num_classes: int,
    *,
    image_size: int,
    classification_loss: nn.Module | None = None,
    fasa: FASA | None = None,
    normed_classifier: bool = False,
    temperature: float = 20.0,
) -> MaskRCNN:
    """torchvision Mask R-CNN for ``num_classes`` (= K + 1) classes.

    Args:
        cfg: the model section.
        num_classes: K + 1.
        image_size: the loader's output size (default ``min_size``/``max_size``).
        classification_loss: the box classifier's loss (default: cross-entropy).
        fasa: a :class:`FASA` module, or None.
        normed_classifier, temperature: cosine classifier (Seesaw's LVIS setting).
    """
    loss = classification_loss or CrossEntropyClassification()
    backbone = build_backbone(cfg)
    channels = backbone.out_channels
    if len(cfg.anchor_sizes) != 5:
        raise ValueError(f"model.anchor_sizes needs one size per FPN level (5), got {cfg.anchor_sizes}")
    anchors = AnchorGenerator(tuple((int(s),) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    num_anchors = anchors.num_anchors_per_location()[0]
    if cfg.variant == "v2":
        rpn_head = RPNHead(channels, num_anchors, conv_depth=2)
        box_head: nn.Module = FastRCNNConvFCHead(
            (channels, 7, 7), [channels] * 4, [cfg.representation_size], norm_layer=nn.BatchNorm2d
        )
        mask_head = MaskRCNNHeads(channels, [cfg.mask_head_channels] * 4, 1, norm_layer=nn.BatchNorm2d)
    else:
        rpn_head = RPNHead(channels, num_anchors)
        box_head = TwoMLPHead(channels * 7 * 7, cfg.representation_size)
        mask_head = MaskRCNNHeads(channels, [cfg.mask_head_channels] * 4, 1)
    box_predictor = BoxPredictor(
        cfg.representation_size,
        num_classes,
        loss.num_logits(num_classes),
        normed=normed_classifier,
        temperature=temperature,
    )
    mask_predictor = MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, num_classes)
    size = image_size
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.min_size or size,
        max_size=cfg.max_size or size,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_head=box_head,
        box_predictor=box_predictor,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
        **fields_of(cfg, MASKRCNN_FIELDS),
    )
    model.roi_heads = DecalRoIHeads.from_roi_heads(model.roi_heads, classification_loss=loss, fasa=fasa)
    if cfg.weights:
        report = load_weights(model, cfg.weights, what="model.weights")
        if report["skipped"]:
            warnings.warn(
                f"model.weights: {len(report['skipped'])} tensors skipped (class count or shape differs), "
                f"e.g. {report['skipped'][:3]}"
            )
    return model


def _fasa_groups(cfg: DetectionConfig, label_map: LabelMap, image_counts: Sequence[int] | None) -> list[list[int]] | None:
    if cfg.fasa.grouping == "none":
        return None
    tags = label_map.frequencies(image_counts)
    groups = [[label for label, tag in enumerate(tags, start=1) if tag == g] for g in FREQUENCY_GROUPS]
    return [g for g in groups if g] or None


def build_detector(
    cfg: DetectionConfig,
    label_map: LabelMap,
    *,
    instance_counts: Sequence[int] | None = None,
    image_counts: Sequence[int] | None = None,
) -> MaskRCNN:
    """The trainer's model from the whole config: Mask R-CNN + optional Seesaw and FASA.

    ``instance_counts``/``image_counts`` (index = label, 0 = background) initialise FASA's
    probabilities and groups; they may be omitted when weights are loaded afterwards.
    """
    num_classes = label_map.num_classes
    loss: nn.Module = CrossEntropyClassification()
    if cfg.seesaw.enabled:
        s = cfg.seesaw
        loss = SeesawLoss(num_classes, **fields_of(s, SEESAW_FIELDS))
    fasa = None
    if cfg.fasa.enabled:
        f = cfg.fasa
        counts = list(instance_counts) if instance_counts is not None else [0] + [1] * (num_classes - 1)
        fasa = FASA(
            num_classes,
            cfg.model.representation_size,
            counts,
            **fields_of(f, FASA_FIELDS),
            groups=_fasa_groups(cfg, label_map, image_counts),
        )
    return build_maskrcnn(
        cfg.model,
        num_classes,
        image_size=cfg.loader.output_size,
        classification_loss=loss,
        fasa=fasa,
        normed_classifier=cfg.seesaw.enabled and cfg.seesaw.normed_classifier,
        temperature=cfg.seesaw.temperature,
    )


def prepare_batch(
    batch: Any, label_map: LabelMap, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A decal ``Batch`` as torchvision's training input.

    Images become float in [0, 1] (torchvision normalises them itself); crowd instances
    are dropped (torchvision cannot ignore them); category ids become labels 1..K; boxes
    without area (never produced by decal, but cheap to guard) are dropped.
    """
    images = batch.images.to(device, non_blocking=True).float().div_(255.0)
    targets = []
    for target in batch.targets:
        boxes = target["boxes"].to(device, non_blocking=True).float()
        keep = target["iscrowd"].to(device) == 0
        keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        targets.append(
            {
                "boxes": boxes[keep],
                "labels": label_map.to_labels(target["labels"].to(device, non_blocking=True)[keep]),
                "masks": target["masks"].to(device, non_blocking=True)[keep],
                "image_id": target["image_id"],
            }
        )
    return list(images.unbind(0)), targets


def detection_step(label_map: LabelMap, device: torch.device):
    """The loop's step function: Mask R-CNN's loss dict, summed."""

    def step(model: nn.Module, batch: Any) -> StepOutput:
        images, targets = prepare_batch(batch, label_map, device)
        losses = model(images, targets)
        loss = sum(losses.values())
        return StepOutput(loss=loss, metrics={k: v.detach() for k, v in losses.items()}, batch_size=len(images))

    return step


@torch.no_grad()
def predict(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Inference on uint8 (3, H, W) images of any sizes; outputs are in each image's pixels."""
    was_training = model.training
    model.eval()
    try:
        inputs = [img.to(device, non_blocking=True).float().div_(255.0) for img in images]
        return model(inputs)
    finally:
        model.train(was_training)
