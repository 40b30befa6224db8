"""A user's mistake on the command line: one line on stderr naming the option, exit status 2,
no traceback (``--debug`` shows it); help shows every flag's default and no reST markup."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decal.cli import build_parser, main
from decal.dali_pipes.core.cli_support import jitter_flag, strip_rest
from decal.trainers import cli as train_cli


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own exit (through CliParser.error)
        code = stop.code
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["demo", "--batches", "0"], ["--batches", "got 0"]),
        (["demo", "--jitter", "1.5"], ["--jitter", "MIN,MAX"]),
        (["demo", "--jitter", "2,1"], ["--jitter"]),
        (["demo", "--output-size", "abc"], ["--output-size"]),
        (["demo", "--device", "tpu"], ["--device", "cuda:N"]),
        (["preview", "mosaic", "--device", "tpu"], ["--device"]),
        (["train", "detection", "--device", "tpu"], ["--device"]),
        (["stream", "127.0.0.1:1", "--device", "cuda:x"], ["--device"]),
        (["demo", "--annotations", "a.json"], ["--images"]),
        (["demo", "--config", "missing.toml"], ["missing.toml"]),
        (["check"], ["annotations", "images"]),
        (["preview", "cutmix", "--jitter", "ssj", "--device", "cpu"], ["CutMixLoader", "'jitter'"]),
        (["preview", "mosaic", "--config", "x.toml"], ["--config", "copy-paste only"]),
    ],
)
def test_flag_mistakes_are_one_line(argv: list[str], names: list[str], capsys) -> None:
    _assert_one_line_error(*_run(argv, capsys), *names)


@pytest.mark.parametrize(
    "toml, names",
    [
        ("[Loader]\nseed = 1\n", ["unknown table [Loader]", "[loader]"]),
        ("seed = 1\n", ["unknown key 'seed'"]),
        ("[loader]\nseeds = 1\n", ["unknown option 'seeds'"]),
        ('[loader]\noutput_size = "1024"\n', ["option 'output_size' must be an int, got '1024'"]),
        ("[loader]\njitter = 1.5\n", ["option 'jitter'"]),
        ("[loader]\nbatch_size = 4\ndrop_last = true\n", ["batch_size=4", "0 batches from 2 images", "--batch-size"]),
        ("[loader\n", ["not valid TOML"]),
    ],
)
def test_config_mistakes_are_one_line(tmp_path: Path, toml: str, names: list[str], capsys) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(toml)
    code, err = _run(["demo", "--config", str(config), "--device", "cpu", "--quiet", "--out", str(tmp_path / "p.png")], capsys)
    _assert_one_line_error(code, err, *names)


def test_installed_entry_point_is_one_line_and_debug_shows_traceback() -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    plain = subprocess.run([sys.executable, "-m", "decal.cli", "demo", "--batches", "0"], capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1
    config_error = [sys.executable, "-m", "decal.cli", "demo", "--config", "/nonexistent/x.toml"]
    debug = subprocess.run(config_error + ["--debug"], capture_output=True, text=True, env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_jitter_range_reaches_the_loader(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.png"
    assert main(["demo", "--jitter", "0.5,1.5", "--batches", "1", "--output-size", "64", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert "jitter=(0.5, 1.5)" in capsys.readouterr().out
    assert jitter_flag("SSJ") == "ssj" and jitter_flag("0.25,2") == (0.25, 2.0)
    with pytest.raises(argparse.ArgumentTypeError):
        jitter_flag("0.5")


def _option_lines(help_text: str) -> list[str]:
    """Each option's help entry as one string (continuation lines joined)."""
    entries: list[str] = []
    in_options = False
    for line in help_text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            in_options = line.startswith("options") or line.endswith("arguments:") or line == "detection:"
            continue
        if not in_options:
            continue
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("   ") and entries:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", [["demo"], ["preview"], ["check"], ["stream"], ["train", "detection"]])
def test_every_flag_has_help(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main(command + ["--help"])
    entries = [e for e in _option_lines(capsys.readouterr().out) if not e.startswith("-h, --help")]
    assert entries
    for entry in entries:
        assert len(entry.split()) > 2 or "  " in entry, f"flag without help: {entry}"


def test_demo_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    entries = {e.split()[0].rstrip(","): e for e in _option_lines(capsys.readouterr().out)}
    for flag in ("--batch-size", "--output-size", "--jitter", "--blend-sigma", "--seed", "--device", "--on-error", "--batches", "--out"):
        assert "default:" in entries[flag], entries[flag]
    assert "(default: 2)" in entries["--batch-size"] and "(default: lsj)" in entries["--jitter"]


def test_bench_help_has_no_rest_markup(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "GpuMaskCopyPasteLoader" in text
    assert "``" not in text and ":class:" not in text and ":mod:" not in text and "=====" not in text


def test_strip_rest() -> None:
    assert strip_rest("see :class:`~decal.a.Batch` and :mod:`bench.data`") == "see Batch and bench.data"
    assert strip_rest("``x`` is::\n\n====  ===\na     b\n") == "x is:\n\na     b"


def test_train_device_vocabulary() -> None:
    parser = build_parser()
    for flag, run_device, loader_device in (("cpu", "cpu", "cpu"), ("gpu", "cuda", "gpu"), ("cuda", "cuda", "gpu"), ("cuda:1", "cuda", "gpu"), ("auto", "auto", None)):
        args = parser.parse_args(["train", "detection", "--device", flag])
        updates = train_cli.common_updates(args)
        assert updates["run"]["device"] == run_device
        assert updates.get("loader", {}).get("device") == loader_device


def test_train_cuda_index_selects_the_visible_gpu(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train_cli._select_cuda_device("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    train_cli._select_cuda_device("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    with pytest.raises(ValueError, match="only 1 GPU"):
        train_cli._select_cuda_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        train_cli._select_cuda_device("cuda:0")
