"""decal's augmentation service: a gRPC server that streams augmented batches from DALI
pipelines to remote training processes, its FastAPI control plane, and the client loader.

Modules (one concept each): ``config`` (typed TOML config), ``wire`` (tensors and batches
on the wire), ``validation``, ``params`` and ``pipelines`` (request → loader options, one
``PipelineKind`` per served family), ``memory`` (a stream's memory estimate), ``streams`` (the
live-stream registry), ``stream_service`` (the servicer), ``auth`` (bearer tokens),
``metrics`` (Prometheus), ``control_plane`` (FastAPI), ``app`` (``DecalServer``: both in one
process), ``serve`` (``decal serve``), ``remote_loader`` (``RemoteLoader``), ``smoke``
(``decal stream``). Names below are imported lazily.
"""

from __future__ import annotations

from ..kernels.lazy_exports import lazy_exports

#: Name -> defining module of each lazily re-exported name (the face :mod:`decal` builds on it).
EXPORTS = {
    "RemoteLoader": "decal.server.remote_loader",
    "RemoteLoaderError": "decal.server.remote_loader",
    "DecalServer": "decal.server.app",
    "ServerConfig": "decal.server.config",
    "ConfigError": "decal.server.config",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
