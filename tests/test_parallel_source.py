"""The GPU-mask and the default copy-paste sources, and self-training's two sources, in DALI's
parallel external source (worker processes): the very same batches, positions, resume and
sharding as the in-thread source; and the default loader's threaded copy-paste step: the
batches of the batched kernels."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
import torch

from decal.dali_pipes.copy_paste.loader import GpuMaskCopyPasteLoader
from decal.dali_pipes.copy_paste.pipeline import CopyPasteStep
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.dali_pipes.core.epoch_source import LoaderPosition
from decal.dali_pipes.core.parallel_source import BatchInfoSource, check_workers

from coco_factory import write_coco_dataset, write_self_training_sets
from loader_variants import copy_paste_with_step

KW = dict(batch_size=3, output_size=48, device="cpu", num_threads=1, seed=4)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("parallel"), num_images=11, instances_per_image=(0, 5), seed=2)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """``closing(loader)`` returns ``loader`` and closes it after the test: its worker pool's
    processes, pipes and shared memory go then, not at a later garbage collection (without it
    this file left ~900 descriptors open, near the 1024 ``select()`` takes in the later server
    tests' proxy)."""
    loaders: list[Any] = []
    yield lambda loader: loaders.append(loader) or loader
    for loader in loaders:
        loader.close()


def _same(a, b) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.position == y.position
        assert torch.equal(x.images, y.images)
        for tx, ty in zip(x.targets, y.targets):
            assert tx.keys() == ty.keys()
            for k in tx:
                assert tx[k].dtype == ty[k].dtype and torch.equal(tx[k], ty[k]), k


@pytest.mark.parametrize("options", [dict(), dict(drop_last=True, subpixel=True), dict(shard_id=1, num_shards=2)],
                         ids=["default", "drop-last-subpixel", "shard-1-of-2"])
def test_two_workers_give_the_in_thread_batches(coco, options, closing) -> None:
    inline = GpuMaskCopyPasteLoader(*coco, **KW, **options)
    workers = closing(GpuMaskCopyPasteLoader(*coco, source_workers=2, **KW, **options))
    for _ in range(2):  # two epochs: the second comes from BatchInfo.epoch_idx = 1
        _same(list(inline), list(workers))
    assert workers.state_dict() == inline.state_dict()


def test_resume_with_workers_is_exact(coco, closing) -> None:
    reference = GpuMaskCopyPasteLoader(*coco, **KW)
    epoch0 = list(reference)
    epoch1 = list(reference)
    loader = closing(GpuMaskCopyPasteLoader(*coco, source_workers=2, **KW))
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    assert state["cursor"] == 6 and state["batch_index"] == 2
    resumed = closing(GpuMaskCopyPasteLoader(*coco, source_workers=2, **KW))
    resumed.load_state_dict(state)
    _same(epoch0[2:], list(resumed))  # rest of epoch 0 from a mid-epoch start
    _same(epoch1, list(resumed))  # and the next epoch on the same pipeline


def test_spawned_workers_give_the_same_batches(coco) -> None:
    kw = dict(KW, seed=9)
    inline = list(GpuMaskCopyPasteLoader(*coco, **kw))
    with GpuMaskCopyPasteLoader(*coco, source_workers=1, source_start_method="spawn", **kw) as workers:
        _same(inline, list(workers))


def test_batch_info_source_is_stateless_and_stops_for_good(coco) -> None:
    loader = GpuMaskCopyPasteLoader(*coco, **KW)
    source = loader.source
    parallel = BatchInfoSource(source, LoaderPosition(0, 3, 1))
    assert parallel.batch_start(2, 0) == LoaderPosition(0, 9, 3)
    assert parallel.batch_start(2, 1) == LoaderPosition(1, 6, 2)
    last = parallel(SimpleNamespace(iteration=2, epoch_idx=0))  # entries 9, 10: a short batch
    assert len(last[0]) == 2 and last[-1][0].tolist() == [4, 0, 0, 3, 11]
    again = parallel(SimpleNamespace(iteration=2, epoch_idx=0))
    assert all(all((x == y).all() for x, y in zip(a, b)) for a, b in zip(last, again))
    for iteration in (3, 4, 10):  # DALI prefetches past the end
        with pytest.raises(StopIteration):
            parallel(SimpleNamespace(iteration=iteration, epoch_idx=0))
    assert source.position == LoaderPosition()  # the in-thread state is untouched


def test_worker_options_are_checked(coco) -> None:
    with pytest.raises(ValueError, match="source_workers must be an integer >= 0"):
        GpuMaskCopyPasteLoader(*coco, source_workers=-1, **KW)
    with pytest.raises(ValueError, match="source_start_method must be one of"):
        GpuMaskCopyPasteLoader(*coco, source_workers=1, source_start_method="forkserver", **KW)
    with pytest.raises(ValueError, match="needs on_error='raise'"):
        GpuMaskCopyPasteLoader(*coco, source_workers=2, on_error="skip", **KW)
    check_workers(0, "fork", "skip")  # in-thread: any on_error


@pytest.mark.parametrize("loader_type", [GpuMaskCopyPasteLoader, CopyPasteLoader], ids=["gpu-masks", "default"])
def test_a_corrupt_image_made_by_a_worker_is_named(tmp_path, loader_type, closing) -> None:
    from decal.dali_pipes.core.errors import DatasetError

    from test_copy_paste_loader import corrupt_dataset

    json_path, image_dir, victim = corrupt_dataset(tmp_path)
    loader = closing(loader_type(json_path, image_dir, source_workers=2, **dict(KW, batch_size=2)))
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    assert victim.name in str(caught.value) and caught.value.image_id == 4


# -- the default (host-mask) loader: source workers and the threaded copy-paste step ----------


def _batched_kernel_loader(*coco, **options):
    """The loader as it was: its step runs each batched NumPy twin once, in one thread."""
    return copy_paste_with_step(*coco, lambda config: CopyPasteStep(config.copy_paste_params()), **options)


@pytest.mark.parametrize("options", [dict(), dict(drop_last=True, blend_sigma=1.5), dict(shard_id=1, num_shards=2)],
                         ids=["default", "drop-last-blurred", "shard-1-of-2"])
def test_copy_paste_loader_threads_and_workers_give_the_serial_batches(coco, options, closing) -> None:
    kw = dict(KW, num_threads=2, **options)
    serial = _batched_kernel_loader(*coco, **kw)
    threaded = CopyPasteLoader(*coco, **kw)  # step_threads defaults to num_threads
    workers = closing(CopyPasteLoader(*coco, source_workers=2, step_threads=3, **kw))
    for _ in range(2):
        want = list(serial)
        assert any(bool(t["pasted"].any()) for b in want for t in b.targets)
        _same(want, list(threaded))
        _same(want, list(workers))
    assert workers.state_dict() == serial.state_dict()


def test_copy_paste_loader_resumes_with_workers(coco, closing) -> None:
    epoch0 = list(CopyPasteLoader(*coco, **KW))
    loader = closing(CopyPasteLoader(*coco, source_workers=1, **KW))
    it = iter(loader)
    next(it)
    resumed = closing(CopyPasteLoader(*coco, source_workers=2, **KW))
    resumed.load_state_dict(loader.state_dict())
    _same(epoch0[1:], list(resumed))


def test_copy_paste_loader_worker_options_are_checked(coco) -> None:
    with pytest.raises(ValueError, match="needs on_error='raise'"):
        CopyPasteLoader(*coco, source_workers=2, on_error="skip", **KW)
    with pytest.raises(ValueError, match="step_threads"):
        CopyPasteLoader(*coco, step_threads=0, **KW)


def test_loader_workers_share_the_memory_mapped_index(coco, closing) -> None:
    """The loader holds the cached, memory-mapped index (not Python records), what a spawned
    worker unpickles is that index's directory, and the batches are those of a loader given the
    in-memory dataset."""
    import pickle

    import numpy as np

    from decal.dali_pipes.coco.reader import CocoDataset

    loader = closing(GpuMaskCopyPasteLoader(*coco, source_workers=2, source_start_method="spawn", **KW))
    index = loader.dataset.index
    assert index.directory is not None and isinstance(index.verts, np.memmap)
    assert loader.source.index is index
    arrays = sum(np.asarray(getattr(index, name)).nbytes for name in index.array_names())
    wire = pickle.dumps(BatchInfoSource(loader.source, LoaderPosition()))
    assert len(wire) < arrays  # no array travels: the index pickles as its directory
    again = pickle.loads(wire).source.dataset.index
    assert again.directory == index.directory and isinstance(again.labels, np.memmap)
    in_memory = GpuMaskCopyPasteLoader(*coco, dataset=CocoDataset(*coco), **KW)
    assert in_memory.dataset.index.directory is None
    _same(list(in_memory), list(loader))


def assert_workers_give_the_in_thread_batches(make) -> None:
    """``make(**options)`` builds a loader: with ``source_workers=2`` it gives the in-thread
    loader's batches over two epochs (the second from ``BatchInfo.epoch_idx`` = 1) and its
    state; a worker loader resumed after one batch continues as the in-thread one."""
    inline = make()
    with make(source_workers=2) as workers:
        assert len(workers) == len(inline)
        for _ in range(2):
            _same(list(inline), list(workers))
        assert workers.state_dict() == inline.state_dict()
    reference = list(make())
    with make(source_workers=2) as first:
        next(iter(first))
        state = first.state_dict()
    with make(source_workers=2) as resumed:
        resumed.load_state_dict(state)
        _same(reference[1:], list(resumed))


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> dict:
    """A labelled set and a pseudo-labelled second set (its own images and instances)."""
    _, paths = write_self_training_sets(
        tmp_path_factory.mktemp("two-sets"), dict(num_images=9, instances_per_image=(0, 4), seed=6),
        dict(num_images=5, size=(56, 72), instances_per_image=(0, 3), seed=7), pseudo_category=99,
    )  # fmt: skip
    return paths


#: self-training cases: (second set, options); "images" = an unlabelled image directory,
#: "pseudo" = a pseudo-labelled json (instances of both sets in one batch)
SELF_TRAINING_CASES = {
    "images": ("images", dict()),
    "pseudo-drop-last": ("pseudo", dict(drop_last=True)),
    "pseudo-shard-1-of-2": ("pseudo", dict(shard_id=1, num_shards=2, second_ratio=0.25)),
}


def self_training_loader(two_sets, second: str, **options):
    from decal.dali_pipes.self_training.loader import SelfTrainingLoader

    pseudo = dict(second_annotations=two_sets["pseudo_json"]) if second == "pseudo" else {}
    return SelfTrainingLoader(two_sets["labelled_json"], two_sets["labelled_dir"], second_images=two_sets["second_dir"],
                              **pseudo, **{**KW, "batch_size": 4, "second_ratio": 0.5, **options})  # fmt: skip


@pytest.mark.parametrize("mask_source", ["host", "descriptors"])
@pytest.mark.parametrize("case", list(SELF_TRAINING_CASES))
def test_self_training_workers_give_the_in_thread_batches(two_sets, case, mask_source) -> None:
    """Self-training's batches hold labelled images and then second-set images; workers made
    them of labelled images only (so an epoch had half the batches), until the source's second
    set became part of its ``columns`` (a function of the batch's start). Both sources of the
    family (host masks, descriptors) take workers."""
    from decal.dali_pipes.self_training.source import GpuMaskSelfTrainingSource

    second, options = SELF_TRAINING_CASES[case]
    make = partial(self_training_loader, two_sets, second, mask_source=mask_source, **options)
    assert isinstance(make().source, GpuMaskSelfTrainingSource) == (mask_source == "descriptors")
    assert_workers_give_the_in_thread_batches(make)


@pytest.mark.parametrize("mask_source", ["host", "descriptors"])
def test_a_corrupt_second_set_image_made_by_a_worker_is_named(coco, tmp_path, mask_source, closing) -> None:
    """Error recovery checks the second-set images of the batches workers made too (the
    self-training source's ``extra_items``); before, it named only the labelled files."""
    import shutil

    from decal.dali_pipes.core.errors import DatasetError
    from decal.dali_pipes.self_training.loader import SelfTrainingLoader

    second = tmp_path / "second"
    shutil.copytree(coco[1], second)
    victim = sorted(second.glob("*.jpg"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] + b"\x00\xff" * 20)  # header intact, data broken
    loader = closing(SelfTrainingLoader(*coco, second_images=second, source_workers=2, mask_source=mask_source, **dict(KW, batch_size=4)))
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    assert victim.name in str(caught.value)


@pytest.mark.parametrize("mask_source", ["host", "descriptors"])
@pytest.mark.parametrize("options", [dict(), dict(drop_last=True, repeat_factor_threshold=None), dict(shard_id=1, num_shards=2)],
                         ids=["default", "drop-last-uniform", "shard-1-of-2"])
def test_mosaic_workers_give_the_in_thread_batches(coco, options, mask_source) -> None:
    """A mosaic's extra tiles are drawn from its batch's start (``MosaicSource.plan``), so
    workers make the in-thread batches, for both mask sources, resumed runs included."""
    from decal.dali_pipes.mosaic.loader import MosaicLoader

    make = partial(MosaicLoader, *coco, **{**KW, "batch_size": 4, "mosaic_prob": 0.7, "mask_source": mask_source, **options})
    assert_workers_give_the_in_thread_batches(make)


def test_mosaic_extra_items_are_the_tiles_it_reads(coco) -> None:
    """``extra_items`` names, without reading, the extra tiles ``columns`` reads: what error
    recovery decodes of the batches workers made."""
    from decal.dali_pipes.mosaic.loader import MosaicLoader

    source = MosaicLoader(*coco, **{**KW, "batch_size": 4, "mosaic_prob": 0.7}).source
    start = LoaderPosition(1, 4, 1)
    payloads = [source.read(source.dataset, int(i)) for i in source.epoch_order(1)[4:8]]
    _, extras = source.columns(start, 8, payloads)
    assert len(extras) > 0 and source.extra_items(start, 4) == tuple(extras)


@pytest.mark.parametrize("mask_source", ["host", "descriptors"])
def test_a_corrupt_mosaic_tile_made_by_a_worker_is_named(coco, tmp_path, mask_source, closing) -> None:
    """Error recovery with workers decodes a mosaic's extra tiles too (``extra_items``): a
    corrupt image read only as an extra tile is named."""
    import shutil

    from decal.dali_pipes.core.errors import DatasetError
    from decal.dali_pipes.mosaic.loader import MosaicLoader

    images = tmp_path / "images"
    shutil.copytree(coco[1], images)
    kw = {**KW, "batch_size": 4, "mosaic_prob": 1.0, "mask_source": mask_source, "drop_last": True}
    source = MosaicLoader(coco[0], images, **kw).source
    start = LoaderPosition(0, 0, 0)
    tile0 = {int(i) for i in source.epoch_order(0)[:8]}  # tile 0 of the epoch's two batches
    extra_only = sorted({i for _, i in source.extra_items(start, 4)} - tile0)
    assert extra_only, "the draw must hold an image read only as an extra tile"
    victim = source.dataset[extra_only[0]].path
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] + b"\x00\xff" * 20)  # header intact, data broken
    loader = closing(MosaicLoader(coco[0], images, source_workers=2, **kw))
    with pytest.raises(DatasetError) as caught:
        for _ in loader:
            pass
    assert victim.name in str(caught.value)
