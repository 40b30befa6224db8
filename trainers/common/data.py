"""The trainers' data source: the local DALI iterator or the gRPC ``RemoteLoader``, one shard per rank.

Both yield the family's own batch type (``Batch``: ``images`` (B, 3, S, S) uint8 and
``targets``; ``ClassificationBatch`` for CutMix; ``CP2Batch`` for CP²), have
``len()`` (batches in the coming epoch), ``epoch``, and ``state_dict()`` /
``load_state_dict()``, so the training loop never knows which one it got.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ...dali_pipes.core.loader_protocol import close_loader  # re-exported: the trainers end every loader with it
from .config import DataConfig
from .distributed import DistInfo

__all__ = [
    "LOCAL_ONLY_OPTIONS",
    "REMOTE_PIPELINES",
    "require_remote_pipeline",
    "remote_loader",
    "resolve_dataset_paths",
    "loader_options",
    "build_loader",
    "read_categories",
    "move_targets",
    "close_loader",
]

#: Options of the local DALI pipeline that a remote loader does not take (the server runs
#: the pipeline and chooses how its masks are made; the client's ``device`` is where it puts
#: the received tensors).
LOCAL_ONLY_OPTIONS = (
    "device", "device_id", "num_threads", "prefetch_queue_depth", "step_threads", "source_workers", "source_start_method",
    "mask_source", "subpixel",
)


#: Pipelines that ``RemoteLoader`` can stream: every family the server serves
#: (``decal.server.pipelines.PIPELINES``; ``tests/test_trainer_common.py`` holds them equal).
REMOTE_PIPELINES = ("copy-paste", "balanced-copy-paste", "self-training", "mosaic", "cutmix", "cp2")

#: ``RemoteLoader``'s own keyword arguments among a loader config's fields.
_REMOTE_RUN_OPTIONS = ("batch_size", "seed", "shard_id", "num_shards")


def require_remote_pipeline(data: DataConfig, pipeline: str, trainer: str) -> None:
    """Raise a clear error when ``data.remote`` asks for a pipeline the remote loader cannot stream.

    Args:
        data: the data section (only ``data.remote`` is read).
        pipeline: the pipeline the trainer needs (``"cp2"``, ``"segmentation"``, ...).
        trainer: the trainer's name, for the message.
    """
    if data.remote and pipeline not in REMOTE_PIPELINES:
        raise NotImplementedError(
            f"decal train {trainer} --remote: the decal server streams only the "
            f"{', '.join(repr(p) for p in REMOTE_PIPELINES)} pipelines (decal.server.pipelines.PIPELINES); "
            f"the {pipeline!r} pipeline is not served, so this trainer reads its data locally: drop --remote "
            "(data.remote) and pass the local data paths"
        )


def remote_loader(data: DataConfig, options: Mapping[str, Any], *, pipeline: str, device: torch.device | None = None) -> Any:
    """A ``RemoteLoader`` of ``pipeline`` from ``data.remote`` / ``data.remote_dataset``.

    ``options`` are the local loader's keyword arguments (:func:`loader_options`): the
    in-process ones (:data:`LOCAL_ONLY_OPTIONS`) are dropped, the ones the family serves
    (``RemoteLoader``'s ``forwarded_options``) and the run's (batch size, seed, shard) are sent, and any other
    option (a path, a normalisation the server does not take) must keep its default, since
    the server would use its default. The client is imported lazily (the ``serve`` extra);
    it puts the batches on ``device`` and takes ``data.remote_options`` (a token, TLS).
    ``pipeline`` is one of :data:`REMOTE_PIPELINES` (the caller's own family); a trainer whose
    data no server streams calls :func:`require_remote_pipeline` instead.

    Raises:
        ValueError: no ``data.remote_dataset``, or an option the server cannot take that is
            not at its default (naming it).
    """
    try:
        from decal.dali_pipes.core.option_schema import served
        from decal.server.pipelines import PIPELINES
        from decal.server.remote_loader import RemoteLoader
    except ImportError as error:  # not installed, or not built yet
        raise RuntimeError("--remote needs decal.server.remote_loader.RemoteLoader (pip install 'decal[serve]')") from error
    if not data.remote_dataset:
        raise ValueError("data.remote_dataset: the dataset name registered on the server is required with --remote")
    sent = {option.name for option in served(PIPELINES[pipeline].schema)} | set(_REMOTE_RUN_OPTIONS)
    defaults = {option.name: option.default for option in PIPELINES[pipeline].schema}
    remote_options: dict[str, Any] = {}
    for name, value in options.items():
        if name in sent:
            remote_options[name] = value
        elif name not in LOCAL_ONLY_OPTIONS and name in defaults and value != defaults[name]:
            raise ValueError(
                f"loader.{name} = {value!r}: the {pipeline!r} server does not take this option (it uses "
                f"{defaults[name]!r}); keep the default with --remote, or drop --remote to read locally"
            )
    if device is not None:
        remote_options["device"] = str(device)
    remote_options.update(data.remote_options)
    return RemoteLoader(data.remote, data.remote_dataset, pipeline=pipeline, **remote_options)


def resolve_dataset_paths(data: DataConfig) -> DataConfig:
    """``data`` with empty train/val paths filled with the embedded sample when ``use_sample``."""
    if not data.use_sample:
        return data
    from decal.dali_pipes.coco.sample_data import ensure_sample_dataset

    json_path, image_dir = ensure_sample_dataset()
    values = {f.name: getattr(data, f.name) for f in fields(data)}
    if not values["train_annotations"] and not values["remote"]:
        values["train_annotations"], values["train_images"] = str(json_path), str(image_dir)
    if not values["val_annotations"]:
        values["val_annotations"], values["val_images"] = str(json_path), str(image_dir)
    return DataConfig(**values)


def loader_options(loader_config: Any, info: DistInfo, device: torch.device) -> dict[str, Any]:
    """The loader's keyword arguments for this rank: the config's fields, with
    ``shard_id=rank``, ``num_shards=world_size``, on CUDA ``device_id=local_rank``, and on a
    CPU training device ``device="cpu"`` where the config leaves the device to the loader."""
    if is_dataclass(loader_config):
        options = {f.name: getattr(loader_config, f.name) for f in fields(loader_config)}
    else:
        options = dict(loader_config)
    options.update(info.shard_options())
    if device.type == "cuda":
        options["device_id"] = device.index if device.index is not None else info.local_rank
    elif device.type == "cpu" and options.get("device") is None:
        options["device"] = "cpu"
    return options


def build_loader(
    data: DataConfig,
    options: Mapping[str, Any],
    *,
    local_factory: Callable[..., Any],
    annotations: str | None = None,
    images: str | None = None,
    device: torch.device | None = None,
) -> Any:
    """The local copy-paste loader ``local_factory(annotations, images, **options)``, or a
    copy-paste ``RemoteLoader`` (:func:`remote_loader`) when ``data.remote`` is set, which
    delivers the batches straight onto the training device."""
    if data.remote:
        return remote_loader(data, options, pipeline="copy-paste", device=device)
    annotations = annotations or data.train_annotations
    images = images or data.train_images
    if not annotations or not images:
        raise ValueError(
            "no training data: set data.train_annotations and data.train_images "
            "(--annotations/--images), data.use_sample, or data.remote"
        )
    return local_factory(annotations, images, **options)


def read_categories(loader: Any, annotation_file: str | Path | None = None) -> dict[int, dict]:
    """Category id → json entry: from the loader (``loader.categories``) or else from the
    ``categories`` list of ``annotation_file``."""
    categories = getattr(loader, "categories", None)
    if categories:
        return dict(categories)
    if annotation_file:
        with open(annotation_file, encoding="utf-8") as handle:
            entries = json.load(handle)["categories"]
        return {int(c["id"]): dict(c) for c in entries}
    raise ValueError(
        "the loader has no category list; pass the training json (--annotations) so the "
        "trainer knows the classes"
    )


def move_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every tensor of every target dict on ``device`` (non-blocking)."""
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
