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
``/docs``          the OpenAPI UI; ``/openapi.json`` the schema
=================  =====================================================================

With a token configured, ``/datasets``, ``/pipelines``, ``/streams`` and ``/preview.png``
need ``Authorization: Bearer <token>``; health and metrics stay open for probes and
scrapers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..proto import decal_pb2 as pb
from .auth import check_bearer
from .pipelines import PIPELINES, RequestError
from .validation import DEFAULT_PIPELINE, validate_request

if TYPE_CHECKING:
    from .app import DecalServer

__all__ = ["create_app"]

_HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503}
PREVIEW_MAX_IMAGES = 16


def create_app(server: "DecalServer") -> FastAPI:
    """The control-plane app of ``server`` (reads its config, registry, metrics)."""
    app = FastAPI(title="decal control plane", version=__version__, description="Health, metrics and previews of a decal batch server.")
    config = server.config
    preview_lock = threading.Lock()

    def authorized(authorization: str | None = Header(default=None)) -> None:
        if config.token:
            problem = check_bearer(authorization, config.token)
            if problem:
                raise HTTPException(status_code=401, detail=problem, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

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
        return [
            {"name": e.name, "description": e.description, "available": e.annotations.is_file() and e.images.is_dir()}
            for e in config.datasets.values()
        ]

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
        pipeline: str = Query(DEFAULT_PIPELINE),
        dataset: str | None = Query(None, description="default: the first registered dataset"),
        seed: int = Query(0, ge=0),
        batch_size: int = Query(4, ge=1, le=PREVIEW_MAX_IMAGES),
        output_size: int = Query(384, ge=8),
        columns: int = Query(4, ge=1, le=16),
    ) -> Response:
        name = dataset if dataset is not None else next(iter(config.datasets), "")
        request = pb.StreamRequest(dataset=name, pipeline=pipeline, batch_size=batch_size, seed=seed)
        if pipeline == "copy-paste":
            request.copy_paste.output_size = output_size
        try:
            plan = validate_request(request, config)
        except RequestError as error:
            raise HTTPException(status_code=_HTTP_STATUS.get(error.code.name, 400), detail=error.message) from None
        if not preview_lock.acquire(timeout=60):
            raise HTTPException(status_code=503, detail="preview: busy, retry")
        try:
            return Response(_render(server, plan, columns), media_type="image/png")
        finally:
            preview_lock.release()

    return app


def _render(server: "DecalServer", plan: Any, columns: int) -> bytes:
    import tempfile
    from pathlib import Path

    from ..dali_pipes.preview import render_grid
    from .stream_service import collect_pipeline, weak_pipeline

    loader = server.servicer.build_loader(plan)
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
        loader = batch = samples = None  # noqa: F841
        collect_pipeline(pipeline)
