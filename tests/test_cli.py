"""``decal demo`` as a smoke test: it runs the loader on the embedded sample and writes a
preview PNG that decodes to an image of the expected grid size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

import decal
from decal.cli import main


def test_demo_writes_preview(tmp_path: Path, capsys) -> None:
    out = tmp_path / "preview.png"
    code = main(["demo", "--batches", "3", "--output-size", "96", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "backend=cpu" in printed and "images/s=" in printed and "pasted per image=" in printed
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        assert picture.size == (4 * 384, 2 * 384 + 22)  # 6 samples in a 4-column grid


def test_demo_reads_toml_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "demo.toml"
    config.write_text('[loader]\noutput_size = 80\njitter = "ssj"\nseed = 3\n')
    out = tmp_path / "p.png"
    assert main(["demo", "--config", str(config), "--batches", "1", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert "output_size=80 jitter=ssj seed=3" in capsys.readouterr().out


def test_import_decal_is_cheap() -> None:
    code = "import sys, decal; assert 'nvidia.dali' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "CopyPasteLoader" in dir(decal)


def test_the_face_re_exports_the_loaders_and_the_remote_loader() -> None:
    import decal.dali_pipes
    import decal.server

    for face in (decal.dali_pipes, decal.server):
        for name in set(face.__all__) - {"ConfigError"}:  # decal.ConfigError would be ambiguous
            assert getattr(decal, name) is getattr(face, name), name
    assert "ConfigError" not in dir(decal)


def test_preview_cutmix_and_cp2(tmp_path: Path) -> None:
    for pipeline in ("cutmix", "cp2"):
        out = tmp_path / f"{pipeline}.png"
        assert main(["preview", pipeline, "--device", "cpu", "--batch-size", "4", "--out", str(out)]) == 0
        with Image.open(out) as picture:
            assert picture.format == "PNG" and picture.size[0] > 400


def test_preview_instance_pipelines(tmp_path: Path) -> None:
    for pipeline in ("balanced", "mosaic", "self-training"):
        out = tmp_path / f"{pipeline}.png"
        assert main(["preview", pipeline, "--device", "cpu", "--output-size", "96", "--out", str(out)]) == 0
        with Image.open(out) as picture:
            assert picture.format == "PNG" and picture.size[0] > 300
