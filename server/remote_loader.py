"""``RemoteLoader``: the local iterator's twin, fed by a decal server over gRPC.

::

    loader = RemoteLoader("gpu-node:50051", "coco-train", batch_size=8, seed=0,
                          shard_id=rank, num_shards=world, output_size=1024,
                          device=f"cuda:{local_rank}", image_encoding="raw")
    for epoch in range(epochs):
        for batch in loader:          # one epoch of decal.dali_pipes.core.batch.Batch
            ...
        torch.save({"loader": loader.state_dict(), ...}, ckpt)

It yields what the local loader of its ``pipeline`` yields under the same seed, shard and
options: :class:`~decal.dali_pipes.core.batch.Batch` for ``"copy-paste"`` (``CopyPasteLoader``),
``"balanced-copy-paste"``, ``"self-training"`` and ``"mosaic"``;
:class:`~decal.dali_pipes.folder.batches.ClassificationBatch` for ``"cutmix"``;
:class:`~decal.dali_pipes.folder.batches.CP2Batch` for ``"cp2"`` (bit-exact with lossless
wire options; ``image_encoding="jpeg"`` changes pixels only), with the same epoch semantics:
iterating yields one epoch; ``state_dict()`` / ``load_state_dict()`` continue exactly after
the last delivered batch.

Prefetch: a reader thread pulls the stream, decodes (zlib, bit unpacking, JPEG), pins and
moves to ``device`` ahead of the consumer, ``prefetch`` batches deep.

Failures: only transient ones are retried: UNAVAILABLE (connection lost, server restarted
or draining), RESOURCE_EXHAUSTED for ``max_streams`` (a full server may have room soon) and
a connection cut under a call (reported as UNKNOWN/INTERNAL with a transport message such as
``RST_STREAM`` or ``Socket closed``). The reader then reconnects with exponential backoff and
jitter, on a fresh channel, and asks for the stream from the LAST RECEIVED position. Batches
are deterministic functions of (seed, shard, position), so the epoch goes on with no sample
lost or repeated. The failure count is reset only by progress (a new batch or epoch end),
never by a stream header, so a stream that fails deterministically right after its header
gives up after ``max_retries`` attempts. Every other status (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED, INTERNAL, RESOURCE_EXHAUSTED for a
size or memory limit, …) raises :class:`RemoteLoaderError` at once with the server's message.
"""

from __future__ import annotations

import atexit
import json
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import grpc
import numpy as np
import torch

from ..dali_pipes.core.backend import parse_device
from ..dali_pipes.core.batch import Batch
from ..dali_pipes.core.epoch_source import LoaderPosition
from ..dali_pipes.folder.batches import ClassificationBatch, CP2Batch
from ..dali_pipes.core.option_schema import Option, served
from ..proto import decal_pb2 as pb
from .auth import bearer_metadata
from .params import NONE_FIELD, can_be_none, is_pair
from .pipelines import COPY_PASTE, PIPELINES, PipelineKind
from .wire import CP2_FIELDS, IMAGE_CODECS, INFO_METHOD, MASK_CODECS, STREAM_METHOD, WireFormatError, decode_batch

__all__ = ["RemoteLoader", "RemoteLoaderError", "is_transient", "forwarded_options"]

#: What gRPC reports when the connection under a call is cut (with UNKNOWN or INTERNAL).
_CUT_CONNECTION = ("rst_stream", "socket closed", "connection reset", "stream removed", "goaway", "broken pipe", "connection aborted")


def is_transient(code: grpc.StatusCode | None, details: str) -> bool:
    """Whether a stream that ended with ``code``/``details`` may succeed if retried: the reader
    then reconnects and resumes. UNAVAILABLE; RESOURCE_EXHAUSTED only for ``max_streams`` (a
    server full now may have room soon; a batch over the message limit, or a request over the
    memory limit, would be over it again); UNKNOWN or INTERNAL when the connection was cut."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return details.startswith("max_streams:")
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        lowered = details.lower()
        return any(mark in lowered for mark in _CUT_CONNECTION)
    return False


def forwarded_options(pipeline: str) -> tuple[str, ...]:
    """The parameters a RemoteLoader of ``pipeline`` forwards: the served options of the
    family's schema (``dali_pipes/<family>_options.py``; fields of its params message, jitter
    as jitter_preset or jitter_range, pairs as a Range)."""
    return tuple(option.name for option in served(PIPELINES[pipeline].schema))


#: Copy-paste's forwarded parameters (:func:`forwarded_options` of ``"copy-paste"``).
PIPELINE_OPTIONS: tuple[str, ...] = forwarded_options(COPY_PASTE.name)


class RemoteLoaderError(RuntimeError):
    """The stream failed for good: ``code`` (a grpc.StatusCode or None) and ``details``."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class _EpochEnd:
    epoch: int
    next: LoaderPosition


@dataclass(frozen=True)
class _StreamEnd:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def _status(error: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return code, details or ""


@dataclass
class _Spec:
    """What a stream needs to (re)connect and convert; shared by a loader and its reader."""

    address: str
    credentials: grpc.ChannelCredentials | None
    channel_options: list[tuple[str, Any]]
    metadata: tuple[tuple[str, str], ...]
    template: pb.StreamRequest
    device: torch.device
    pin_memory: bool
    prefetch: int
    max_retries: int
    backoff: tuple[float, float]
    connect_timeout: float

    def make_channel(self) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.address, self.credentials, options=self.channel_options)
        return grpc.insecure_channel(self.address, options=self.channel_options)

    def request(self, position: LoaderPosition | None) -> pb.StreamRequest:
        request = pb.StreamRequest()
        request.CopyFrom(self.template)
        if position is not None:
            request.resume.CopyFrom(pb.Position(epoch=position.epoch, cursor=position.cursor, batch_index=position.batch_index))
        return request

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A decoded array → a torch tensor on ``device`` (pinned first when asked)."""
        t = torch.from_numpy(array)
        if self.pin_memory:
            t = t.pin_memory()
        if self.device.type != "cpu":
            t = t.to(self.device, non_blocking=True)
        return t

    def convert(self, decoded: Any) -> Any:
        """DecodedBatch (NumPy) → the local loader's batch type, on ``device``."""
        p = decoded.position
        position = LoaderPosition(p.epoch, p.cursor, p.batch_index)
        tensor = self.tensor
        if decoded.mixed is not None:  # CutMix: labels and lam stay on the host, as locally
            mixed = decoded.mixed
            unmixed = mixed.get("unmixed")
            return ClassificationBatch(
                images=tensor(decoded.images),
                targets=tensor(mixed["targets"]),
                labels=torch.from_numpy(mixed["labels"]),
                lam=torch.from_numpy(mixed["lam"]),
                position=position,
                unmixed=tensor(unmixed) if unmixed is not None else None,
            )
        if decoded.cp2 is not None:
            views = {name: tensor(value) for name, value in sorted(decoded.views.items())} or None
            return CP2Batch(**{name: tensor(decoded.cp2[name]) for name in CP2_FIELDS}, position=position, views=views)
        targets = []
        for target in decoded.targets:
            entry = {name: tensor(value) for name, value in target.items() if name != "image_id"}
            entry["image_id"] = torch.tensor(int(target["image_id"]), dtype=torch.int64, device=self.device)
            targets.append(entry)
        return Batch(images=tensor(decoded.images), targets=targets, position=position)


def _params_message(kind: PipelineKind, options: Mapping[str, Any], second_dataset: str | None = None) -> Any:
    """The ``kind``'s params message holding ``options`` (served option names only)."""
    params = getattr(pb.StreamRequest(), kind.params_field)
    params.SetInParent()
    schema = {option.name: option for option in served(kind.schema)}
    for name, value in options.items():
        option: Option = schema[name]
        holder = kind.holder(params, name)
        if value is None:
            if not can_be_none(option):
                raise TypeError(
                    f"RemoteLoader option {name}=None: {name} cannot be None for pipeline {kind.name!r} (leave it out "
                    f"for the server's default, {option.default!r})"
                )
            getattr(holder, NONE_FIELD).append(name)  # None itself, not the server's default
            continue
        try:
            if name == "jitter":
                if isinstance(value, str):
                    holder.jitter_preset = value
                else:
                    low, high = value
                    holder.jitter_range.min_scale, holder.jitter_range.max_scale = float(low), float(high)
            elif is_pair(option):
                low, high = value
                getattr(holder, name).min, getattr(holder, name).max = float(low), float(high)
            else:
                setattr(holder, name, value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"RemoteLoader option {name}={value!r}: {error}") from None
    if kind.second_dataset:
        if not second_dataset:
            raise TypeError(f"RemoteLoader(pipeline={kind.name!r}) needs second_dataset: a dataset name registered on the server")
        params.second_dataset = second_dataset
    elif second_dataset is not None:
        raise TypeError(f"RemoteLoader: second_dataset is an option of the self-training pipeline, not of {kind.name!r}")
    return params


def _tls_credentials(tls: bool | str, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    if not tls and not cert:
        return None
    roots = open(tls, "rb").read() if isinstance(tls, str) else None
    chain = open(cert, "rb").read() if cert else None
    private = open(key, "rb").read() if key else None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=private, certificate_chain=chain)


#: Readers still running; closed at interpreter exit (a gRPC call left running in a daemon
#: thread while the interpreter finalizes can abort or hang the process).
_LIVE_READERS: "weakref.WeakSet[_Reader]" = weakref.WeakSet()


@atexit.register
def _close_live_readers() -> None:
    for reader in list(_LIVE_READERS):
        try:
            reader.close()
        except Exception:
            pass


class _Reader:
    """The reader thread of one logical stream (reconnects included)."""

    def __init__(self, spec: "_Spec", start: LoaderPosition | None) -> None:
        # The reader holds only the spec, never the RemoteLoader, so that an abandoned loader
        # is collected (its __del__ closes the stream) while this thread runs.
        self._make_channel = spec.make_channel
        self._request = spec.request
        self._metadata = spec.metadata
        self._convert = spec.convert
        self._retries = spec.max_retries
        self._backoff = spec.backoff
        self._connect_timeout = spec.connect_timeout
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, spec.prefetch))
        self.header: pb.StreamHeader | None = None
        self.header_event = threading.Event()
        self.epoch_info: dict[int, tuple[int, int]] = {}  # epoch -> (length, batches)
        self.received = start
        self.reconnects = 0
        self.bytes_received = 0
        self._closed = threading.Event()
        self._call: Any = None
        self._channel: Any = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="decal-remote-reader", daemon=True)
        _LIVE_READERS.add(self)
        self.thread.start()

    # -- consumer side ----------------------------------------------------------------------
    def get(self) -> Any:
        while True:
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    return _Failed(RemoteLoaderError("remote loader: the reader thread stopped"))

    def wait_header(self) -> pb.StreamHeader:
        while not self.header_event.wait(0.1):
            if not self.thread.is_alive():
                # the failure (if any) is the last queue item
                items = []
                while not self.queue.empty():
                    items.append(self.queue.get_nowait())
                for item in items:
                    if isinstance(item, _Failed):
                        raise item.error
                raise RemoteLoaderError("remote loader: the stream ended before its header")
        assert self.header is not None
        return self.header

    def close(self) -> None:
        _LIVE_READERS.discard(self)
        self._closed.set()
        with self._lock:
            call, channel = self._call, self._channel
        if call is not None:
            call.cancel()
        try:  # unblock a put()
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        self.thread.join(timeout=10)
        if channel is not None:
            channel.close()

    # -- the thread -------------------------------------------------------------------------
    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _sleep(self, attempt: int) -> None:
        base, cap = self._backoff
        delay = min(cap, base * (2 ** (attempt - 1)))
        self._closed.wait(delay * (0.5 + random.random() / 2))

    def _connect(self, channel: grpc.Channel) -> bool:
        """Wait for ``channel`` to be ready, at most connect_timeout, interruptible by close()."""
        future = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + self._connect_timeout
        try:
            while not self._closed.is_set():
                try:
                    future.result(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                    return True
                except grpc.FutureTimeoutError:
                    if time.monotonic() >= deadline:
                        return False
            return False
        finally:
            future.cancel()

    def _run(self) -> None:
        failures = 0
        last_error: tuple[grpc.StatusCode | None, str] = (None, "")
        while not self._closed.is_set():
            if failures > self._retries:
                code, details = last_error
                self._put(_Failed(RemoteLoaderError(
                    f"remote loader: gave up after {failures} failed attempts; last: {code.name if code else 'error'}: {details}",
                    code, details,
                )))  # fmt: skip
                return
            channel = self._make_channel()
            with self._lock:
                old, self._channel = self._channel, channel
            if old is not None:
                old.close()
            if not self._connect(channel):
                if self._closed.is_set():
                    return
                failures += 1
                last_error = (grpc.StatusCode.UNAVAILABLE, f"could not connect within {self._connect_timeout} s")
                self._sleep(failures)
                continue
            call = channel.unary_stream(
                STREAM_METHOD, request_serializer=pb.StreamRequest.SerializeToString, response_deserializer=pb.StreamResponse.FromString
            )(self._request(self.received), metadata=self._metadata)
            with self._lock:
                self._call = call
            if self._closed.is_set():
                call.cancel()
                return
            try:
                for response in call:
                    if response.WhichOneof("kind") in ("batch", "epoch_end"):
                        failures = 0  # progress past the last delivered position (never the header)
                    if not self._handle(response):
                        return
                self._put(_StreamEnd())  # OK status: the server sent max_batches
                return
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                code, details = _status(error)
                if not is_transient(code, details):
                    self._put(_Failed(RemoteLoaderError(
                        f"remote loader: server refused the stream: {code.name if code else '?'}: {details}", code, details
                    )))  # fmt: skip
                    return
                failures += 1
                self.reconnects += 1
                last_error = (code, details)
                self._sleep(failures)
            except WireFormatError as error:
                self._put(_Failed(RemoteLoaderError(f"remote loader: undecodable batch: {error}")))
                return
            except BaseException as error:  # conversion failures (e.g. CUDA) reach the consumer
                if not self._closed.is_set():
                    self._put(_Failed(error))
                return
            finally:
                with self._lock:
                    self._call = None
                call.cancel()

    def _handle(self, response: pb.StreamResponse) -> bool:
        kind = response.WhichOneof("kind")
        if kind == "header":
            header = response.header
            self.epoch_info[header.position.epoch] = (header.epoch_length, header.batches_in_epoch)
            self.header = header
            self.header_event.set()
            return True
        if kind == "batch":
            message = response.batch
            self.bytes_received += message.ByteSize()
            batch = self._convert(decode_batch(message))
            self.received = batch.position
            return self._put(batch)
        if kind == "epoch_end":
            end = response.epoch_end
            following = LoaderPosition(end.next.epoch, end.next.cursor, end.next.batch_index)
            self.epoch_info[following.epoch] = (end.next_epoch_length, end.next_batches_in_epoch)
            self.received = following
            return self._put(_EpochEnd(int(end.epoch), following))
        return True


class RemoteLoader:
    """Iterate over augmented batches streamed by a decal server.

    Args:
        address: ``host:port`` of the server's gRPC port.
        dataset: a dataset name registered on the server (see :meth:`info`).
        batch_size, seed, shard_id, num_shards: as for the local loader.
        pipeline: the pipeline kind: ``"copy-paste"``, ``"balanced-copy-paste"``,
            ``"self-training"``, ``"mosaic"`` (COCO datasets), ``"cutmix"`` or ``"cp2"``
            (image-folder datasets); see :func:`forwarded_options` for each one's parameters.
        second_dataset: ``"self-training"`` only: the registered dataset of the second set.
        token: bearer token if the server needs one.
        image_encoding: ``"raw"`` (lossless), ``"zlib"`` (lossless, smaller with padding) or
            ``"jpeg"`` (lossy; for slow links).
        mask_encoding: ``"bitpack+zlib"`` (default), ``"bitpack"`` or ``"raw"``; all lossless.
        jpeg_quality, zlib_level: 0 = the server's default (90, 1).
        device: where the batches' tensors go, in decal's device vocabulary (``"cpu"``,
            ``"gpu"``/``"cuda"`` = CUDA device 0, ``"cuda:N"``, ``"auto"`` = CUDA when torch sees
            it), or a ``torch.device``; CUDA tensors are pinned then copied, in the reader thread.
        pin_memory: pin host tensors (default: True when ``device`` is CUDA).
        prefetch: batches decoded ahead.
        max_retries: consecutive failed (re)connection attempts before giving up.
        backoff: (first delay, max delay) seconds of the exponential backoff.
        connect_timeout: seconds to wait for a connection per attempt.
        tls: False, True (system roots), or a path to a PEM root certificate.
        tls_client_cert, tls_client_key: PEM paths for mTLS.
        channel_options: extra gRPC channel arguments.
        **pipeline_options: pipeline parameters (``output_size``, ``jitter``, ``flip_prob``,
            ...: the served fields of the family's config, :func:`forwarded_options`); unset
            ones take the server's defaults.
    """

    def __init__(
        self,
        address: str,
        dataset: str,
        *,
        batch_size: int = 8,
        seed: int = 0,
        shard_id: int = 0,
        num_shards: int = 1,
        pipeline: str = "copy-paste",
        second_dataset: str | None = None,
        token: str | None = None,
        image_encoding: str = "raw",
        mask_encoding: str = "bitpack+zlib",
        jpeg_quality: int = 0,
        zlib_level: int = 0,
        device: str | torch.device = "cpu",
        pin_memory: bool | None = None,
        prefetch: int = 2,
        max_retries: int = 8,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float = 30.0,
        tls: bool | str = False,
        tls_client_cert: str | None = None,
        tls_client_key: str | None = None,
        channel_options: Mapping[str, Any] | None = None,
        **pipeline_options: Any,
    ) -> None:
        kind = PIPELINES.get(pipeline)
        if kind is None:
            raise ValueError(f"pipeline: expected one of {', '.join(PIPELINES)}, got {pipeline!r}")
        allowed = forwarded_options(pipeline)
        unknown = set(pipeline_options) - set(allowed)
        if unknown:
            raise TypeError(f"RemoteLoader got unknown options {sorted(unknown)} (pipeline options of {pipeline!r}: {', '.join(allowed)})")
        if image_encoding not in IMAGE_CODECS:
            raise ValueError(f"image_encoding: expected one of {sorted(IMAGE_CODECS)}, got {image_encoding!r}")
        if mask_encoding not in MASK_CODECS:
            raise ValueError(f"mask_encoding: expected one of {sorted(MASK_CODECS)}, got {mask_encoding!r}")
        self.address = address
        self.dataset = dataset
        self.pipeline = pipeline
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shard_id = int(shard_id)
        self.num_shards = int(num_shards)
        self.device = device if isinstance(device, torch.device) else torch.device(parse_device(device).torch_device())
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.prefetch = int(prefetch)
        self.max_retries = int(max_retries)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.connect_timeout = float(connect_timeout)
        self.pipeline_options = dict(pipeline_options)
        wire = pb.WireOptions(
            image_codec=IMAGE_CODECS[image_encoding], mask_codec=MASK_CODECS[mask_encoding], jpeg_quality=jpeg_quality, zlib_level=zlib_level
        )
        template = pb.StreamRequest(
            dataset=dataset, pipeline=pipeline, batch_size=self.batch_size, seed=self.seed,
            shard_id=self.shard_id, num_shards=self.num_shards, wire=wire,
        )  # fmt: skip
        getattr(template, kind.params_field).CopyFrom(_params_message(kind, pipeline_options, second_dataset))
        self._spec = _Spec(
            address=address,
            credentials=_tls_credentials(tls, tls_client_cert, tls_client_key),
            channel_options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 5_000),
                ("grpc.enable_retries", 0),
                *dict(channel_options or {}).items(),
            ],
            metadata=bearer_metadata(token),
            template=template,
            device=self.device,
            pin_memory=self.pin_memory,
            prefetch=self.prefetch,
            max_retries=self.max_retries,
            backoff=self.backoff,
            connect_timeout=self.connect_timeout,
        )
        self._reader: _Reader | None = None
        self._is_closed = False
        self._delivered = LoaderPosition()
        self._start = LoaderPosition()
        self._epoch = 0
        self._normalize_pending = True
        self._pending: Any = None
        self._epoch_info: dict[int, tuple[int, int]] = {}
        self._drop_last: bool | None = pipeline_options.get("drop_last")
        self._categories: dict[int, dict] | None = None

    # -- the loader API ---------------------------------------------------------------------
    def _ensure_reader(self) -> _Reader:
        if self._is_closed:
            raise RuntimeError("RemoteLoader is closed; make a new loader (load_state_dict resumes it)")
        if self._reader is None:
            self._reader = _Reader(self._spec, self._start)
        return self._reader

    def _sync_header(self) -> None:
        reader = self._ensure_reader()
        header = reader.wait_header()
        self._epoch_info.update(reader.epoch_info)
        if self._categories is None:
            self._categories = {int(k): v for k, v in json.loads(header.categories_json or "{}").items()}
        if self._drop_last is None:
            self._drop_last = bool(json.loads(header.options_json or "{}").get("drop_last", False))
        if self._normalize_pending:
            self._normalize_pending = False
            normalized = LoaderPosition(header.position.epoch, header.position.cursor, header.position.batch_index)
            self._epoch = normalized.epoch
            if normalized.epoch != self._delivered.epoch:
                self._delivered = normalized

    def __iter__(self) -> Iterator[Any]:
        self._sync_header()
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        reader = self._reader
        assert reader is not None
        epoch = self._epoch
        while True:
            if self._is_closed:
                raise RuntimeError("RemoteLoader is closed; make a new loader (load_state_dict resumes it)")
            item, self._pending = (self._pending, None) if self._pending is not None else (reader.get(), None)
            if isinstance(item, _Failed):
                self._drop_stream()
                raise item.error
            if isinstance(item, _StreamEnd):
                self._drop_stream()
                return
            if isinstance(item, _EpochEnd):
                if item.epoch < epoch:
                    continue  # a repeated marker (cannot happen with one server, harmless)
                self._finish_epoch(item.epoch)
                return
            if item.position.epoch > epoch:  # the marker was lost in a reconnect
                self._pending = item
                self._finish_epoch(epoch)
                return
            self._delivered = item.position
            yield item

    def _finish_epoch(self, epoch: int) -> None:
        self._epoch = epoch + 1
        self._delivered = LoaderPosition(epoch + 1, 0, 0)
        if self._reader is not None:
            self._epoch_info.update(self._reader.epoch_info)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch

    def __len__(self) -> int:
        """Batches in the coming epoch (asks the server: starts the stream if needed)."""
        self._sync_header()
        if self._reader is not None:
            self._epoch_info.update(self._reader.epoch_info)
        if self._epoch in self._epoch_info:
            return int(self._epoch_info[self._epoch][1])
        raise TypeError(f"RemoteLoader: the length of epoch {self._epoch} is not known yet")

    def state_dict(self) -> dict[str, Any]:
        """The position after the last delivered batch, plus the seed and shard it holds for."""
        position = self._delivered
        info = self._epoch_info.get(position.epoch) or (self._reader.epoch_info.get(position.epoch) if self._reader else None)
        if info is not None and position.cursor > 0:
            remaining = info[0] - position.cursor
            if remaining <= 0 or (self._drop_last and remaining < self.batch_size):
                position = LoaderPosition(position.epoch + 1, 0, 0)
        return {**position.to_dict(), "seed": self.seed, "shard_id": self.shard_id, "num_shards": self.num_shards}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue after the batch at which ``state`` was saved (same seed and shard)."""
        for key in ("seed", "shard_id", "num_shards"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(f"loader state: field '{key}' is {state[key]} but this loader has {getattr(self, key)}")
        position = LoaderPosition.from_dict(dict(state))
        self._drop_stream()
        self._start = self._delivered = position
        self._epoch = position.epoch
        self._normalize_pending = True
        self._pending = None

    @property
    def categories(self) -> dict[int, dict]:
        """Category id → json entry (from the server)."""
        if self._categories is None:
            self._sync_header()
        return self._categories or {}

    @property
    def stats(self) -> dict[str, Any]:
        """The client's counters: ``reconnects`` of the current stream and ``bytes_received``.
        The server's skip and drop counts of the dataset do not travel on the wire (see
        ARCHITECTURE.md, "Known gaps"); the server logs them."""
        return {"reconnects": self.reconnects, "bytes_received": self.bytes_received}

    @property
    def reconnects(self) -> int:
        """Reconnections of the current stream (diagnostics)."""
        return self._reader.reconnects if self._reader else 0

    @property
    def bytes_received(self) -> int:
        return self._reader.bytes_received if self._reader else 0

    def info(self, timeout: float = 10.0) -> pb.InfoReply:
        """The server's Info (datasets, pipelines, limits, version)."""
        channel = self._spec.make_channel()
        try:
            method = channel.unary_unary(INFO_METHOD, request_serializer=pb.InfoRequest.SerializeToString, response_deserializer=pb.InfoReply.FromString)
            return method(pb.InfoRequest(), metadata=self._spec.metadata, timeout=timeout)
        finally:
            channel.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._is_closed

    def close(self) -> None:
        """Cancel the stream and stop the reader thread (the server then closes its loader).
        Iterating afterwards raises RuntimeError, as for a closed local loader; a new loader
        with ``load_state_dict(state_dict())`` continues. Calling it again does nothing."""
        self._is_closed = True
        self._drop_stream()

    def _drop_stream(self) -> None:
        """Cancel the stream and stop the reader; the next iteration reconnects from the last
        delivered position (an epoch's end, a resume, a failure)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
            self._start = self._delivered
            self._normalize_pending = True
            self._pending = None

    def __enter__(self) -> "RemoteLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._drop_stream()
        except Exception:
            pass
