"""Which backend a pipeline runs on: the GPU when CuPy sees a CUDA device, else the CPU."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

Backend = Literal["cpu", "gpu"]


@lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when a CUDA device can be used (CuPy reports at least one device)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, or CuPy missing: the CPU path
        return False


def resolve_backend(device: str | None) -> Backend:
    """``None``/``"auto"`` → ``"gpu"`` if available else ``"cpu"``; validates explicit names."""
    if device in (None, "auto"):
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu":
        if not gpu_available():
            raise RuntimeError("device='gpu' was asked for, but no CUDA device is usable (CuPy sees none)")
        return "gpu"
    if device == "cpu":
        return "cpu"
    raise ValueError(f"device must be 'gpu', 'cpu', 'auto' or None, got {device!r}")
