"""The gRPC servicer of ``decal.v1.BatchService``: one pipeline per stream.

Life of a stream::

    request ─ validate (pure; INVALID_ARGUMENT / NOT_FOUND naming the field)
            ─ admit (registry; RESOURCE_EXHAUSTED past max_streams; UNAVAILABLE when draining)
            ─ build the loader (reads the dataset json; no DALI pipeline yet)
            ─ check the stream's memory estimate against limits.max_stream_bytes
              (RESOURCE_EXHAUSTED with the figure; see decal.server.memory)
            ─ check the resume position against the epoch (INVALID_ARGUMENT resume.cursor)
            ─ send StreamHeader
            ─ producer thread: iterate the loader (the DALI pipeline is built here), encode
              each batch (wire options) and serialize it, put it in the stream's bounded
              queue (``limits.prefetch_batches``): a slow client blocks its own producer only
            ─ gRPC worker thread: take from the queue, send
    end     ─ client cancels / disconnects (the gRPC callback sets ``stop``), max_batches
              reached (OK), a server error (status with the reason), or drain (UNAVAILABLE)
            ─ the producer closes the loader's iterator and drops the loader (the DALI
              pipeline, its threads and memory go with it) and leaves the registry.

Every failure becomes a status through one mapping (:mod:`decal.server.status`): dataset
problems FAILED_PRECONDITION naming dataset and field, anything unforeseen INTERNAL with a
short id that is also in the log. Each rejected stream is logged with its reason and peer.

Serialization happens in the producer thread: the handler yields ready ``bytes`` (the
method is registered with a pass-through serializer), so the gRPC worker only copies.
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import grpc
import numpy as np

from ..dali_pipes.core.loader_protocol import close_loader
from ..kernels.version import VERSION
from ..proto import decal_pb2 as pb
from .config import DatasetEntry, Limits, ServerConfig
from .metrics import ServerMetrics
from .pipelines import COPY_PASTE, PIPELINES, Payload, RequestError
from .status import ErrorStatus, error_status
from .streams import StreamRegistry, StreamState
from .validation import StreamPlan, validate_request
from .wire import (
    CP2_FIELDS,
    INFO_METHOD,
    SERVICE_NAME,
    STREAM_METHOD,
    batch_part_bytes,
    encode_batch,
    encode_cp2_batch,
    encode_mixed_batch,
    position_to_proto,
)

__all__ = ["BatchServicer", "LoaderFactory", "SERVICE_NAME", "STREAM_METHOD", "INFO_METHOD", "add_to_server", "limits_message"]

log = logging.getLogger("decal.server")


#: (dataset entry, loader options) → a loader: the plan's family's loader by default
#: (``PipelineKind.build_loader``; tests inject fakes).
LoaderFactory = Callable[[DatasetEntry, Mapping[str, Any]], Any]

_POLL_S = 0.1


@dataclass(frozen=True)
class _Failure:
    code: grpc.StatusCode
    message: str


_END = object()  # max_batches reached


def epoch_length(loader: Any, epoch: int) -> int:
    """Entries in ``loader``'s shard order for ``epoch`` (its public ``epoch_length``)."""
    return int(loader.epoch_length(epoch))


def weak_pipeline(loader: Any) -> "weakref.ref | None":
    """A weak reference to ``loader``'s DALI pipeline, if it has one."""
    pipeline = getattr(loader, "built_pipeline", None)
    try:
        return weakref.ref(pipeline) if pipeline is not None else None
    except TypeError:
        return None


def collect_pipeline(ref: "weakref.ref | None") -> None:
    """Free a dropped DALI pipeline now.

    The loader's ``close()`` has already shut the pipeline's backend and workers down; what
    is left of it is freed by reference counting, unless a cycle holds it (a DALI graph and
    its ops can refer to each other). This frees such a remnant now instead of at a later GC
    pass (left to interpreter exit, one could abort the process). A young-generation pass
    usually suffices; a full one is the fallback.
    """
    if ref is None or ref() is None:
        return
    gc.collect(1)
    if ref() is not None:
        gc.collect()
    if ref() is not None:
        log.warning("a finished stream's DALI pipeline is still referenced: %s", gc.get_referrers(ref())[:4])


def release_device_memory() -> None:
    """Hand the memory pooled by DALI and CuPy for a finished pipeline back to the device
    (both pools keep freed blocks for reuse; only unused blocks are released, so live
    streams are unaffected)."""
    try:
        from nvidia.dali import backend as dali_backend

        dali_backend.ReleaseUnusedMemory()
    except Exception:  # an old DALI without it, or no device: nothing to release
        log.debug("DALI ReleaseUnusedMemory failed", exc_info=True)
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:
        log.debug("CuPy pool release failed", exc_info=True)


def limits_message(limits: Limits) -> pb.Limits:
    """The limits a client is told (``InfoReply.limits``): every field of the ``Limits``
    message, read from the server config's field of the same name (the config may hold more,
    e.g. ``max_shards``)."""
    return pb.Limits(**{field.name: getattr(limits, field.name) for field in pb.Limits.DESCRIPTOR.fields})


def encode_response(batch: Any, plan: StreamPlan) -> tuple[bytes, int, dict[str, int]]:
    """A loader's batch → (serialized StreamResponse, images in it, bytes per part), in the
    layout of the plan's family payload. Nothing of the batch survives the call: the tensors
    view DALI's output buffers."""
    payload = plan.pipeline.payload
    if payload is Payload.MIXED:
        mixed = {name: host(getattr(batch, name)) for name in ("targets", "labels", "lam")}
        mixed["unmixed"] = host(batch.unmixed) if batch.unmixed is not None else None
        images = host(batch.images)
        message = encode_mixed_batch(images, mixed, batch.position, plan.wire)
    elif payload is Payload.CP2:
        fields = {name: host(getattr(batch, name)) for name in CP2_FIELDS}
        views = {name: host(value) for name, value in batch.views.items()} if batch.views is not None else None
        images = fields["image_q"]
        message = encode_cp2_batch(fields, views, batch.position, plan.wire)
    else:
        images, targets = batch_to_numpy(batch)
        message = encode_batch(images, targets, batch.position, plan.wire)
    return pb.StreamResponse(batch=message).SerializeToString(), int(images.shape[0]), batch_part_bytes(message)


def host(tensor: Any) -> np.ndarray:
    """A torch tensor (CPU or GPU) or array → a NumPy array on the host."""
    return tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)


def batch_to_numpy(batch: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """An instance Batch (torch tensors, CPU or GPU) → NumPy images and targets."""
    targets = [{k: (int(host(v)) if k == "image_id" else host(v)) for k, v in t.items()} for t in batch.targets]
    return host(batch.images), targets


class BatchServicer:
    """Implements StreamBatches and Info. Thread-safe; one instance per server."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        streams: StreamRegistry | None = None,
        metrics: ServerMetrics | None = None,
        loader_factory: LoaderFactory | None = None,
        backend: str | None = None,
    ) -> None:
        self.config = config
        self.streams = streams if streams is not None else StreamRegistry()
        self.metrics = metrics if metrics is not None else ServerMetrics(self.streams)
        self.loader_factory = loader_factory
        self.draining = threading.Event()
        self._backend = backend
        # server defaults are checked once, at start (copy-paste's always: its loader defaults
        # must fit the limits; another family's when the config sets defaults for it)
        for kind in PIPELINES.values():
            if kind is not COPY_PASTE and kind.name not in config.defaults:
                continue
            try:
                kind.to_options(getattr(pb.StreamRequest(), kind.params_field), config.defaults.get(kind.name, {}), config.limits)
            except (RequestError, TypeError, ValueError) as error:
                from .config import ConfigError

                raise ConfigError(f"[defaults.{kind.name}]: {getattr(error, 'message', error)}") from error

    # -- Info -----------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        if self._backend is None:
            from ..dali_pipes.core.backend import resolve_backend

            try:
                self._backend = resolve_backend(self.config.pipeline.loader_options()["device"])
            except Exception:
                self._backend = "unavailable"
        return self._backend

    def info(self) -> pb.InfoReply:
        return pb.InfoReply(
            version=VERSION,
            datasets=[pb.DatasetInfo(name=e.name, description=e.description) for e in self.config.datasets.values()],
            pipelines=[pb.PipelineInfo(name=k.name, description=k.description, defaults=k.defaults_json()) for k in PIPELINES.values()],
            limits=limits_message(self.config.limits),
            auth_required=self.config.token is not None,
            backend=self.backend,
        )

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoReply:
        return self.info()

    # -- StreamBatches ----------------------------------------------------------------------
    def _reject(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self.metrics.rejected(code.name)
        log.warning("stream rejected for %s: %s: %s", context.peer(), code.name, message)
        context.abort(code, message)

    def _reject_error(self, context: grpc.ServicerContext, error: BaseException, plan: StreamPlan | None) -> None:
        status: ErrorStatus = error_status(error, plan.dataset_of(error) if plan else None, where=f"stream from {context.peer()}")
        self._reject(context, status.code, status.message)

    def check_memory(self, plan: StreamPlan, loader: Any, state: StreamState | None = None) -> None:
        """RESOURCE_EXHAUSTED (as a RequestError) when the stream's estimated memory (the
        family's estimate, ``server/memory.py``) is over ``limits.max_stream_bytes``."""
        limits = self.config.limits
        depth = self.config.pipeline.prefetch_queue_depth + limits.prefetch_batches
        options = plan.options
        needed, what = plan.pipeline.memory(options, loader, depth)
        if state is not None:
            state.memory_estimate = needed
        if needed > limits.max_stream_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"max_stream_bytes: this request needs about {needed / 2**30:.2f} GiB ({needed} bytes: batch_size "
                f"{options['batch_size']} x {what} x {depth} batches in flight), over this server's limit of "
                f"{limits.max_stream_bytes} bytes; ask for fewer images per batch, a smaller output_size"
                + (" or a smaller jitter max_scale" if "jitter" in what else ""),
            )

    def build_loader(self, plan: StreamPlan) -> Any:
        """The plan's loader, resumed at its position (reads the dataset, builds no pipeline)."""
        options = {**plan.options, **self.config.pipeline.loader_options()}
        if plan.second_dataset is not None:
            options["second_dataset"] = plan.second_dataset
        factory = self.loader_factory or plan.pipeline.build_loader
        return factory(plan.dataset, options)

    def StreamBatches(self, request: pb.StreamRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            plan = validate_request(request, self.config)
        except Exception as error:  # RequestError; anything else is a server bug (INTERNAL)
            self._reject_error(context, error, None)
            return
        if self.draining.is_set():
            self._reject(context, grpc.StatusCode.UNAVAILABLE, "server: shutting down; connect to another replica or retry")
            return
        state = StreamState(
            dataset=plan.dataset.name,
            pipeline=plan.pipeline.name,
            peer=context.peer(),
            queue=queue.Queue(maxsize=self.config.limits.prefetch_batches),
            describe=plan.describe(),
        )
        limit = self.config.limits.max_streams
        if not self.streams.try_open(state, limit):
            self._reject(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"max_streams: this server already runs its limit of {limit} concurrent streams; retry later",
            )
            return
        handed_off = False
        loader = None
        try:
            context.add_callback(state.stop.set)
            loader, header = self._open(plan, state, context)
            self.metrics.streams_started.labels(state.dataset, state.pipeline).inc()
            log.info("stream %s opened by %s: %s", state.stream_id, state.peer, plan.describe())
            yield pb.StreamResponse(header=header).SerializeToString()
            if state.stop.is_set():
                return
            # the loader travels in a list the producer empties: Thread keeps its args until the
            # target returns, and the producer must be able to drop the pipeline before that
            producer = threading.Thread(
                target=self._produce, args=(state, [loader], plan), name=f"decal-{state.stream_id}", daemon=True
            )
            state.producer = producer
            producer.start()
            handed_off = True
            loader = None  # the producer owns it now
            yield from self._drain(state, context)
        finally:
            state.stop.set()
            if not handed_off:
                if loader is not None:
                    close_loader(loader)
                self.streams.close(state.stream_id)

    def open_loader(self, plan: StreamPlan, state: StreamState | None = None) -> Any:
        """Build the plan's loader and check its memory estimate. Raises DatasetError (the
        dataset), RequestError (parameters the loader refuses, memory, a backend this server
        cannot run), or anything else (a server bug)."""
        from ..dali_pipes.core.errors import DatasetError

        try:
            loader = self.build_loader(plan)
        except DatasetError:
            raise
        except (ValueError, TypeError) as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{plan.pipeline.params_field}: {error}") from error
        except RuntimeError as error:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"server: cannot run this pipeline here ({error})") from error
        self.check_memory(plan, loader, state)
        return loader

    def _open(self, plan: StreamPlan, state: StreamState, context: grpc.ServicerContext) -> tuple[Any, pb.StreamHeader]:
        try:
            loader = self.open_loader(plan, state)
        except Exception as error:
            self._reject_error(context, error, plan)
        if plan.resume is not None:
            r = plan.resume
            length = epoch_length(loader, r.epoch)
            if r.cursor > length:
                self._reject(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"resume.cursor: {r.cursor} is past the end of epoch {r.epoch} of shard {plan.options['shard_id']}/"
                    f"{plan.options['num_shards']} ({length} entries)",
                )
            try:
                loader.load_state_dict({"epoch": r.epoch, "cursor": r.cursor, "batch_index": r.batch_index})
            except ValueError as error:
                self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, f"resume: {error}")
        position = loader.state_dict()
        categories = getattr(loader, "categories", {}) or {}
        header = pb.StreamHeader(
            stream_id=state.stream_id,
            position=position_to_proto(position),
            epoch_length=epoch_length(loader, int(position["epoch"])),
            batches_in_epoch=len(loader),
            categories_json=json.dumps({str(k): v for k, v in categories.items()}, default=str),
            backend=str(getattr(loader, "backend", self.backend)),
            options_json=json.dumps(
                {**plan.options, **({"second_dataset": plan.second_dataset.name} if plan.second_dataset else {})}, default=str
            ),
        )
        return loader, header

    def _drain(self, state: StreamState, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Hand the producer's messages to gRPC until the stream ends."""
        while True:
            if self.draining.is_set():
                self._reject(context, grpc.StatusCode.UNAVAILABLE, "server: shutting down; reconnect and resume from your last position")
            try:
                item = state.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not context.is_active() or (state.producer is not None and not state.producer.is_alive() and state.queue.empty()):
                    if state.stop.is_set() or not context.is_active():
                        return
                    self._reject(context, grpc.StatusCode.INTERNAL, "server: the stream's producer ended unexpectedly")
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                self.metrics.stream_errors.labels(state.dataset, state.pipeline).inc()
                self._reject(context, item.code, item.message)
            payload, images, parts = item
            state.count_queued(-len(payload))
            yield payload
            if images:
                state.batches += 1
                state.images += images
                state.bytes += len(payload)
                self.metrics.served(state.dataset, state.pipeline, images, parts)

    # -- the producer thread --------------------------------------------------------------
    def _put(self, state: StreamState, item: Any) -> bool:
        size = len(item[0]) if isinstance(item, tuple) else 0
        while not state.stop.is_set():
            try:
                state.count_queued(size)  # before the put: the sender may take it at once
                state.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                state.count_queued(-size)
                continue
        return False

    def _produce(self, state: StreamState, holder: list[Any], plan: StreamPlan) -> None:
        loader = holder.pop()
        iterator = None
        limit = self.config.limits.max_message_bytes
        try:
            sent = 0
            while not state.stop.is_set():
                epoch = loader.epoch
                iterator = iter(loader)
                for batch in iterator:
                    if state.stop.is_set():
                        return
                    payload, count, parts = encode_response(batch, plan)
                    batch = None  # its tensors keep DALI's output buffers (and the pipeline) alive
                    if len(payload) > limit:
                        self._put(state, _Failure(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"max_message_bytes: a batch encoded to {len(payload)} bytes, over this server's limit of {limit}; "
                            "ask for fewer images per batch or wire.image_codec=IMAGE_CODEC_JPEG",
                        ))  # fmt: skip
                        return
                    if not self._put(state, (payload, count, parts)):
                        return
                    sent += 1
                    if plan.max_batches and sent >= plan.max_batches:
                        self._put(state, _END)
                        return
                iterator = None
                following = loader.state_dict()
                end = pb.EpochEnd(
                    epoch=epoch,
                    next=position_to_proto(following),
                    next_epoch_length=epoch_length(loader, int(following["epoch"])),
                    next_batches_in_epoch=len(loader),
                )
                if not self._put(state, (pb.StreamResponse(epoch_end=end).SerializeToString(), 0, {})):
                    return
        except Exception as error:  # DatasetError: FAILED_PRECONDITION; anything else INTERNAL with an id
            status = error_status(error, plan.dataset_of(error), where=f"stream {state.stream_id}")
            self._put(state, _Failure(status.code, status.message))
        finally:
            if iterator is not None and hasattr(iterator, "close"):
                iterator.close()
            on_gpu = getattr(loader, "backend", None) == "gpu"
            pipeline = weak_pipeline(loader)
            close_loader(loader)  # the pipeline, its worker processes and shared memory: now
            iterator = loader = batch = None  # noqa: F841 - drop the pipeline before leaving the registry
            collect_pipeline(pipeline)
            if on_gpu:
                release_device_memory()
            self.streams.close(state.stream_id)
            log.info("stream %s closed after %d batches", state.stream_id, state.batches)


def _pass_through(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_to_server(servicer: BatchServicer, server: grpc.Server) -> None:
    """Register ``servicer`` (StreamBatches yields pre-serialized bytes)."""
    handlers = {
        "StreamBatches": grpc.unary_stream_rpc_method_handler(
            servicer.StreamBatches, request_deserializer=pb.StreamRequest.FromString, response_serializer=_pass_through
        ),
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info, request_deserializer=pb.InfoRequest.FromString, response_serializer=pb.InfoReply.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
