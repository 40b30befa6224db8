"""One mapping from an exception to what a client is told, for the gRPC stream and every HTTP
route of the control plane:

* :class:`~decal.server.pipelines.RequestError`: its own code (INVALID_ARGUMENT → 422,
  NOT_FOUND → 404, RESOURCE_EXHAUSTED → 429, ...) and message (``field: reason``);
* :class:`~decal.dali_pipes.core.errors.DatasetError`: FAILED_PRECONDITION / 409,
  ``dataset 'NAME': FILE: image I: field 'F': reason``;
* anything else: INTERNAL / 500, ``server: internal error (id 3fa2c1d0; ...)``.

Dataset messages never carry a server path: the dataset's folders are cut from the file and
the reason (a file under the image folder is shown relative to it, the json by its name).
An internal error's short id is logged with the traceback, so an operator finds the one
line a user quotes.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..dali_pipes.core.errors import DatasetError
from .config import DatasetEntry
from .pipelines import RequestError

__all__ = ["ErrorStatus", "HTTP_STATUS", "error_status", "dataset_message"]

log = logging.getLogger("decal.server")

#: gRPC status → HTTP status of the control plane.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.INTERNAL: 500,
}


@dataclass(frozen=True)
class ErrorStatus:
    """What a client is told: a gRPC code, its HTTP twin and a message without server paths."""

    code: grpc.StatusCode
    message: str

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def _relative(path: str, entry: DatasetEntry | None) -> str:
    """``path`` as a client may see it: relative to the dataset's image folder, else its name."""
    if entry is not None:
        try:
            return Path(path).relative_to(entry.images).as_posix()
        except ValueError:
            pass
    return Path(path).name or "."


def _scrub(text: str, entry: DatasetEntry | None) -> str:
    if entry is None:
        return text
    folders = {str(entry.images)} | ({str(entry.annotations.parent)} if entry.annotations is not None else set())
    for folder in sorted(folders, key=len, reverse=True):
        text = text.replace(folder + "/", "").replace(folder, Path(folder).name)
    return text


def dataset_message(error: DatasetError, entry: DatasetEntry | None) -> str:
    """``dataset 'NAME': FILE: annotation A (image I): field 'F': reason``, no server paths."""
    name = entry.name if entry is not None else "?"
    return ": ".join([f"dataset {name!r}", *error.location(_relative(error.file, entry)), _scrub(error.reason, entry)])


def error_status(error: BaseException, entry: DatasetEntry | None = None, *, where: str = "request") -> ErrorStatus:
    """The status of ``error`` raised while serving ``entry`` (None when no dataset is known
    yet). Anything unforeseen is INTERNAL, logged with its traceback under a short id."""
    if isinstance(error, RequestError):
        return ErrorStatus(error.code, error.message)
    if isinstance(error, DatasetError):
        message = dataset_message(error, entry)
        log.warning("%s: %s (server-side: %s)", where, message, error)
        return ErrorStatus(grpc.StatusCode.FAILED_PRECONDITION, message)
    error_id = secrets.token_hex(4)
    log.error("%s: internal error %s: %s: %s", where, error_id, type(error).__name__, error, exc_info=error)
    return ErrorStatus(grpc.StatusCode.INTERNAL, f"server: internal error (id {error_id}; the server log has the details)")
