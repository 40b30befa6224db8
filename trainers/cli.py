"""``decal train <trainer>``: the command line of the reference trainers.

The face's CLI (``decal/cli.py``) mounts it with::

    from decal.trainers.cli import add_train_parser
    add_train_parser(commands)          # commands = parser.add_subparsers(...)

Importing this module is cheap (no torch, no DALI): each trainer's module is imported only
when its command runs. Every trainer takes the same common flags (below); a trainer adds
its own in :data:`TRAINERS`. A trainer's ``main(args)`` builds its config with
:func:`~decal.trainers.common.config.common_updates` (flags → config keys) and
:func:`decal.trainers.common.config.load_config`.

Common flags and the config keys they set (flags win over ``--set``, which wins over the
TOML file, which wins over ``--preset``, which wins over the defaults)::

    --config FILE            TOML file (tables = config sections; optional top-level preset = "...")
    --preset NAME            a named preset, e.g. "tiny" (CPU, embedded sample)
    --set KEY=VALUE          any config key, e.g. --set optim.lr=0.02 (repeatable; TOML values)
    --annotations/--images   data.train_annotations / data.train_images
    --val-annotations/--val-images   data.val_annotations / data.val_images
    --sample                 data.use_sample = true (embedded sample for empty paths)
    --remote ADDR            data.remote (stream batches from a decal server)
    --remote-dataset NAME    data.remote_dataset
    --out-dir DIR            run.out_dir
    --epochs N / --max-iters N   run.epochs / run.max_iters
    --batch-size N           loader.batch_size (per rank)
    --output-size S          loader.output_size
    --seed N                 run.seed and loader.seed
    --device DEVICE          run.device (and the loader's): auto | cpu | gpu | cuda | cuda:N
                             (cuda:N, single process: only GPU N is made visible)
    --resume auto|PATH       run.resume
    --no-progress            run.progress = false
    --print-config           print the resolved config as JSON and exit

Multi-GPU: ``torchrun --nproc_per_node 8 -m decal.trainers.cli train detection --config x.toml``
(or the ``decal`` entry point's path); every rank reads its own DALI shard.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from typing import Any, Callable, Sequence

from ..dali_pipes.core.backend import parse_device
from ..dali_pipes.core.cli_support import CliParser, UsageError, add_device_flag, run_handler, split_debug
from .common.config import common_updates

__all__ = ["TRAINERS", "add_train_parser", "add_common_arguments", "common_updates", "main"]


def _eval_only_arguments(group: Any, help: str, checkpoint: str = "checkpoint") -> None:
    """``--eval-only`` (what it reports: ``help``) and its ``--checkpoint``."""
    group.add_argument("--eval-only", action="store_true", help=help)
    group.add_argument("--checkpoint", help=f"{checkpoint} for --eval-only")


def _detection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection")
    group.add_argument("--self-training", action="store_true", help="pseudo-label --unlabeled with --teacher, train on the mix")
    group.add_argument("--teacher", help="self_training.teacher_checkpoint")
    group.add_argument("--unlabeled", help="self_training.unlabeled_images (a folder)")
    _eval_only_arguments(group, "evaluate --checkpoint on the validation data and exit")


def _cp2_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cp2")
    group.add_argument("--finetune", action="store_true", help="fine-tune for segmentation (COCO-style json with masks), report mIoU")
    group.add_argument("--pretrained", help="--finetune: a CP² pretraining checkpoint (model.pretrained)")
    group.add_argument("--backbone-weights", help="local ResNet weights for the backbone (Quick Tuning; model.backbone_weights)")
    _eval_only_arguments(group, "--finetune: mIoU of --checkpoint on the validation json, then exit", "fine-tuned checkpoint")


def _classification_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classify")
    group.add_argument("--depth", type=int, choices=[18, 34, 50, 101, 152], help="ResNet depth (model.depth)")
    group.add_argument("--weights", help="local weights to start from (model.weights)")
    _eval_only_arguments(group, "top-1/top-5 of --checkpoint on --val-images, then exit")


#: name → (module with ``main(args) -> int``, help, function adding the trainer's own flags).
TRAINERS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "detection": (
        "decal.trainers.detection.train",
        "Mask R-CNN with Copy-Paste (+ RFS, Seesaw, FASA, EMA, self-training)",
        _detection_arguments,
    ),
    "cp2": (
        "decal.trainers.cp2.train",
        "CP² copy-paste contrastive pretraining of DeepLab v3 (--finetune: segmentation fine-tuning, mIoU)",
        _cp2_arguments,
    ),
    "classify": (
        "decal.trainers.classification.train",
        "ResNet classification with CutMix soft targets, top-1/top-5 evaluation",
        _classification_arguments,
    ),
}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every trainer takes (see the module docstring)."""
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--preset", help="named preset (e.g. tiny)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    parser.add_argument("--annotations", help="training json (data.train_annotations)")
    parser.add_argument("--images", help="training image directory (data.train_images)")
    parser.add_argument("--val-annotations", help="evaluation json (data.val_annotations)")
    parser.add_argument("--val-images", help="evaluation image directory (data.val_images)")
    parser.add_argument("--sample", action="store_true", help="use the embedded sample for empty data paths")
    parser.add_argument("--remote", metavar="ADDR", help="stream training batches from a decal server at ADDR")
    parser.add_argument("--remote-dataset", help="dataset name registered on the server")
    parser.add_argument("--out-dir", help="run directory (run.out_dir)")
    parser.add_argument("--epochs", type=int, help="run.epochs")
    parser.add_argument("--max-iters", type=int, help="run.max_iters (stop after this many steps)")
    parser.add_argument("--batch-size", type=int, help="images per rank (loader.batch_size)")
    parser.add_argument("--output-size", type=int, help="loader.output_size")
    parser.add_argument("--seed", type=int, help="run.seed and loader.seed")
    add_device_flag(parser, default=None, what="run.device and the loader's", default_text="the config's")
    parser.add_argument("--resume", help="'auto' (latest in the run directory) or a checkpoint path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _select_cuda_device(device: str | None) -> None:
    """``--device cuda:N`` in a single process: make only GPU N visible (it becomes cuda:0
    for torch, DALI and CuPy alike). Under torchrun each rank takes cuda:LOCAL_RANK, so an
    index there is a usage error."""
    if device is None or parse_device(device, "--device").index is None:
        return
    index = parse_device(device, "--device").index
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"--device {device}: under torchrun rank r uses cuda:LOCAL_RANK; give --device cuda and choose GPUs with CUDA_VISIBLE_DEVICES")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    choices = [v for v in visible.split(",") if v.strip()] if visible else None
    if choices is not None and index >= len(choices):
        raise UsageError(f"--device {device}: CUDA_VISIBLE_DEVICES={visible} makes only {len(choices)} GPU(s) visible")
    os.environ["CUDA_VISIBLE_DEVICES"] = choices[index] if choices is not None else str(index)


def _run(args: argparse.Namespace) -> int:
    _select_cuda_device(args.device)
    module_name = TRAINERS[args.trainer][0]
    return int(import_module(module_name).main(args) or 0)


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train <trainer>`` to an ``add_subparsers()`` object; returns the ``train`` parser.

    The handler is stored as ``args.handler`` (call ``args.handler(args)``).
    """
    train = subparsers.add_parser("train", help="run a reference trainer (detection, ...)")
    kinds = train.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for name, (_, help_text, add_own) in TRAINERS.items():
        sub = kinds.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog="A flag left out keeps the config's value (the defaults, then --preset, the TOML file\n"
            "and --set); --print-config shows every resolved value.",
        )
        add_common_arguments(sub)
        if add_own is not None:
            add_own(sub)
        sub.set_defaults(handler=_run)
    return train


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m decal.trainers.cli train detection ...`` (e.g. under torchrun)."""
    argv, debug = split_debug(argv)
    parser = CliParser(prog="decal", description="decal reference trainers")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_handler(args.handler, args, prog=f"decal train {args.trainer}", debug=debug)


if __name__ == "__main__":
    sys.exit(main())
