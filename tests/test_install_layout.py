"""The install contract the README states: the core pulls no DALI/CuPy, each extra brings
one consistent pair, the client path needs no DALI, and the README's install section and
``make`` targets agree with pyproject.toml."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_pull_no_cuda_pair() -> None:
    core = _names(PROJECT["dependencies"])
    assert {"numpy", "torch", "torchvision", "pycocotools", "pillow", "tqdm"} <= core
    assert not {n for n in core if n.startswith(("nvidia-dali", "cupy"))}


def test_extras_bring_one_consistent_pair() -> None:
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    assert extras["cuda12"] == {"nvidia-dali-cuda120", "cupy-cuda12x"}
    assert extras["cuda13"] == {"nvidia-dali-cuda130", "cupy-cuda13x"}
    assert extras["cpu"] == {"nvidia-dali-cuda120"}
    assert extras["client"] == {"grpcio", "protobuf"}


def test_make_installs_what_the_tests_need() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r'pip install --quiet -e "\.\[([a-z0-9,]+)\]"', makefile)
    assert match is not None
    assert set(match.group(1).split(",")) == {"cuda12", "serve", "bench", "test"}


def test_remote_loader_imports_without_dali_or_cupy() -> None:
    code = (
        "import sys, decal; decal.RemoteLoader; decal.LabelMap; decal.Batch\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('nvidia', 'cupy', 'fastapi', 'uvicorn', 'cv2')]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_opens_with_the_commands_then_install() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    assert [line.split()[1] for line in first_block.group(1).strip().splitlines()] == ["demo", "test"]
    after = text[first_block.end():].lstrip()
    assert after.startswith("## Install")
    install = after[: after.index("\n## ", 3)]
    for needle in ('pip install -e ".[cuda12]"', '".[cuda13]"', '".[cpu]"', '".[client]"', "525.60", "Linux", "x86-64",
                   "~/.cache/decal/sample", "kernel_cache", "bench/RESULTS.md"):
        assert needle in install, needle


def test_user_facing_files_point_inside_the_repository() -> None:
    for name in ("README.md", "Makefile", "pyproject.toml"):
        text = (ROOT / name).read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, name


def test_make_installs_the_lvis_api_without_the_gui_opencv() -> None:
    """lvis 0.5.3 requires opencv-python, whose cv2 would replace the bench's headless one: no
    extra that `make install` uses lists lvis; the Makefile adds it with --no-deps."""
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    installed = set().union(*(extras[name] for name in ("cuda12", "serve", "bench", "test")))
    assert "opencv-python-headless" in installed
    assert not {"lvis", "opencv-python"} & installed
    assert re.search(r'pip install --quiet --no-deps "lvis>=[0-9.]+"', (ROOT / "Makefile").read_text())
