"""CP²'s models: the DeepLab v3 encoder, the contrastive model with its momentum key encoder
and queue, and the segmenter that replaces the projection with a classifier.

* :func:`build_resnet` — a torchvision ResNet at output stride 16 (or 8): the last stage(s)
  trade their stride for dilation (torchvision's ``replace_stride_with_dilation``; the same
  rule applied by hand to BasicBlock ResNets, which torchvision refuses to dilate).
* :class:`DeepLabV3Encoder` — the ResNet's ``layer4`` features, then torchvision's ``ASPP``
  and a 3×3 conv + BN + ReLU (torchvision's ``DeepLabHead`` without its classifier).
* :class:`CP2Model` — [CP2] ``CP2_MOCO``: a query branch (encoder + projection), a key branch
  updated as ``k = m k + (1 - m) q`` before each key forward, a queue of K normalised keys,
  and the two losses of :mod:`.losses`. Under DDP the keys are gathered from every rank
  before they enter the queue, and the key batch is shuffled across ranks around the key
  encoder (MoCo's shuffling BN).
* :class:`Segmenter` — the encoder + ``Dropout2d`` + a 1×1 classifier, logits resized to the
  input (mmseg ``ASPPHead.cls_seg`` + ``EncoderDecoder``).
* :func:`load_backbone_weights` — Quick Tuning: ResNet weights from a local file.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from .config import ContrastConfig, EncoderConfig, ModelConfig, SegModelConfig
from .losses import cp2_dense_loss, cp2_instance_loss, dense_accuracy, masked_average_pool

__all__ = [
    "build_resnet",
    "DeepLabV3Encoder",
    "ProjectionHead",
    "ContrastiveBranch",
    "CP2Model",
    "Segmenter",
    "build_encoder",
    "build_cp2_model",
    "build_segmenter",
    "load_backbone_weights",
    "load_pretrained_encoder",
    "match_prefix",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- encoder


#: torchvision ResNets built of BasicBlocks (torchvision refuses to dilate those).
_BASIC_BLOCK_DEPTHS = ("resnet18", "resnet34")


def _dilate_basic_layer(layer: nn.Sequential, previous: int, dilation: int) -> None:
    """torchvision's ``_make_layer(dilate=True)`` rule on a BasicBlock stage: the first block
    keeps the previous dilation and loses its stride, the other blocks use ``dilation``
    (both 3×3 convolutions of a block share its dilation; padding = dilation keeps the size)."""
    for index, block in enumerate(layer):
        d = previous if index == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if index == 0 and block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def build_resnet(depth: str, output_stride: int = 16, *, zero_init_residual: bool = False) -> nn.Module:
    """torchvision ``resnet<depth>(weights=None)`` at ``output_stride`` 16 (``layer4``
    dilated ×2) or 8 (``layer3`` ×2, ``layer4`` ×4)."""
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    dilate = [False, output_stride == 8, True]
    factory = getattr(torchvision.models, depth)
    if depth not in _BASIC_BLOCK_DEPTHS:
        return factory(weights=None, replace_stride_with_dilation=dilate, zero_init_residual=zero_init_residual)
    resnet = factory(weights=None, zero_init_residual=zero_init_residual)
    current = 1
    for stage, flag in zip((resnet.layer2, resnet.layer3, resnet.layer4), dilate):
        if flag:
            _dilate_basic_layer(stage, current, current * 2)
            current *= 2
    return resnet


class DeepLabV3Encoder(nn.Module):
    """ResNet (dilated) → ASPP → 3×3 conv + BN + ReLU: (N, 3, H, W) → (N, C, H/s, W/s).

    Attributes:
        backbone: the ResNet up to ``layer4`` (torchvision's ``IntermediateLayerGetter``;
            parameter names as torchvision's ResNet: ``conv1``, ``bn1``, ``layer1``…).
        head: ``ASPP`` + conv + BN + ReLU (torchvision ``DeepLabHead`` layers 0–3).
        out_channels: C. output_stride: s.
    """

    def __init__(
        self,
        depth: str = "resnet50",
        *,
        output_stride: int = 16,
        aspp_rates: tuple[int, ...] = (6, 12, 18),
        aspp_channels: int = 512,
        aspp_dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        resnet = build_resnet(depth, output_stride, zero_init_residual=zero_init_residual)
        in_channels = resnet.fc.in_features
        self.backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
        aspp = ASPP(in_channels, list(aspp_rates), aspp_channels)
        aspp.project[-1].p = float(aspp_dropout)  # torchvision's Dropout(0.5) after the projection
        self.head = nn.Sequential(
            aspp,
            nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp_channels),
            nn.ReLU(inplace=True),
        )
        self.out_channels = aspp_channels
        self.output_stride = output_stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)["out"])


def build_encoder(cfg: EncoderConfig) -> DeepLabV3Encoder:
    """The encoder of ``cfg``, with the Quick Tuning backbone weights when given."""
    encoder = DeepLabV3Encoder(
        cfg.backbone,
        output_stride=cfg.output_stride,
        aspp_rates=tuple(cfg.aspp_rates),
        aspp_channels=cfg.aspp_channels,
        aspp_dropout=cfg.aspp_dropout,
        zero_init_residual=cfg.zero_init_residual,
    )
    if cfg.backbone_weights:
        load_backbone_weights(encoder.backbone, cfg.backbone_weights)
    return encoder


class ProjectionHead(nn.Module):
    """[CP2]'s ``contrast_conv``: ``Conv1x1(C, H) - ReLU - Conv1x1(H, D)``."""

    def __init__(self, in_channels: int, hidden: int, out_dim: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_dim, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ContrastiveBranch(nn.Module):
    """Encoder + projection, L2-normalised per pixel: (N, 3, H, W) → (N, D, h·w) float32."""

    def __init__(self, encoder: DeepLabV3Encoder, projection: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.encoder(images))
        return F.normalize(z.flatten(2).float(), dim=1)


# --------------------------------------------------------------------------- DDP helpers


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 (no gradient), as MoCo's helper;
    ``tensor`` itself outside DDP. Needs the same shape on every rank (hence
    ``loader.drop_last`` under DDP)."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


# --------------------------------------------------------------------------- CP² model


class CP2Model(nn.Module):
    """[CP2] ``CP2_MOCO``: query and momentum key branches, the queue, the two losses.

    ``forward(image_q, image_k, mask_q, mask_k)`` (masks (N, h, w) at the feature stride)
    returns a dict: ``loss`` (= instance + α dense), ``loss_instance``, ``loss_dense``,
    ``acc_instance`` (the positive has the highest logit), ``acc_dense`` ([CP2]'s
    ``acc_seg``). In training mode it first moves the key branch towards the query branch,
    and afterwards pushes the keys into the queue.

    Buffers: ``queue`` (D, K), initialised with normalised Gaussian vectors, and
    ``queue_ptr``; they are in the state dict, so checkpoints resume the queue.
    """

    def __init__(self, encoder: DeepLabV3Encoder, projection: ProjectionHead, contrast: ContrastConfig) -> None:
        super().__init__()
        if contrast.queue_size < 1:
            raise ValueError("contrast.queue_size must be >= 1")
        self.contrast = contrast
        self.encoder_q = ContrastiveBranch(encoder, projection)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)
        dim = projection.layers[-1].out_channels
        self.register_buffer("queue", F.normalize(torch.randn(dim, contrast.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def output_stride(self) -> int:
        return self.encoder_q.encoder.output_stride

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θ_k ← m θ_k + (1 - m) θ_q`` over the parameters (not the BN statistics, as MoCo)."""
        m = self.contrast.momentum
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(m).add_(param_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys of every rank at the pointer (wrapping around, as [CP2]) and advance it."""
        keys = concat_all_gather(keys.float())
        size, capacity = keys.shape[0], self.queue.shape[1]
        if size > capacity:
            keys, size = keys[-capacity:], capacity
        ptr = int(self.queue_ptr)
        first = min(size, capacity - ptr)
        self.queue[:, ptr : ptr + first] = keys[:first].T
        if first < size:
            self.queue[:, : size - first] = keys[first:].T
        self.queue_ptr[0] = (ptr + size) % capacity

    @torch.no_grad()
    def _keys(self, image_k: torch.Tensor) -> torch.Tensor:
        """Key embeddings (N, D, L); shuffled across ranks under DDP when ``shuffle_bn``."""
        if not (self.contrast.shuffle_bn and _distributed()):
            return self.encoder_k(image_k)
        gathered = concat_all_gather(image_k)
        order = torch.randperm(gathered.shape[0], device=image_k.device)
        dist.broadcast(order, src=0)
        rank = dist.get_rank()
        mine = order.view(dist.get_world_size(), -1)[rank]
        keys = concat_all_gather(self.encoder_k(gathered[mine]))
        restore = torch.argsort(order).view(dist.get_world_size(), -1)[rank]
        return keys[restore]

    def forward(
        self, image_q: torch.Tensor, image_k: torch.Tensor, mask_q: torch.Tensor, mask_k: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        n = image_q.shape[0]
        m_q = mask_q.reshape(n, -1).float()
        m_k = mask_k.reshape(n, -1).float()
        q = self.encoder_q(image_q)  # (N, D, L), normalised
        if q.shape[-1] != m_q.shape[-1]:
            raise ValueError(
                f"the encoder gives {q.shape[-1]} pixels but the masks have {m_q.shape[-1]}: "
                "loader.stride must equal model.output_stride"
            )
        q_pool = masked_average_pool(q, m_q)
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k = self._keys(image_k)
            k_pool = masked_average_pool(k, m_k)
        c = self.contrast
        with torch.autocast(device_type=q.device.type, enabled=False):  # the losses in float32
            loss_instance, logits = cp2_instance_loss(q_pool, k_pool, self.queue.clone().detach(), c.temperature)
            loss_dense, logits_dense = cp2_dense_loss(q, k.float(), m_q, m_k, c.dense_temperature)
        if self.training:
            self.enqueue(k_pool)
        with torch.no_grad():
            acc_instance = (logits.argmax(dim=1) == 0).float().mean()
            acc_dense = dense_accuracy(logits_dense, m_q, m_k)
        return {
            "loss": loss_instance + c.dense_weight * loss_dense,
            "loss_instance": loss_instance,
            "loss_dense": loss_dense,
            "acc_instance": acc_instance,
            "acc_dense": acc_dense,
        }


def build_cp2_model(model: ModelConfig, contrast: ContrastConfig) -> CP2Model:
    """The CP² model of the configuration (Quick Tuning weights loaded before the key copy)."""
    encoder = build_encoder(model)
    hidden = model.projection_hidden or encoder.out_channels
    projection = ProjectionHead(encoder.out_channels, hidden, model.projection_dim)
    return CP2Model(encoder, projection, contrast)


# --------------------------------------------------------------------------- segmenter


class Segmenter(nn.Module):
    """The CP² encoder with a classifier: logits (N, num_classes, H, W) at the input size."""

    def __init__(self, encoder: DeepLabV3Encoder, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(encoder.out_channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=0.01)  # mmseg's conv_seg init
        nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.dropout(self.encoder(images)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def build_segmenter(cfg: SegModelConfig, num_classes: int) -> Segmenter:
    """The segmenter of ``cfg``: the encoder from a CP² checkpoint (``pretrained``), else from
    ``backbone_weights`` (or random), and a fresh classifier."""
    encoder = build_encoder(cfg)
    if cfg.pretrained:
        load_pretrained_encoder(encoder, cfg.pretrained)
    return Segmenter(encoder, num_classes, cfg.classifier_dropout)


# --------------------------------------------------------------------------- weights


def _state_dict_of(obj: Any) -> Mapping[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint (``state_dict``/``model``/``module`` entries)."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            return _state_dict_of(obj[key])
    if not isinstance(obj, Mapping):
        raise ValueError("the checkpoint holds no state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def match_prefix(source_keys: list[str], target_keys: set[str], prefer: tuple[str, ...] = ("encoder_q",)) -> str:
    """The key prefix that, removed from ``source_keys``, matches most of ``target_keys``.

    Ties prefer a prefix holding one of ``prefer`` (MoCo/CP² query encoders over key
    encoders), then the shortest.
    """
    counts: Counter[str] = Counter()
    for key in source_keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in target_keys:
                counts[".".join(parts[:i]) + ("." if i else "")] += 1
                break
    if not counts:
        return ""
    return max(counts, key=lambda p: (counts[p], any(tag in p for tag in prefer), -len(p)))


def _load_matching(module: nn.Module, source: Mapping[str, torch.Tensor], prefix: str, what: str, path: str | Path) -> list[str]:
    target = module.state_dict()
    stripped = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    picked = {k: v for k, v in stripped.items() if k in target}
    top_level = {k.split(".")[0] for k in target}
    foreign = [k for k in stripped if k not in target and k.split(".")[0] in top_level]
    if foreign:
        raise ValueError(f"{path}: {what} weights with tensors this model lacks, e.g. {foreign[:5]} (another depth?)")
    mismatched = [k for k, v in picked.items() if tuple(v.shape) != tuple(target[k].shape)]
    if mismatched:
        raise ValueError(f"{path}: {what} weights of the wrong shape for {mismatched[:5]} (another depth?)")
    if not picked:
        raise ValueError(f"{path}: no {what} weights found (keys like {list(source)[:3]})")
    missing = [k for k in target if k not in picked]
    real_missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if real_missing:
        raise ValueError(f"{path}: {what} weights miss {len(real_missing)} tensors, e.g. {real_missing[:5]}")
    module.load_state_dict(picked, strict=False)
    log.info("loaded %d %s tensors from %s (prefix %r)", len(picked), what, path, prefix)
    return sorted(picked)


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load ResNet weights from a local file into ``backbone`` (Quick Tuning).

    Accepts a torchvision state dict, a MoCo/CP² checkpoint (``{"state_dict": ...}`` with
    ``module.encoder_q.`` keys), or a checkpoint of this trainer; the key prefix is found by
    :func:`match_prefix`; ``fc.*`` and other extra keys are ignored. Every backbone tensor
    must be found. Returns the loaded names.
    """
    source = _state_dict_of(torch.load(path, map_location="cpu", weights_only=False))
    target = set(backbone.state_dict())
    prefix = match_prefix(list(source), target)
    return _load_matching(backbone, source, prefix, "backbone", path)


def load_pretrained_encoder(encoder: DeepLabV3Encoder, path: str | Path) -> list[str]:
    """Load a CP² pretraining checkpoint's query encoder (backbone + ASPP head) into ``encoder``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    source = _state_dict_of(checkpoint)
    prefix = "encoder_q.encoder." if any(k.startswith("encoder_q.encoder.") for k in source) else match_prefix(
        list(source), set(encoder.state_dict())
    )
    return _load_matching(encoder, source, prefix, "encoder", path)
