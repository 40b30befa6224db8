"""The FastAPI control plane, served by uvicorn beside the gRPC server.

=================  =====================================================================
``/healthz``       200 while the process runs (liveness)
``/readyz``        200 when the gRPC server accepts streams; 503 while starting/draining
``/metrics``       Prometheus text format (see :mod:`decal.server.metrics`)
``/datasets``      registered dataset names and descriptions (never their paths)
``/pipelines``     pipeline kinds, their parameters' defaults, the server's limits
``/streams``       live streams: dataset, shard, queue depth, batches and bytes sent
``/preview.png``   a rendered augmented batch: ``?pipeline=copy-paste&dataset=…&seed=…
                   &batch_size=…&output_size=…`` (validated like a stream request)
``/docs``          the OpenAPI UI (Swagger assets bundled by ``fastapi-offline``: no CDN,
                   so it works on an air-gapped node); ``/openapi.json`` the schema
=================  =====================================================================

Errors use the server's one mapping (:mod:`decal.server.status`): a bad parameter is 422
naming it (query bounds, upper ones included, are checked before any use), an unknown
dataset or pipeline 404, a dataset problem 409 naming the dataset and field (never a server
path), anything unforeseen 500 with a short id that is also in the server log.

With a token configured, ``/datasets``, ``/pipelines``, ``/streams`` and ``/preview.png``
need ``Authorization: Bearer <token>``; health and metrics stay open for probes and
scrapers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import grpc

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from ..kernels.version import VERSION
from ..proto import decal_pb2 as pb
from .auth import check_bearer
from .config import DatasetEntry
from .pipelines import PIPELINES, Payload, RequestError
from .status import error_status
from .validation import DEFAULT_PIPELINE, MAX_SEED, validate_request

if TYPE_CHECKING:
    from .app import DecalServer

__all__ = ["create_app"]

PREVIEW_MAX_IMAGES = 16
#: Largest output_size the query accepts as a number (the server's limit is checked after).
_MAX_QUERY_SIZE = 2**31 - 1


def unavailable_reason(entry: DatasetEntry) -> str | None:
    """Why ``entry`` cannot be streamed now (no server path in it), or None."""
    if entry.annotations is not None and not entry.annotations.is_file():
        return f"annotation file {entry.annotations.name!r} not found"
    if not entry.images.is_dir():
        return f"image directory {entry.images.name!r} not found"
    return None


def create_app(server: "DecalServer") -> FastAPI:
    """The control-plane app of ``server`` (reads its config, registry, metrics)."""
    app = FastAPIOffline(title="decal control plane", version=VERSION, description="Health, metrics and previews of a decal batch server.")
    config = server.config
    preview_lock = threading.Lock()

    @app.middleware("http")
    async def mapped_errors(http: Request, call_next: Any) -> Response:
        try:
            return await call_next(http)
        except Exception as error:  # RequestError, or a bug: one mapping
            return error_response(error, None, http)

    def authorized(authorization: str | None = Header(default=None)) -> None:
        if config.token:
            problem = check_bearer(authorization, config.token)
            if problem:
                raise HTTPException(status_code=401, detail=problem, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": VERSION}

    @app.get("/readyz", summary="Readiness: accepting streams")
    def readyz() -> JSONResponse:
        body = {
            "ready": server.ready,
            "draining": server.servicer.draining.is_set(),
            "active_streams": len(server.streams),
            "max_streams": config.limits.max_streams,
        }
        return JSONResponse(body, status_code=200 if server.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/datasets", summary="Registered datasets", dependencies=[Depends(authorized)])
    def datasets() -> list[dict[str, Any]]:
        listing = []
        for e in config.datasets.values():
            reason = unavailable_reason(e)
            item: dict[str, Any] = {"name": e.name, "description": e.description, "available": reason is None}
            if reason is not None:
                item["reason"] = reason
            listing.append(item)
        return listing

    @app.get("/pipelines", summary="Pipeline kinds and limits", dependencies=[Depends(authorized)])
    def pipelines() -> dict[str, Any]:
        import json

        limits = config.limits
        return {
            "pipelines": [
                {
                    "name": k.name,
                    "description": k.description,
                    "params_field": k.params_field,
                    "defaults": {name: json.loads(v) for name, v in k.defaults_json().items()},
                    "server_defaults": dict(config.defaults.get(k.name, {})),
                }
                for k in PIPELINES.values()
            ],
            "limits": {n: getattr(limits, n) for n in limits.__dataclass_fields__},
            "backend": server.servicer.backend,
            "wire": {"image_codecs": list(pb.ImageCodec.keys()), "mask_codecs": list(pb.MaskCodec.keys())},
        }

    @app.get("/streams", summary="Live streams", dependencies=[Depends(authorized)])
    def streams() -> list[dict[str, Any]]:
        return server.streams.snapshot()

    @app.get(
        "/preview.png",
        summary="A rendered augmented batch",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        dependencies=[Depends(authorized)],
    )
    def preview(
        http: Request,
        pipeline: str = Query(DEFAULT_PIPELINE),
        dataset: str | None = Query(None, description="default: the first registered dataset"),
        seed: int = Query(0, ge=0, le=MAX_SEED),
        batch_size: int = Query(4, ge=1, le=PREVIEW_MAX_IMAGES),
        output_size: int = Query(384, ge=8, le=_MAX_QUERY_SIZE),
        columns: int = Query(4, ge=1, le=16),
    ) -> Response:
        name = dataset if dataset is not None else next(iter(config.datasets), "")
        request = pb.StreamRequest(dataset=name, pipeline=pipeline, batch_size=batch_size, seed=seed)
        kind = PIPELINES.get(pipeline)
        if kind is not None:
            params = getattr(request, kind.params_field)
            kind.holder(params, "output_size").output_size = output_size  # nested for balanced, self-training
        plan = validate_request(request, config)  # RequestError → its status (middleware)
        if plan.pipeline.payload is not Payload.INSTANCES:
            instance = ", ".join(k.name for k in PIPELINES.values() if k.payload is Payload.INSTANCES)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"pipeline: the preview renders instance pipelines only ({instance})")
        if not preview_lock.acquire(timeout=60):
            raise HTTPException(status_code=503, detail="preview: busy, retry")
        try:
            return Response(_render(server, plan, columns), media_type="image/png")
        except HTTPException:
            raise
        except Exception as error:  # DatasetError (409 naming the dataset), memory, a bug
            return error_response(error, plan.dataset_of(error), http)
        finally:
            preview_lock.release()

    return app


def error_response(error: BaseException, entry: DatasetEntry | None, http: Request) -> JSONResponse:
    """``{"detail": message}`` with the HTTP status of the server's one error mapping."""
    peer = http.client.host if http.client else "?"
    status = error_status(error, entry, where=f"{http.url.path} from {peer}")
    return JSONResponse({"detail": status.message}, status_code=status.http_status)


def _render(server: "DecalServer", plan: Any, columns: int) -> bytes:
    import tempfile
    from pathlib import Path

    from ..dali_pipes.preview.instances import render_grid
    from ..dali_pipes.core.loader_protocol import close_loader
    from .stream_service import collect_pipeline, weak_pipeline

    loader = server.servicer.open_loader(plan)
    pipeline = None
    try:
        batch = next(iter(loader), None)
        pipeline = weak_pipeline(loader)
        if batch is None:
            raise HTTPException(status_code=404, detail="preview: the dataset gives no batch for these parameters")
        samples = [(batch.images[i], batch.targets[i]) for i in range(len(batch))]
        names = {int(cid): c.get("name", str(cid)) for cid, c in loader.categories.items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = render_grid(
                samples,
                Path(tmp) / "preview.png",
                category_names=names,
                columns=columns,
                tile_size=plan.options["output_size"] if plan.options["output_size"] <= 512 else 512,
                title=f"decal {plan.pipeline.name} · {plan.dataset.name} · seed {plan.options['seed']}",
            )
            return Path(path).read_bytes()
    finally:
        close_loader(loader)
        loader = batch = samples = None  # noqa: F841
        collect_pipeline(pipeline)
