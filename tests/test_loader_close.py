"""``close()`` and ``with loader:`` release a loader's DALI pipeline now: its parallel-source
worker processes are gone and their shared memory unmapped without a garbage collection
(``dali_pipes/core/pipeline_release.py``); a closed loader refuses to iterate."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from decal.dali_pipes.copy_paste.loader import CopyPasteLoader, GpuMaskCopyPasteLoader
from decal.dali_pipes.core.errors import DatasetError
from decal.dali_pipes.cp2.loader import CP2Loader
from decal.dali_pipes.cutmix.loader import CutMixLoader

from coco_factory import write_coco_dataset
from folder_factory import write_image_folder
from test_copy_paste_loader import corrupt_dataset
from worker_resources import alive, shm_mappings, worker_pids

KW = dict(batch_size=2, output_size=48, device="cpu", num_threads=1, seed=4)


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    return write_coco_dataset(tmp_path_factory.mktemp("close"), num_images=6, instances_per_image=(0, 4), seed=3)


def first_batch_and_workers(loader: Any) -> tuple[Any, Iterator[Any], list[int]]:
    iterator = iter(loader)
    batch = next(iterator)
    pids = worker_pids(loader.built_pipeline)
    assert len(pids) == loader.config.source_workers and all(alive(pid) for pid in pids)
    return batch, iterator, pids


def touch(batch: Any) -> None:
    """Read every tensor of ``batch`` (a delivered batch outlives its loader's pipeline)."""
    total = batch.images.double().sum()
    for target in batch.targets:
        for value in target.values():
            total += value.double().sum()
    assert torch.isfinite(total)


@pytest.mark.parametrize("loader_type", [GpuMaskCopyPasteLoader, CopyPasteLoader])
def test_close_ends_the_workers_and_unmaps_their_shared_memory(coco, loader_type, no_gc) -> None:
    before = shm_mappings()
    loader = loader_type(*coco, source_workers=2, **KW)
    batch, iterator, pids = first_batch_and_workers(loader)
    assert shm_mappings() - before, "a worker pool maps shared memory"
    loader.close()
    assert [pid for pid in pids if alive(pid)] == []
    assert shm_mappings() - before == set()
    assert loader.closed and loader.built_pipeline is None
    touch(batch)
    with pytest.raises(RuntimeError, match=f"^{loader_type.__name__} is closed; make a new loader"):
        next(iterator)  # a suspended epoch stops too
    with pytest.raises(RuntimeError, match="is closed"):
        iter(loader)
    loader.close()  # twice: nothing to do


def test_close_releases_a_pipeline_that_something_else_still_holds(coco, no_gc) -> None:
    """A pipeline kept alive elsewhere (a reference cycle through a ``python_function`` op, a
    caller's variable) is shut down all the same: workers joined, backend gone, batch chunks
    and queue buffers unmapped. Only the pool's semaphores wait for the pipeline object."""
    before = shm_mappings()
    loader = CopyPasteLoader(*coco, source_workers=2, **KW)
    batch, _, pids = first_batch_and_workers(loader)
    held = loader.built_pipeline
    loader.close()
    assert [pid for pid in pids if alive(pid)] == []
    assert held._pipe is None
    assert {m for m in shm_mappings() - before if "nvidia_dali" in m} == set()
    touch(batch)
    del held
    assert shm_mappings() - before == set()  # the last reference gone: the semaphores too


def test_with_block_closes_on_an_exception(coco, no_gc) -> None:
    before = shm_mappings()
    with pytest.raises(ValueError, match="inside the block"):
        with GpuMaskCopyPasteLoader(*coco, source_workers=2, **KW) as loader:
            _, _, pids = first_batch_and_workers(loader)
            raise ValueError("inside the block")
    assert loader.closed
    assert [pid for pid in pids if alive(pid)] == []
    assert shm_mappings() - before == set()


def test_resume_releases_the_pipeline_it_drops(coco, no_gc) -> None:
    """``load_state_dict`` rebuilds the pipeline at the new position: the old one's workers end."""
    loader = GpuMaskCopyPasteLoader(*coco, source_workers=2, **KW)
    try:
        _, _, pids = first_batch_and_workers(loader)
        loader.load_state_dict(loader.state_dict())
        assert [pid for pid in pids if alive(pid)] == []
        rest = list(loader)  # the resumed epoch runs on a new pipeline
        assert rest and rest[0].position.batch_index == 2
    finally:
        loader.close()


def test_a_loader_closed_before_iterating_refuses_to_start(coco) -> None:
    loader = GpuMaskCopyPasteLoader(*coco, **KW)
    loader.close()
    with pytest.raises(RuntimeError, match="^GpuMaskCopyPasteLoader is closed"):
        list(loader)


@pytest.mark.parametrize("loader_type", [CutMixLoader, CP2Loader])
def test_folder_loaders_close_their_pipeline(tmp_path, loader_type) -> None:
    folder = write_image_folder(tmp_path / "folder", classes=2, per_class=2, seed=1, labelled=loader_type is CutMixLoader)
    with loader_type(folder, batch_size=2, output_size=32, device="cpu", num_threads=1, seed=0) as loader:
        iterator = iter(loader)
        next(iterator)
        pipeline = loader.built_pipeline
        assert pipeline is not None
    assert loader.built_pipeline is None and pipeline._pipe is None  # DALI's backend is shut down
    with pytest.raises(RuntimeError, match=f"^{loader_type.__name__} is closed"):
        next(iterator)


def built_pipelines() -> list[Any]:
    """The built DALI pipelines alive in this process (closed or not)."""
    from nvidia.dali.pipeline import Pipeline

    return [o for o in gc.get_objects() if type(o) is Pipeline and getattr(o, "_built", False)]


def test_a_failed_run_frees_its_pipeline_without_a_collection(tmp_path, no_gc) -> None:
    """A DALI failure raised as the DatasetError naming the file (``on_error="raise"``) drops
    the loader's pipeline, and nothing of the error keeps it: not the frames of its traceback
    (the iterator's, holding the pipeline and the DALI error whose traceback leads back to
    them), not DALI's ``run()`` frames in its cause. So it is freed by reference counting even
    while the caller still holds the error (the server turns it into the stream's status),
    and once the error is dropped the loader goes too: no cycle is left for a GC pass. It was
    kept in a frame <-> exception cycle, the built pipeline a server stream left behind."""
    json_path, image_dir, victim = corrupt_dataset(tmp_path)
    loader = CopyPasteLoader(json_path, image_dir, **{**KW, "on_error": "raise"})
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    assert victim.name in str(caught.value) and isinstance(caught.value.__cause__, RuntimeError)
    assert loader.built_pipeline is None
    assert built_pipelines() == []  # the error is still held here
    loader.close()
    gone = weakref.ref(loader)
    del loader, caught
    assert gone() is None
