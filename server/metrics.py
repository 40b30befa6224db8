"""Prometheus metrics of one server (its own ``CollectorRegistry``, so several servers, e.g.
in tests, never collide in the global registry).

Counters (labels ``dataset``, ``pipeline``):
  ``decal_streams_started_total``, ``decal_batches_served_total``,
  ``decal_images_served_total``, ``decal_bytes_served_total`` (plus ``part``: images, masks,
  other), ``decal_streams_rejected_total`` (label ``code``), ``decal_stream_errors_total``.
Gauges computed at scrape time from the stream registry (never stale):
  ``decal_active_streams``, ``decal_stream_queue_depth`` and ``decal_stream_queue_bytes``
  (serialized batches waiting; labels ``stream_id``, ``dataset``),
  ``decal_stream_memory_estimate_bytes`` (the admission estimate, same labels),
  ``decal_resident_memory_bytes`` (the server process's RSS, from /proc),
  ``decal_python_threads``, ``decal_gpu_memory_bytes`` (labels ``device``, ``kind`` = used,
  total; only when a CUDA device is usable). Process metrics (open fds, memory, CPU) come
  from prometheus_client's process collector.
"""

from __future__ import annotations

import os
import threading
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from .streams import StreamRegistry

__all__ = ["ServerMetrics"]


class _LiveCollector:
    """Gauges read from the stream registry and the device at scrape time."""

    def __init__(self, streams: StreamRegistry) -> None:
        self._streams = streams

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        states = self._streams.states()
        active = GaugeMetricFamily("decal_active_streams", "Streams holding a pipeline now")
        active.add_metric([], len(states))
        yield active
        depth = GaugeMetricFamily(
            "decal_stream_queue_depth", "Encoded batches waiting in a stream's prefetch queue", labels=["stream_id", "dataset"]
        )
        for state in states:
            depth.add_metric([state.stream_id, state.dataset], state.queue.qsize())
        yield depth
        queued = GaugeMetricFamily(
            "decal_stream_queue_bytes", "Serialized bytes waiting in a stream's prefetch queue", labels=["stream_id", "dataset"]
        )
        estimate = GaugeMetricFamily(
            "decal_stream_memory_estimate_bytes", "A stream's memory estimate at admission", labels=["stream_id", "dataset"]
        )
        for state in states:
            queued.add_metric([state.stream_id, state.dataset], state.queued_bytes)
            estimate.add_metric([state.stream_id, state.dataset], state.memory_estimate)
        yield queued
        yield estimate
        resident = _resident_bytes()
        if resident is not None:
            rss = GaugeMetricFamily("decal_resident_memory_bytes", "Resident memory of the server process")
            rss.add_metric([], resident)
            yield rss
        threads = GaugeMetricFamily("decal_python_threads", "Python threads alive in the server process")
        threads.add_metric([], threading.active_count())
        yield threads
        memory = _gpu_memory()
        if memory:
            gauge = GaugeMetricFamily("decal_gpu_memory_bytes", "GPU memory (device-wide)", labels=["device", "kind"])
            for device, (used, total) in memory.items():
                gauge.add_metric([str(device), "used"], used)
                gauge.add_metric([str(device), "total"], total)
            yield gauge


def _resident_bytes() -> int | None:
    """Resident set size of this process in bytes (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _gpu_memory() -> dict[int, tuple[int, int]]:
    """{device: (used, total) bytes} for each CUDA device, {} without one."""
    from ..dali_pipes.core.backend import gpu_available

    if not gpu_available():
        return {}
    try:
        import cupy

        result = {}
        for device in range(cupy.cuda.runtime.getDeviceCount()):
            with cupy.cuda.Device(device):
                free, total = cupy.cuda.runtime.memGetInfo()
            result[device] = (int(total - free), int(total))
        return result
    except Exception:  # a driver hiccup must not break the scrape
        return {}


class ServerMetrics:
    """The counters the service updates, and the registry /metrics renders."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["dataset", "pipeline"]
        self.streams_started = Counter("decal_streams_started", "Streams admitted", labels, registry=self.registry)
        self.streams_rejected = Counter("decal_streams_rejected", "Requests refused, by gRPC status", ["code"], registry=self.registry)
        self.stream_errors = Counter("decal_stream_errors", "Streams ended by a server-side error", labels, registry=self.registry)
        self.batches = Counter("decal_batches_served", "Batches sent", labels, registry=self.registry)
        self.images = Counter("decal_images_served", "Images sent", labels, registry=self.registry)
        self.bytes = Counter("decal_bytes_served", "Serialized batch bytes sent", labels + ["part"], registry=self.registry)
        self.registry.register(_LiveCollector(streams))
        ProcessCollector(registry=self.registry)

    def rejected(self, code_name: str) -> None:
        self.streams_rejected.labels(code=code_name).inc()

    def served(self, dataset: str, pipeline: str, images: int, part_bytes: dict[str, int]) -> None:
        self.batches.labels(dataset, pipeline).inc()
        self.images.labels(dataset, pipeline).inc(images)
        for part in ("images", "masks", "other"):
            self.bytes.labels(dataset, pipeline, part).inc(part_bytes.get(part, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
