"""Every family over gRPC: ``RemoteLoader(pipeline=...)`` yields, bit for bit, what the local
loader yields (the same batch type, the same tensors, the same positions), resumes exactly
from a ``state_dict`` like the local loader, and a wrong request is refused naming the field.

Copy-paste has the same tests in ``tests/test_remote_loader.py``; here: balanced copy-paste,
self-training, mosaic (COCO datasets), CutMix and CP² (image-folder datasets). CPU backend,
a few small images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable

import grpc
import pytest
import torch

from decal.dali_pipes import BalancedCopyPasteLoader, CP2Loader, CutMixLoader, MosaicLoader, SelfTrainingLoader
from decal.dali_pipes.batch import Batch
from decal.dali_pipes.folder_batches import ClassificationBatch, CP2Batch
from decal.dali_pipes.loader_protocol import Loader
from decal.proto import decal_pb2 as pb
from decal.server.pipelines import PIPELINES
from decal.server.remote_loader import RemoteLoader

from coco_factory import write_coco_dataset
from folder_factory import write_image_folder
from server_helpers import first_status, make_config, running_server

LOCAL = {"device": "cpu", "num_threads": 1}


@dataclass(frozen=True)
class Family:
    """One served family: how to build its local loader, what to send, what it yields."""

    pipeline: str
    dataset: str
    options: dict[str, Any]
    batch_type: type
    local: Callable[[dict[str, Any], dict[str, Any]], Any]  # (paths, options) → loader
    remote_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: a served option and a value just outside its bounds
    out_of_bounds: tuple[str, Any] = ("output_size", 4)


FAMILIES = (
    Family(
        "balanced-copy-paste", "synth", {"output_size": 64, "batch_size": 2, "seed": 3, "bank_capacity": 64}, Batch,
        lambda p, o: BalancedCopyPasteLoader(*p["synth"], **o, **LOCAL), out_of_bounds=("bank_power", 17.0),
    ),
    Family(
        "self-training", "synth", {"output_size": 64, "batch_size": 2, "seed": 4, "second_ratio": 0.5}, Batch,
        lambda p, o: SelfTrainingLoader(*p["synth"], second_images=p["unlabelled"][1], **o, **LOCAL),
        remote_extra={"second_dataset": "unlabelled"}, out_of_bounds=("second_ratio", 1.0),
    ),
    Family(
        "mosaic", "synth", {"output_size": 64, "batch_size": 2, "seed": 5, "mosaic_prob": 0.75}, Batch,
        lambda p, o: MosaicLoader(*p["synth"], **o, **LOCAL), out_of_bounds=("mosaic_prob", 1.5),
    ),
    Family(
        "cutmix", "folder", {"output_size": 32, "batch_size": 2, "seed": 6, "mixup_alpha": 0.4, "return_unmixed": True},
        ClassificationBatch, lambda p, o: CutMixLoader(p["folder"][1], **o, **LOCAL), out_of_bounds=("label_smoothing", 1.5),
    ),
    Family(
        "cp2", "folder", {"output_size": 32, "batch_size": 2, "seed": 7, "stride": 8, "return_views": True}, CP2Batch,
        lambda p, o: CP2Loader(p["folder"][1], **o, **LOCAL), out_of_bounds=("hue", 0.75),
    ),
)  # fmt: skip


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, tuple[Any, Any]]:
    root = tmp_path_factory.mktemp("families")
    return {
        "synth": write_coco_dataset(root / "coco", num_images=5, instances_per_image=(0, 3), seed=9),
        "folder": (None, write_image_folder(root / "folder", classes=2, per_class=3, seed=2)),
        "unlabelled": (None, write_image_folder(root / "unlabelled", classes=1, per_class=3, seed=3, labelled=False)),
    }


@pytest.fixture(scope="module")
def server(paths):
    with running_server(make_config(paths)) as s:
        yield s


def remote(server: Any, family: Family, **extra: Any) -> RemoteLoader:
    return RemoteLoader(
        f"127.0.0.1:{server.grpc_port}", family.dataset, pipeline=family.pipeline, prefetch=1,
        **family.options, **family.remote_extra, **extra,
    )  # fmt: skip


def assert_same(got: Any, want: Any, where: str = "batch") -> None:
    """Equal types, and every tensor equal in dtype, shape and value (recursively)."""
    assert type(got) is type(want), (where, type(got), type(want))
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, want.dtype, got.shape, want.shape)
        assert torch.equal(got.cpu(), want.cpu()), where
        assert got.device == want.device, where
    elif dataclasses.is_dataclass(want):
        for field in dataclasses.fields(want):
            assert_same(getattr(got, field.name), getattr(want, field.name), f"{where}.{field.name}")
    elif isinstance(want, dict):
        assert set(got) == set(want), (where, sorted(got), sorted(want))
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)) and not hasattr(want, "_fields"):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


@pytest.fixture(params=FAMILIES, ids=lambda f: f.pipeline)
def family(request) -> Family:
    return request.param


def test_remote_yields_what_the_local_loader_yields(server, paths, family: Family) -> None:
    local = family.local(paths, dict(family.options))
    want = list(local)
    with remote(server, family) as loader:
        assert isinstance(loader, Loader)
        assert len(loader) == len(local) == len(want) > 1
        got = list(loader)
        json.dumps(loader.stats)
        assert loader.state_dict()["epoch"] == 1
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert isinstance(a, family.batch_type)
        assert_same(a, b)


def test_state_dict_resumes_exactly_over_the_wire(server, paths, family: Family) -> None:
    """A remote state_dict after the first batch, loaded into a fresh remote loader, continues
    exactly as the local loader given the same state."""
    with remote(server, family) as first:
        iterator = iter(first)
        next(iterator)
        state = json.loads(json.dumps(first.state_dict()))
    assert state["cursor"] > 0 and state["batch_index"] == 1
    local = family.local(paths, dict(family.options))
    local.load_state_dict(state)
    want = list(local)
    with remote(server, family) as resumed:
        resumed.load_state_dict(state)
        got = list(resumed)
    assert got and len(got) == len(want)
    for a, b in zip(got, want):
        assert_same(a, b)


def test_an_unknown_option_is_refused_by_the_client(family: Family) -> None:
    with pytest.raises(TypeError, match=rf"unknown options \['no_such_option'\].*{family.pipeline}"):
        RemoteLoader("127.0.0.1:1", family.dataset, pipeline=family.pipeline, **family.remote_extra, no_such_option=1)


def test_an_out_of_bounds_value_is_invalid_argument_naming_the_field(server, family: Family) -> None:
    kind = PIPELINES[family.pipeline]
    name, value = family.out_of_bounds
    request = pb.StreamRequest(dataset=family.dataset, pipeline=family.pipeline, batch_size=2)
    params = getattr(request, kind.params_field)
    params.output_size = family.options["output_size"]
    setattr(params, name, value)
    if kind.second_dataset:
        params.second_dataset = "unlabelled"
    code, details = first_status(server.grpc_address, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{kind.params_field}.{name}: must be"), details
    # the server goes on serving
    setattr(params, name, dict(family.options).get(name, next(o.default for o in kind.schema if o.name == name)))
    assert first_status(server.grpc_address, request) == (grpc.StatusCode.OK, "")


def test_another_familys_params_are_refused(server, family: Family) -> None:
    request = pb.StreamRequest(dataset=family.dataset, pipeline=family.pipeline, batch_size=2)
    request.copy_paste.output_size = 64
    code, details = first_status(server.grpc_address, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("copy_paste: parameters of another pipeline"), details
