"""Shared plumbing for the kernel modules: CUDA source loading, dispatch, output allocation.

Nothing here touches the GPU at import time. CuPy itself is imported lazily, only when a
launcher runs or when an argument already is a CuPy array (in which case CuPy is imported).

Conventions used by every ``<op>_cupy`` launcher:

* kernels run on CuPy's *current* stream (wrap calls in ``cupy.cuda.ExternalStream`` to run
  them on DALI's stream); launchers never synchronise;
* outputs are freshly allocated; with the environment variable ``DECAL_POISON=1`` they are
  filled with the byte ``0xAB`` before the launch, so a test can tell an element the kernel
  never wrote from one it did.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .array_module import get_array_module, is_cupy_array, to_host  # noqa: F401  (kernels import them from here)

KERNEL_DIR: Path = Path(__file__).resolve().parent
"""Folder holding the ``.cu`` / ``.cuh`` sources (also the NVRTC include path)."""

POISON_BYTE = 0xAB

# is_cupy_array, get_array_module, to_host: kernels/array_module.py (imported above).


# --------------------------------------------------------------------------- sources


def nvrtc_options() -> tuple[str, ...]:
    """Options every RawModule is compiled with (also used by the NVRTC compile test)."""
    return ("--std=c++17", f"-I{KERNEL_DIR}")


def kernel_source(cu_name: str) -> str:
    """The source of ``kernels/<cu_name>`` as handed to NVRTC.

    A comment with a hash of every ``.cuh`` header is appended, because CuPy's on-disk
    kernel cache keys on the top-level source text only and would otherwise keep serving a
    binary built against an older header.
    """
    src = (KERNEL_DIR / cu_name).read_text()
    digest = hashlib.sha256()
    for header in sorted(KERNEL_DIR.glob("*.cuh")):
        digest.update(header.name.encode())
        digest.update(header.read_bytes())
    return f"{src}\n// decal-headers-sha256: {digest.hexdigest()}\n"


@functools.lru_cache(maxsize=None)
def raw_module(cu_name: str) -> Any:
    """The ``cupy.RawModule`` for ``kernels/<cu_name>``, built once per process (lazily: NVRTC
    runs on the first ``get_function``/launch, per device)."""
    import cupy

    return cupy.RawModule(code=kernel_source(cu_name), options=nvrtc_options())


def get_kernel(cu_name: str, kernel_name: str) -> Any:
    """The kernel ``kernel_name`` of ``kernels/<cu_name>`` for the current device (cached)."""
    import cupy

    return _get_kernel(cu_name, kernel_name, cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _get_kernel(cu_name: str, kernel_name: str, device_id: int) -> Any:
    return raw_module(cu_name).get_function(kernel_name)


# --------------------------------------------------------------------------- launches


def poison_enabled() -> bool:
    """True when ``DECAL_POISON=1`` (read at every call, so tests may set it at run time)."""
    return os.environ.get("DECAL_POISON", "") == "1"


def empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """``cupy.empty``, filled with ``0xAB`` bytes when poisoning is enabled."""
    import cupy

    out = cupy.empty(shape, dtype=dtype)
    if poison_enabled() and out.size:
        out.view(cupy.uint8).fill(POISON_BYTE)
    return out


def as_device(x: Any, dtype: Any) -> Any:
    """A C-contiguous CuPy array of ``dtype`` holding ``x`` (host or device); no copy if it
    already is one."""
    import cupy

    return cupy.ascontiguousarray(cupy.asarray(x, dtype=dtype))


def as_device_mask(x: Any) -> Any:
    """A C-contiguous CuPy uint8 array of a mask/alpha: uint8 input is kept as is, any other
    dtype (bool, float) becomes ``(x != 0)`` as 0/1 bytes."""
    import cupy

    x = cupy.asarray(x)
    if x.dtype != cupy.uint8:
        x = (x != 0).astype(cupy.uint8)
    return cupy.ascontiguousarray(x)


def as_host_mask(x: Any) -> np.ndarray:
    """The NumPy counterpart of :func:`as_device_mask`."""
    x = np.asarray(x)
    return x if x.dtype == np.uint8 else (x != 0).astype(np.uint8)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


MAX_GRID_YZ = 65535
"""CUDA's limit on ``gridDim.y`` and ``gridDim.z``."""


def check_grid_yz(n: int, what: str) -> None:
    if n > MAX_GRID_YZ:
        raise ValueError(f"{what}={n} exceeds the CUDA grid limit {MAX_GRID_YZ}")


@functools.lru_cache(maxsize=None)
def num_sms(device_id: int) -> int:
    """Streaming multiprocessors on ``device_id`` (used to size grids)."""
    import cupy

    return int(cupy.cuda.runtime.getDeviceProperties(device_id)["multiProcessorCount"])


def current_device_sms() -> int:
    """Streaming multiprocessors of CuPy's current device."""
    import cupy

    return num_sms(cupy.cuda.Device().id)


def row_blocks(work: int, rows: int, threads: int) -> int:
    """``gridDim.x`` of a ``(blocks_x, rows)`` grid whose blocks of ``threads`` threads stride
    over ``work`` items per row: enough blocks to cover a row, but no more than needed for
    about 32 blocks per SM over the whole grid (a block then loops over several items)."""
    return min(ceil_div(work, threads), max(1, ceil_div(32 * current_device_sms(), rows)))


@dataclass(frozen=True)
class PlaneGrid:
    """Launch geometry of a kernel with one grid row per ``(H, W)`` uint8 plane.

    Attributes:
        vec4: the plane is read as 4-byte words (its size and every array's address are
            multiples of 4), else byte by byte.
        words: items per plane: ``H*W / 4`` with ``vec4``, else ``H*W``.
        blocks_x: ``gridDim.x`` (:func:`row_blocks`); ``gridDim.y`` is the number of planes.
    """

    vec4: bool
    words: int
    blocks_x: int


def plane_grid(rows: int, plane: int, threads: int, what: str, *arrays: Any) -> PlaneGrid | None:
    """The grid of a launch over ``rows`` planes of ``plane`` bytes, reading ``arrays`` (CuPy);
    None when there is nothing to launch (no rows or empty planes).

    Raises:
        ValueError: ``rows`` over the CUDA grid limit (the message names ``what``).
    """
    if rows == 0 or plane == 0:
        return None
    check_grid_yz(rows, what)
    vec4 = plane % 4 == 0 and all(array.data.ptr % 4 == 0 for array in arrays)
    words = plane // 4 if vec4 else plane
    return PlaneGrid(vec4, words, row_blocks(words, rows, threads))
