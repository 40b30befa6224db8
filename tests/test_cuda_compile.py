"""Every CUDA source in kernels/ compiles: with nvcc for sm_90 (as a cubin), and with NVRTC
exactly as the CuPy launchers build it (same source text and options). No GPU needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"
CU_FILES = sorted(KERNEL_DIR.glob("*.cu"))


def test_there_are_cuda_sources() -> None:
    assert CU_FILES, f"no .cu files under {KERNEL_DIR}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("cu", CU_FILES, ids=[p.name for p in CU_FILES])
def test_nvcc_compiles(cu: Path, tmp_path: Path) -> None:
    cmd = [
        "nvcc",
        "-arch=sm_90",
        "--std=c++17",
        f"-I{KERNEL_DIR}",
        "-cubin",
        "-o",
        str(tmp_path / (cu.stem + ".cubin")),
        str(cu),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return nvrtc
    except Exception:
        return None


@pytest.mark.skipif(_nvrtc() is None, reason="NVRTC (through CuPy) not available")
@pytest.mark.parametrize("cu", CU_FILES, ids=[p.name for p in CU_FILES])
def test_nvrtc_compiles_launcher_source(cu: Path) -> None:
    from decal.kernels import _cuda

    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(_cuda.kernel_source(cu.name), cu.name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*_cuda.nvrtc_options(), "-arch=compute_90"])
        except Exception as exc:
            pytest.fail(f"NVRTC failed on {cu.name}: {exc}\n{nvrtc.getProgramLog(prog)}")
        assert nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
