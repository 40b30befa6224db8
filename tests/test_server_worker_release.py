"""A stream whose loader runs its source in worker processes (``source_workers``) ends them
when it ends: the server closes the loader (``server/stream_service.py``), so the workers and
their shared memory are gone within a bounded wait, without a garbage collection."""

from __future__ import annotations

import multiprocessing
from typing import Any, Mapping

import pytest

from decal.server.config import DatasetEntry
from decal.server.pipelines import COPY_PASTE

from coco_factory import write_coco_dataset
from polling import wait_until
from server_helpers import make_config, open_stream, request, running_server
from worker_resources import shm_mappings


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=8, seed=5)


class WorkersLoaders:
    """A loader factory: the real copy-paste loader, its source in two worker processes. It
    keeps the loaders it made, as any other holder of a loader might: what frees the workers
    is then the server closing the loader, not the loader's last reference going away."""

    def __init__(self) -> None:
        self.made: list[Any] = []

    def __call__(self, entry: DatasetEntry, options: Mapping[str, Any]) -> Any:
        loader = COPY_PASTE.build_loader(entry, {**options, "source_workers": 2})
        self.made.append(loader)
        return loader


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


@pytest.mark.parametrize("end", ["max_batches", "cancel"])
def test_a_finished_stream_ends_its_loaders_workers(synth, end, no_gc) -> None:
    before_children, before_shm = children(), shm_mappings()
    factory = WorkersLoaders()
    try:
        with running_server(make_config({"synth": synth}), loader_factory=factory) as server:
            call = open_stream(server.grpc_address, request("synth", batch_size=2, max_batches=2 if end == "max_batches" else 0))
            kinds = [next(call).WhichOneof("kind"), next(call).WhichOneof("kind")]
            assert kinds == ["header", "batch"]
            workers = children() - before_children
            assert len(workers) == 2, "the stream's loader runs two source workers"
            if end == "cancel":
                call.cancel()
            else:
                assert [m.WhichOneof("kind") for m in call] == ["batch"]
            assert wait_until(lambda: not (children() & workers), timeout=30)
            assert wait_until(lambda: len(server.servicer.streams) == 0, timeout=30)
            assert [loader.closed for loader in factory.made] == [True]
            assert wait_until(lambda: not {m for m in shm_mappings() - before_shm if "nvidia_dali" in m}, timeout=30)
    finally:
        for loader in factory.made:
            loader.close()
