"""NumPy or CuPy: which array module holds an array, and moving arrays to the host.

Shared by the kernels (through ``kernels/_cuda.py``) and the data layer's steps. Never imports
CuPy unless CuPy is asked for (:func:`cupy_module`) or already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["is_cupy_array", "get_array_module", "to_host", "cupy_module"]


def is_cupy_array(x: Any) -> bool:
    """True when ``x`` is a ``cupy.ndarray``; never imports CuPy when it isn't loaded.

    CuPy may be half imported (another thread, say a metrics scrape, importing it for the
    first time): its module is in ``sys.modules`` before ``ndarray`` is defined. No CuPy array
    can exist then, so the answer is False rather than an AttributeError."""
    ndarray = getattr(sys.modules.get("cupy"), "ndarray", None)
    return ndarray is not None and isinstance(x, ndarray)


def get_array_module(x: Any) -> Any:
    """``cupy`` for CuPy arrays, ``numpy`` otherwise (without importing CuPy needlessly)."""
    return sys.modules["cupy"] if is_cupy_array(x) else np


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: CuPy arrays are copied to the host (a synchronising copy),
    NumPy arrays returned as they are."""
    return x.get() if is_cupy_array(x) else np.asarray(x)


def cupy_module() -> Any:
    """The ``cupy`` module, imported on first use (a GPU path asks for it; CPU paths never do)."""
    import cupy

    return cupy
