"""Lazy public re-exports for a package's ``__init__.py`` (PEP 562).

In the lowest layer, beside ``version.py``, so that every layer's face (``decal``,
``decal.dali_pipes``, ``decal.server``) can re-export names without importing the modules
that define them (DALI, CuPy, gRPC load only when a name is first used)::

    EXPORTS = {"CopyPasteLoader": "decal.dali_pipes.copy_paste.loader"}
    __all__, __getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__all__`` (the sorted names of ``exports``), ``__getattr__`` and
    ``__dir__`` of ``package``: a name of ``exports`` (name → defining module) is imported
    from its module when first asked for; any other raises ``AttributeError`` naming
    ``package``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return sorted(exports), __getattr__, __dir__
