"""``kernels/array_module.py``: which array module holds an array, on a machine where CuPy may
be absent, loaded, or half loaded by another thread."""

from __future__ import annotations

import sys
import types

import numpy as np

from decal.kernels.array_module import get_array_module, is_cupy_array, to_host


def test_half_imported_cupy_is_not_an_error(monkeypatch) -> None:
    """A thread importing CuPy for the first time puts a module without ``ndarray`` yet in
    ``sys.modules``; a step running meanwhile in another thread (a server stream) must see
    NumPy arrays as NumPy, not raise AttributeError (it ended streams with INTERNAL)."""
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    x = np.arange(3)
    assert not is_cupy_array(x)
    assert get_array_module(x) is np
    assert to_host(x) is x


def test_a_loaded_cupy_module_is_recognised(monkeypatch) -> None:
    """With a (stand-in) CuPy loaded, its arrays are CuPy's and NumPy's stay NumPy's."""
    fake = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - CuPy's name
        def get(self) -> np.ndarray:
            return np.ones(2)

    fake.ndarray = ndarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert is_cupy_array(ndarray()) and get_array_module(ndarray()) is fake
    assert np.array_equal(to_host(ndarray()), np.ones(2))
    assert not is_cupy_array(np.zeros(1)) and get_array_module(np.zeros(1)) is np
