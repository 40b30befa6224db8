"""One contract for every instance-segmentation loader (``dali_pipes/core/loader_protocol.py``):
the local ones and ``RemoteLoader`` alike."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import pytest

from decal.dali_pipes.balanced.loader import BalancedCopyPasteLoader
from decal.dali_pipes.core.batch import Batch
from decal.dali_pipes.core.loader_protocol import Loader
from decal.dali_pipes.mosaic.loader import MosaicLoader
from decal.dali_pipes.copy_paste.loader import CopyPasteLoader
from decal.server.remote_loader import RemoteLoader

from coco_factory import write_coco_dataset
from server_helpers import assert_batches_equal

OPTIONS = {"batch_size": 2, "output_size": 64, "seed": 5}
LOCAL = {"device": "cpu", "num_threads": 1}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=7, instances_per_image=(0, 3), seed=4)


def _factories(synth: Any, server: Any) -> dict[str, Callable[[], Any]]:
    return {
        "copy-paste": lambda: CopyPasteLoader(*synth, **OPTIONS, **LOCAL),
        "balanced": lambda: BalancedCopyPasteLoader(*synth, **OPTIONS, **LOCAL),
        "mosaic": lambda: MosaicLoader(*synth, **OPTIONS, **LOCAL),
        "remote": lambda: RemoteLoader(f"127.0.0.1:{server.grpc_port}", "synth", prefetch=1, **OPTIONS),
        "remote-balanced": lambda: RemoteLoader(
            f"127.0.0.1:{server.grpc_port}", "synth", pipeline="balanced-copy-paste", prefetch=1, **OPTIONS
        ),
        "remote-mosaic": lambda: RemoteLoader(f"127.0.0.1:{server.grpc_port}", "synth", pipeline="mosaic", prefetch=1, **OPTIONS),
    }


KINDS = ("copy-paste", "balanced", "mosaic", "remote", "remote-balanced", "remote-mosaic")
#: Loaders whose resume restores the images' sampling but not every pixel: the balanced bank
#: starts empty again after load_state_dict (dali_pipes/balanced/loader.py, module docstring).
SAMPLING_ONLY_RESUME = {"balanced", "remote-balanced"}


@pytest.fixture(params=KINDS)
def make(request, synth) -> Callable[[], Any]:
    server = request.getfixturevalue("server") if request.param.startswith("remote") else None
    factory = _factories(synth, server)[request.param]
    factory.kind = request.param  # type: ignore[attr-defined]
    return factory


def _close(loader: Any) -> None:
    if hasattr(loader, "close"):
        loader.close()


@pytest.fixture
def loader(make) -> Iterator[Any]:
    """One loader of the kind under test, closed after the test (remote ones hold a stream)."""
    built = make()
    yield built
    _close(built)


def test_satisfies_the_protocol(loader) -> None:
    assert isinstance(loader, Loader)
    json.dumps(loader.stats)
    assert loader.categories and all(isinstance(k, int) and isinstance(v, dict) for k, v in loader.categories.items())


def test_an_epoch_has_len_batches_then_the_next_begins(loader) -> None:
    expected = len(loader)
    first = list(loader)
    assert len(first) == expected == 4  # 7 images, batches of 2, last one short
    assert all(isinstance(b, Batch) for b in first)
    assert sum(len(b) for b in first) == 7
    assert loader.state_dict()["epoch"] == 1
    second = len(loader)
    assert len(list(loader)) == second == 4


def test_state_dict_resumes_exactly(make) -> None:
    loader = make()
    try:
        iterator = iter(loader)
        next(iterator)
        next(iterator)
        state = json.loads(json.dumps(loader.state_dict()))
        want = list(iterator)
    finally:
        _close(loader)
    resumed = make()
    try:
        resumed.load_state_dict(state)
        got = list(resumed)
    finally:
        _close(resumed)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        if make.kind in SAMPLING_ONLY_RESUME:
            assert a.position == b.position
            assert [int(t["image_id"]) for t in a.targets] == [int(t["image_id"]) for t in b.targets]
        else:
            assert_batches_equal(a, b)
