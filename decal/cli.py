"""The ``decal`` command line: ``decal demo``,
``decal preview copy-paste|cutmix|cp2|balanced|mosaic|self-training`` and
``decal serve`` / ``decal stream`` (see :mod:`decal.server`), ``decal bench`` (see
:mod:`decal.bench.throughput`) and ``decal train detection|...`` (see
:mod:`decal.trainers.cli`).

Options come from flags, or from a TOML file whose ``[loader]`` table holds fields of
:class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoaderConfig` (flags win).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

from .dali_pipes.core.cli_support import (
    CliParser,
    UsageError,
    add_device_flag,
    jitter_flag,
    positive_int,
    run_handler,
    split_debug,
)


#: The embedded sample holds two photographs, so the demo pairs them in batches of two.
DEMO_DEFAULTS: dict[str, Any] = {"batch_size": 2, "output_size": 640}

#: The loader flags of ``demo``/``preview``: flag → (config field, argparse type, help).
LOADER_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "--batch-size": ("batch_size", positive_int, "images per batch"),
    "--output-size": ("output_size", positive_int, "S: every output image is S×S pixels"),
    "--jitter": ("jitter", jitter_flag, "scale jitter: lsj (r in 0.1–2.0), ssj (0.8–1.25), none, or MIN,MAX"),
    "--blend-sigma": ("blend_sigma", float, "Gaussian sigma (px) of the paste alpha; 0 = hard paste"),
    "--seed": ("seed", int, "fixes every random draw"),
}


def _flag_default(command: str, field: str) -> str:
    """The default a loader flag stands for, as its help shows it."""
    if command == "preview":
        return "the pipeline's own"
    from .dali_pipes.copy_paste.loader import CopyPasteLoaderConfig

    value = DEMO_DEFAULTS.get(field, getattr(CopyPasteLoaderConfig, field))
    return str(value)


def _read_loader_table(path: str) -> dict[str, Any]:
    """The ``[loader]`` table of a TOML file; any other table or key, or an option that
    :class:`~decal.dali_pipes.copy_paste.loader.CopyPasteLoaderConfig` lacks, is an error
    naming the file and the table or option."""
    from .dali_pipes.copy_paste.loader import CopyPasteLoaderConfig

    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"{path}: not valid TOML: {error}") from None
    for name, value in data.items():
        if name != "loader":
            kind = "table" if isinstance(value, dict) else "key"
            shown = f"[{name}]" if kind == "table" else f"'{name}'"
            raise UsageError(f"{path}: unknown {kind} {shown}; this command reads only the [loader] table")
    table = data.get("loader", {})
    allowed = CopyPasteLoaderConfig.field_names()
    for key in table:
        if key not in allowed:
            raise UsageError(f"{path}: [loader] has unknown option '{key}' (options: {', '.join(allowed)})")
    return dict(table)


def _loader_options(args: argparse.Namespace) -> dict[str, Any]:
    """Loader options: the demo's defaults, then the TOML ``[loader]`` table, then flags."""
    options: dict[str, Any] = dict(DEMO_DEFAULTS) if args.command == "demo" else {}
    if args.config:
        options.update(_read_loader_table(args.config))
    flags = {field: getattr(args, field) for field, _, _ in LOADER_FLAGS.values()}
    flags["device"] = None if args.device in (None, "auto") else args.device
    flags["on_error"] = args.on_error
    options.update({k: v for k, v in flags.items() if v is not None})
    return options


def _dataset_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.annotations:
        if not args.images:
            raise UsageError("--annotations needs --images (the image directory)")
        return Path(args.annotations), Path(args.images)
    from .dali_pipes.coco.sample_data import ensure_sample_dataset

    return ensure_sample_dataset()


def run_demo(args: argparse.Namespace) -> int:
    """Run the copy-paste loader for a few batches, print throughput, write a preview."""
    from .dali_pipes.copy_paste.loader import CopyPasteLoader

    annotations, images = _dataset_paths(args)
    with CopyPasteLoader(annotations, images, **_loader_options(args)) as loader:
        return _demo_batches(args, loader, annotations)


def _demo_batches(args: argparse.Namespace, loader: Any, annotations: Any) -> int:
    """The demo's loop over ``loader`` (closed by the caller): throughput, counts, preview."""
    from tqdm import tqdm

    from .dali_pipes.preview.instances import copy_paste_captions, render_grid

    cfg = loader.config
    if len(loader) == 0:
        raise UsageError(
            f"batch_size={cfg.batch_size} with drop_last={cfg.drop_last} leaves 0 batches from "
            f"{len(loader.dataset)} images; give a smaller --batch-size"
        )
    print(f"decal demo: backend={loader.backend} dataset={annotations} ({len(loader.dataset)} images)")
    print(f"  batch_size={cfg.batch_size} output_size={cfg.output_size} jitter={cfg.jitter} seed={cfg.seed}")
    shown: list[tuple[Any, dict[str, Any]]] = []
    captions: list[str] = []
    images_seen = pasted = instances = batches = 0
    warmup_done_at: float | None = None
    images_after_warmup = 0
    progress = tqdm(total=args.batches, unit="batch", file=sys.stdout, disable=args.quiet)
    while batches < args.batches:
        for batch in loader:
            if warmup_done_at is None:
                warmup_done_at = time.perf_counter()  # first batch includes pipeline start-up
            else:
                images_after_warmup += len(batch)
            batches += 1
            images_seen += len(batch)
            pasted += sum(batch.num_pasted)
            instances += sum(len(t["labels"]) for t in batch.targets)
            if len(shown) < args.preview_images:
                captions += copy_paste_captions(
                    batch, seed=cfg.seed, shard_id=cfg.shard_id, jitter=cfg.jitter, flip_prob=cfg.flip_prob
                )
                shown += list(zip(batch.images, batch.targets))
            progress.update(1)
            progress.set_postfix(pasted_per_image=f"{pasted / images_seen:.2f}")
            if batches >= args.batches:
                break
    progress.close()
    elapsed = time.perf_counter() - (warmup_done_at or time.perf_counter())
    rate = images_after_warmup / elapsed if elapsed > 0 and images_after_warmup else float("nan")
    print(f"  batches={batches} images={images_seen} instances={instances}")
    print(f"  images/s={rate:.1f} (after the first batch)  instances pasted per image={pasted / images_seen:.2f}")
    print(f"  skipped/dropped: {loader.stats}")
    names = {cid: c.get("name", str(cid)) for cid, c in loader.categories.items()}
    shown, captions = shown[: args.preview_images], captions[: args.preview_images]
    title = f"decal copy-paste ({loader.backend}, output {cfg.output_size}x{cfg.output_size}, r = scale-jitter ratio)"
    out = render_grid(shown, args.out, category_names=names, title=title, captions=captions)
    print(f"  preview: {out}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    """``decal preview PIPELINE``: a PNG grid of what the model sees from that pipeline."""
    if args.pipeline == "copy-paste":
        return run_demo(args)
    if args.config:
        raise UsageError(f"--config applies to copy-paste only; give {args.pipeline}'s options as flags")
    device = None if args.device in (None, "auto") else args.device
    flags = {field: getattr(args, field) for field, _, _ in LOADER_FLAGS.values()}
    flags.update(device=device, on_error=args.on_error)
    options = {k: v for k, v in flags.items() if v is not None}  # a loader without an option says so
    if args.pipeline in ("cutmix", "cp2"):
        from .dali_pipes.preview.mix import preview_cp2, preview_cutmix

        render = preview_cutmix if args.pipeline == "cutmix" else preview_cp2
        out = render(args.out, args.root, **options)
    else:
        out = _render_instance_preview(args, options)
    print(f"decal preview {args.pipeline}: {out}")
    return 0


def _render_instance_preview(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """Balanced copy-paste, Mosaic or self-training preview on --annotations/--images (or
    the embedded sample)."""
    if args.pipeline == "balanced":
        from .dali_pipes.preview.balanced import preview_balanced_copy_paste as render
    elif args.pipeline == "mosaic":
        from .dali_pipes.preview.mosaic import preview_mosaic as render
    else:
        from .dali_pipes.preview.self_training import preview_self_training as render
    return render(args.out, args.annotations, args.images, **options)


#: ``decal --help``'s line for ``bench`` when the bench's own parser is not loaded.
BENCH_HELP = "throughput benchmark (GPU vs CPU, kernels vs copy bandwidth)"


def build_parser(bench: bool = True) -> argparse.ArgumentParser:
    """The ``decal`` parser. ``bench=False`` lists ``bench`` without importing ``decal.bench``
    (the top layer; ARCHITECTURE.md): :func:`main` loads it only for ``decal bench ...``."""
    parser = CliParser(prog="decal", description="GPU Copy-Paste data loading on DALI")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (accepted anywhere on the line)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (
        ("demo", "run the copy-paste loader on the embedded sample and write a preview"),
        ("preview", "write a preview PNG of augmented batches of one pipeline"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == "preview":
            sub.add_argument(
                "pipeline",
                nargs="?",
                default="copy-paste",
                choices=["copy-paste", "cutmix", "cp2", "balanced", "mosaic", "self-training"],
                help="which pipeline to preview",
            )
            sub.add_argument("--root", help="image folder for cutmix / cp2 (default: the embedded photos)")
        sub.add_argument("--config", help="TOML file with a [loader] table of loader options (flags win; default: none)")
        sub.add_argument("--annotations", help="COCO/LVIS instances json (default: the embedded sample)")
        sub.add_argument("--images", help="image directory for --annotations (default: the embedded sample's)")
        for flag, (field, kind, text) in LOADER_FLAGS.items():
            sub.add_argument(flag, dest=field, type=kind, help=f"{text} (default: {_flag_default(name, field)})")
        add_device_flag(sub, default=None, default_text="auto, the GPU when one is usable")
        sub.add_argument("--on-error", choices=["raise", "skip"], help="bad images: stop with an error, or skip and count them (default: raise)")
        sub.add_argument("--batches", type=positive_int, default=20 if name == "demo" else 4, help="batches to run")
        sub.add_argument("--preview-images", type=positive_int, default=8, help="images in the preview grid")
        sub.add_argument("--out", default="out/preview.png", help="preview PNG path")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(handler=run_demo if name == "demo" else run_preview)
    check = commands.add_parser(
        "check",
        help="check a COCO/LVIS dataset up front: json fields, categories, every image header and size",
        description="Check a COCO/LVIS instance dataset before training. Exit status: 0 clean, 1 data errors, 2 usage errors.",
    )
    check.add_argument("annotations", help="COCO/LVIS instances json")
    check.add_argument("images", help="image directory")
    check.add_argument("--decode", action="store_true", help="also decode every image fully (slow; finds corrupt image data)")
    check.add_argument("--max-listed", type=positive_int, default=20, help="problems listed one per line (all are counted)")
    check.set_defaults(handler=_run_check)
    from .server.serve import add_serve_arguments, run_serve
    from .server.smoke import add_stream_arguments, run_stream
    from .trainers.cli import add_train_parser

    serve = commands.add_parser("serve", help="serve augmented batches over gRPC, with a FastAPI control plane")
    add_serve_arguments(serve).set_defaults(handler=run_serve)
    stream = commands.add_parser("stream", help="client smoke test: pull a few batches from a decal server")
    add_stream_arguments(stream).set_defaults(handler=run_stream)

    if bench:
        from .bench.throughput import add_bench_parser

        add_bench_parser(commands).set_defaults(handler=lambda args: args.func(args))
    else:
        commands.add_parser("bench", help=BENCH_HELP, add_help=False)
    add_train_parser(commands)
    return parser


def _run_check(args: argparse.Namespace) -> int:
    from .dali_pipes.coco.check import run_check

    return run_check(args.annotations, args.images, decode=args.decode, max_listed=args.max_listed)


def main(argv: Sequence[str] | None = None) -> int:
    """``decal ...``: parse, run the command; a user's mistake is one line on stderr and exit
    status 2 (``--debug`` shows the traceback instead)."""
    argv, debug = split_debug(argv)
    args = build_parser(bench=argv[:1] == ["bench"]).parse_args(argv)
    return run_handler(args.handler, args, prog=f"decal {args.command}", debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
