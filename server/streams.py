"""The registry of live streams: one entry per stream from admission until its pipeline is
released (the producer thread has finished and dropped the loader).

It is the single source of truth for "how many pipelines does this server hold": the
``max_streams`` admission check, the ``decal_active_streams`` and per-stream queue-depth
metrics, ``/readyz`` and the leak tests all read it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamState", "StreamRegistry"]

_ids = itertools.count(1)


@dataclass
class StreamState:
    """One stream's bookkeeping."""

    dataset: str
    pipeline: str
    peer: str
    queue: "queue.Queue[Any]"
    describe: dict[str, Any] = field(default_factory=dict)
    stream_id: str = field(default_factory=lambda: f"s{next(_ids)}")
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    producer: threading.Thread | None = None
    batches: int = 0
    images: int = 0
    bytes: int = 0
    #: serialized bytes waiting in ``queue`` now (producer adds, sender subtracts)
    queued_bytes: int = 0
    #: the admission estimate of this stream's memory (decal.server.memory), bytes
    memory_estimate: int = 0
    _bytes_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_queued(self, delta: int) -> None:
        """Add ``delta`` bytes to :attr:`queued_bytes` (thread-safe)."""
        with self._bytes_lock:
            self.queued_bytes += delta

    def snapshot(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "dataset": self.dataset,
            "pipeline": self.pipeline,
            "peer": self.peer,
            "age_s": round(time.monotonic() - self.started, 3),
            "queue_depth": self.queue.qsize(),
            "queue_bytes": self.queued_bytes,
            "memory_estimate_bytes": self.memory_estimate,
            "batches": self.batches,
            "images": self.images,
            "bytes": self.bytes,
            **self.describe,
        }


class StreamRegistry:
    """Thread-safe set of live streams with an admission limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, StreamState] = {}
        self._empty = threading.Condition(self._lock)

    def try_open(self, state: StreamState, limit: int) -> bool:
        """Admit ``state`` unless ``limit`` streams are live."""
        with self._lock:
            if len(self._streams) >= limit:
                return False
            self._streams[state.stream_id] = state
            return True

    def close(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)
            if not self._streams:
                self._empty.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._streams)

    def states(self) -> list[StreamState]:
        with self._lock:
            return list(self._streams.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.states()]

    def stop_all(self) -> None:
        for state in self.states():
            state.stop.set()

    def wait_empty(self, timeout: float) -> bool:
        """Block until no stream is live (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._streams:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._empty.wait(left)
            return True
