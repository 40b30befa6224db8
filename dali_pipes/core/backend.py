"""Which device a pipeline runs on, and the one device vocabulary of decal.

Every ``device`` option and ``--device`` flag (loaders, ``decal demo``/``preview``,
``decal train``, ``decal stream``) is read by :func:`parse_device`, which accepts:

==================  ===========================================================
``None``/``"auto"``  the GPU when CuPy sees one, else the CPU
``"cpu"``            DALI's CPU backend (torch tensors on the CPU)
``"gpu"``/``"cuda"`` CUDA device 0 (or the loader's ``device_id``)
``"cuda:N"``         CUDA device N (``"gpu:N"`` is accepted as well)
==================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .options import OptionError

Backend = Literal["cpu", "gpu"]

__all__ = ["Backend", "Device", "DEVICE_CHOICES", "check_backend", "gpu_available", "parse_device", "resolve_backend"]

#: What a ``--device`` flag's help shows.
DEVICE_CHOICES = "auto | cpu | gpu | cuda | cuda:N"


@dataclass(frozen=True)
class Device:
    """A parsed device: ``kind`` is ``"auto"``, ``"cpu"`` or ``"gpu"``; ``index`` is the
    CUDA device index when one was named (``"cuda:1"`` → 1), else None."""

    kind: Literal["auto", "cpu", "gpu"]
    index: int | None = None

    def torch_device(self) -> str:
        """The torch device string: ``"cpu"`` or ``"cuda:N"`` (``"auto"`` asks torch)."""
        if self.kind == "cpu":
            return "cpu"
        if self.kind == "auto":
            import torch

            return f"cuda:{self.index or 0}" if torch.cuda.is_available() else "cpu"
        return f"cuda:{self.index or 0}"


def parse_device(value: object, option: str = "device") -> Device:
    """Read ``value`` in decal's device vocabulary (see the module docstring).

    Raises:
        OptionError: naming ``option`` and listing the accepted forms.
    """
    if value is None:
        return Device("auto")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "cpu"):
            return Device(text)  # type: ignore[arg-type]
        if text in ("gpu", "cuda"):
            return Device("gpu")
        head, sep, tail = text.partition(":")
        if sep and head in ("gpu", "cuda") and tail.isdigit():
            return Device("gpu", int(tail))
    raise OptionError(f"'{option}': expected {DEVICE_CHOICES.replace(' | ', ', ')}, got {value!r}")


@lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when a CUDA device can be used (CuPy reports at least one device)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, or CuPy missing: the CPU path
        return False


def resolve_backend(device: str | None) -> Backend:
    """The DALI backend of a ``device`` option: ``"auto"`` → ``"gpu"`` if one is usable,
    else ``"cpu"``; ``"gpu"``/``"cuda"``/``"cuda:N"`` → ``"gpu"`` (an error without one)."""
    parsed = parse_device(device)
    if parsed.kind == "auto":
        return "gpu" if gpu_available() else "cpu"
    if parsed.kind == "gpu":
        if not gpu_available():
            raise OptionError(f"device={device!r} was asked for, but no CUDA device is usable (CuPy sees none); use device='cpu'")
        return "gpu"
    return "cpu"


def check_backend(device: str) -> Backend:
    """``device`` of a graph builder, a resolved backend: ``"cpu"`` or ``"gpu"``.

    Raises:
        ValueError: for anything else (a builder takes no ``"auto"`` or ``"cuda:N"``).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    return device  # type: ignore[return-value]
