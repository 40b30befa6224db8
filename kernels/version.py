"""The installed decal's version, from the package metadata (pyproject.toml ``version``).

In the lowest layer so that every layer (the server's Info and /healthz, the face's
``decal.__version__``) reads it without importing a layer above its own.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]


def _installed_version() -> str:
    try:
        return version("decal")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


#: e.g. ``"0.1.0"``.
VERSION: str = _installed_version()
