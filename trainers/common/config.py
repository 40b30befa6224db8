"""Typed trainer configuration: nested dataclasses, loaded from TOML, overridden by flags.

Every trainer's configuration is a tree of dataclasses (one per concern: data, loader,
optimiser, schedule, run, ...). A TOML file holds one table per branch::

    preset = "tiny"               # optional: start from a named preset of the trainer

    [optim]
    lr = 0.02

    [loader]
    batch_size = 4
    jitter = [0.5, 1.5]           # TOML arrays become tuples where the field is a tuple

Precedence, lowest first: the dataclass defaults (the papers' values), a preset, the TOML
file, ``--set section.key=value`` overrides, then the command line's named flags.

Values are checked against the annotations: ints stay ints (floats are refused), ints are
accepted for floats, ``Literal`` fields accept only their values, tuples/lists are built
from TOML arrays, and an ``Optional`` field accepts the string ``"none"`` (TOML has no null).
An unknown key is an error that names its dotted path, so a typo never passes silently.

This module also holds the configuration sections that every trainer shares:
:class:`DataConfig`, :class:`OptimConfig`, :class:`ScheduleConfig`, :class:`RunConfig` and
:class:`EmaConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

from ...dali_pipes.core.options import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "RunConfig",
    "EmaConfig",
    "from_dict",
    "to_dict",
    "deep_merge",
    "fields_of",
    "parse_overrides",
    "load_config",
    "save_config",
    "common_updates",
]

T = TypeVar("T")


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Where the data comes from (shared by all trainers).

    Attributes:
        train_annotations: training json (COCO/LVIS instances) for the local loader; also
            where a remote run reads the category list when the server does not send one.
        train_images: image directory of ``train_annotations``.
        val_annotations: evaluation json ("" = no evaluation).
        val_images: image directory of ``val_annotations``.
        use_sample: use decal's embedded two-photo sample for whatever path is empty
            (CI and demos; see :func:`decal.dali_pipes.coco.sample_data.ensure_sample_dataset`).
        remote: ``host:port`` of a decal gRPC server; when set the training batches come
            from :class:`decal.server.remote_loader.RemoteLoader` instead of the local
            DALI pipeline. The trainer's loop does not see the difference.
        remote_dataset: the dataset name registered on the server (clients never send paths).
        remote_options: extra keyword arguments for ``RemoteLoader`` (e.g. a token, TLS).
    """

    train_annotations: str = ""
    train_images: str = ""
    val_annotations: str = ""
    val_images: str = ""
    use_sample: bool = False
    remote: str = ""
    remote_dataset: str = ""
    remote_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser (shared by all trainers; each trainer sets its paper's defaults).

    Attributes:
        name: ``"sgd"`` (momentum SGD) or ``"adamw"``.
        lr: learning rate for a global batch of ``base_batch_size`` images.
        base_batch_size: the global batch ``lr`` was tuned for. With ``scale_lr`` the rate is
            scaled linearly to the actual global batch (loader batch size x world size;
            Goyal et al. 2017, "Accurate, Large Minibatch SGD").
        scale_lr: apply the linear scaling rule.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (SGD) or decoupled decay (AdamW).
        decay_norm_and_bias: also decay normalisation weights and biases (torchvision and
            mmdetection do by default; many recipes exclude them).
        betas, eps: AdamW's.
        grad_clip_norm: clip the global gradient norm to this value; 0 = off.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    base_batch_size: int = 256
    scale_lr: bool = True
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip_norm: float = 0.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then step, cosine or poly decay (per iteration).

    Attributes:
        name: ``"step"`` (x ``gamma`` at each milestone), ``"cosine"`` (to
            ``min_lr_factor`` x lr at the last step), ``"poly"`` (mmseg's
            ``PolyLrUpdaterHook``: ``min + (1 - min) * (1 - progress) ** power``, as a factor
            of lr) or ``"constant"``.
        warmup_iters: iterations of linear warmup.
        warmup_factor: the warmup starts at ``warmup_factor`` x lr.
        milestones: step decay points as fractions of the total number of iterations.
        gamma: step decay factor.
        min_lr_factor: cosine/poly floor as a fraction of lr.
        power: exponent of the poly decay (0.9, DeepLab's "poly" policy).
    """

    name: Literal["step", "cosine", "poly", "constant"] = "step"
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    milestones: tuple[float, ...] = (0.9, 0.95, 0.975)
    gamma: float = 0.1
    min_lr_factor: float = 0.0
    power: float = 0.9


@dataclass
class RunConfig:
    """The training run: length, logging, checkpoints, precision, devices.

    Attributes:
        out_dir: where metrics.jsonl, config.json, checkpoints and evaluation results go.
        epochs: epochs to train (an epoch = one pass of this rank's shard of the sampler).
        max_iters: if > 0, train for exactly this many iterations and ignore ``epochs``.
        log_every: iterations between metric records (averaged over the window) and the
            loss line on stderr (step, epoch, loss, images/s, lr).
        checkpoint_every: iterations between checkpoints (0 = only at epoch ends and at the end).
        checkpoint_every_epochs: epochs between end-of-epoch checkpoints (0 = none).
        keep_checkpoints: how many step checkpoints to keep (older ones are deleted).
        resume: ``""`` (fresh start), ``"auto"`` (the latest checkpoint in ``out_dir`` if
            any) or a checkpoint path.
        seed: torch seed (rank r uses ``seed + r``).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        amp: automatic mixed precision; only ever used on CUDA.
        amp_dtype: ``"float16"`` (with a gradient scaler) or ``"bfloat16"``.
        dist_backend: ``"auto"`` (nccl on CUDA, gloo on CPU), ``"nccl"`` or ``"gloo"``;
            used when the process was started by ``torchrun`` (WORLD_SIZE > 1).
        progress: show one tqdm bar for the whole run (main rank only).
        tensorboard: also write TensorBoard events when ``torch.utils.tensorboard`` imports.
        torch_threads: ``torch.set_num_threads`` on the CPU (0 = leave torch's default).
    """

    out_dir: str = "runs/train"
    epochs: int = 12
    max_iters: int = 0
    log_every: int = 20
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    resume: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"
    progress: bool = True
    tensorboard: bool = True
    torch_threads: int = 0


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (timm ``ModelEmaV2``/``V3`` semantics).

    Attributes:
        enabled: keep an EMA copy of the model, updated after every optimiser step.
        decay: ``ema = decay * ema + (1 - decay) * weights`` (timm's default 0.9998).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after n updates, so that the early,
            random weights are forgotten quickly (TensorFlow ``ExponentialMovingAverage``
            with ``num_updates``).
        evaluate_ema: evaluate (and pseudo-label with) the EMA weights instead of the raw ones.
    """

    enabled: bool = False
    decay: float = 0.9998
    warmup: bool = True
    evaluate_ema: bool = True


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # type: ignore[valid-type]
            return True, inner
    return False, tp


#: The TOML values each scalar field type accepts (a bool is never a number), and how an
#: error names the type.
_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked and converted to the annotation ``tp``."""
    if tp is Any:
        return tuple(value) if isinstance(value, list) else value
    optional, inner = _is_optional(tp)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, inner, path)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return from_dict(tp, value, path=path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected an array, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        accepted, expected = _SCALARS[tp]
        if not isinstance(value, accepted) or (isinstance(value, bool) and tp is not bool):
            raise ConfigError(f"{path}: expected {expected}, got {value!r}")
        return float(value) if tp is float else value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, path: str = "") -> T:
    """Build the dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults.

    Raises:
        ConfigError: for an unknown key or a value of the wrong type, naming its dotted path.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key(s) {[where + k for k in unknown]}; "
            f"{cls.__name__} has {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        factory = known[name].default_factory
        if isinstance(value, Mapping) and factory is not dataclasses.MISSING:
            # a partial table updates the section's own default (a trainer's paper values,
            # e.g. ``field(default_factory=_default_optim)``), not the section class's defaults
            default = factory()
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                value = deep_merge(to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or cls.__name__}: {error}") from error


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (tuples become lists): JSON- and TOML-ready."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def fields_of(section: Any, names: Sequence[str]) -> dict[str, Any]:
    """``{name: section.<name>}`` for each of ``names``: the fields of a config section that a
    constructor takes as keyword arguments under the same names.

    Raises:
        AttributeError: a name that is not a field of ``section``.
    """
    return {name: getattr(section, name) for name in names}


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, tables recursively, other values replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_value(text: str) -> Any:
    """A TOML value (``0.1``, ``true``, ``[1, 2]``, ``"x"``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=0.02", "loader.jitter=[0.5, 1.5]"]`` as a nested dict."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r}: empty key")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is both a value and a table")
        node[parts[-1]] = _parse_value(text.strip())
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    updates: Mapping[str, Any] | None = None,
) -> T:
    """Build a trainer config: defaults < preset < TOML file < ``overrides`` < ``updates``.

    Args:
        cls: the trainer's root config dataclass.
        path: a TOML file (its optional top-level ``preset`` key names a preset).
        presets: the trainer's named presets (nested dicts of overrides).
        preset: a preset name (wins over the file's ``preset`` key).
        overrides: ``section.key=value`` strings (TOML values).
        updates: a nested dict applied last (the command line's named flags).
    """
    data: dict[str, Any] = {}
    if path:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    chosen = preset or data.pop("preset", None)
    data.pop("preset", None)
    merged: dict[str, Any] = {}
    if chosen:
        if not presets or chosen not in presets:
            raise ConfigError(f"unknown preset {chosen!r}; known: {sorted(presets or {})}")
        merged = deep_merge(merged, presets[chosen])
    merged = deep_merge(merged, data)
    merged = deep_merge(merged, parse_overrides(overrides))
    if updates:
        merged = deep_merge(merged, updates)
    return from_dict(cls, merged)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved configuration as JSON (what the run really used)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True))
    return path


def common_updates(args: argparse.Namespace, own: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """The common trainer flags (``trainers/cli.py``, ``add_common_arguments``) as a nested
    dict of config updates (only the flags given), plus a trainer's ``own`` flags:
    ``{section: {argument attribute: config key}}``, each given (truthy) one set as is
    (e.g. ``{"model": {"depth": "depth"}}``)."""
    from ...dali_pipes.core.backend import parse_device

    updates: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            updates.setdefault(section, {})[key] = value

    put("data", "train_annotations", args.annotations)
    put("data", "train_images", args.images)
    put("data", "val_annotations", args.val_annotations)
    put("data", "val_images", args.val_images)
    if args.sample:
        put("data", "use_sample", True)
    put("data", "remote", args.remote)
    put("data", "remote_dataset", args.remote_dataset)
    put("run", "out_dir", args.out_dir)
    put("run", "epochs", args.epochs)
    put("run", "max_iters", args.max_iters)
    put("loader", "batch_size", args.batch_size)
    put("loader", "output_size", args.output_size)
    put("run", "seed", args.seed)
    put("loader", "seed", args.seed)
    if args.device is not None:
        device = parse_device(args.device, "--device")
        put("run", "device", {"gpu": "cuda"}.get(device.kind, device.kind))
        put("loader", "device", None if device.kind == "auto" else device.kind)
    put("run", "resume", args.resume)
    if args.no_progress:
        put("run", "progress", False)
    for section, keys in (own or {}).items():
        for attribute, key in keys.items():
            put(section, key, getattr(args, attribute, None) or None)
    return updates


def config_from_args(
    cls: type[T], presets: Mapping[str, Mapping[str, Any]], args: argparse.Namespace, own: Mapping[str, Mapping[str, str]] | None = None
) -> T:
    """A trainer's config from its parsed ``decal train`` arguments: ``--config``,
    ``--preset``, ``--set`` and the flags (:func:`common_updates` with the trainer's ``own``)."""
    return load_config(cls, args.config, presets=presets, preset=args.preset, overrides=args.set or (), updates=common_updates(args, own))
