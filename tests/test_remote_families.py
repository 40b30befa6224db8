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
from decal.dali_pipes.core.batch import Batch
from decal.dali_pipes.folder.batches import ClassificationBatch, CP2Batch
from decal.dali_pipes.core.loader_protocol import Loader
from decal.proto import decal_pb2 as pb
from decal.server.config import Limits
from decal.server.memory import stream_memory_bytes
from decal.server.pipelines import PIPELINES
from decal.server.remote_loader import RemoteLoader

from coco_factory import write_coco_dataset
from folder_factory import write_image_folder
from server_helpers import FAST, assert_same, first_status, info, make_config, running_server

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
    kind.holder(params, "output_size").output_size = family.options["output_size"]
    setattr(kind.holder(params, name), name, value)
    if kind.second_dataset:
        params.second_dataset = "unlabelled"
    code, details = first_status(server.grpc_address, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{kind.params_field}.{name}: must be"), details
    # the server goes on serving
    setattr(kind.holder(params, name), name, dict(family.options).get(name, next(o.default for o in kind.schema if o.name == name)))
    assert first_status(server.grpc_address, request) == (grpc.StatusCode.OK, "")


def test_another_familys_params_are_refused(server, family: Family) -> None:
    request = pb.StreamRequest(dataset=family.dataset, pipeline=family.pipeline, batch_size=2)
    request.copy_paste.output_size = 64
    code, details = first_status(server.grpc_address, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("copy_paste: parameters of another pipeline"), details


# ----------------------------------------------------------------------------- requests and Info


def _request(family: str, dataset: str, **params: Any) -> pb.StreamRequest:
    kind = PIPELINES[family]
    request = pb.StreamRequest(dataset=dataset, pipeline=family, batch_size=2)
    target = getattr(request, kind.params_field)
    target.SetInParent()
    for name, value in params.items():
        setattr(target if name == "second_dataset" else kind.holder(target, name), name, value)
    return request


def test_info_lists_every_family_and_the_stream_memory_limit(server) -> None:
    reply = info(server.grpc_address)
    assert [p.name for p in reply.pipelines] == list(PIPELINES)
    cutmix = next(p for p in reply.pipelines if p.name == "cutmix")
    assert json.loads(cutmix.defaults["mixup_alpha"]) == 0.0 and json.loads(cutmix.defaults["scale"]) == [0.08, 1.0]
    assert reply.limits.max_stream_bytes == server.config.limits.max_stream_bytes > 0


def test_a_pipeline_given_a_dataset_of_the_wrong_format_names_the_dataset(server) -> None:
    code, details = first_status(server.grpc_address, _request("mosaic", "folder", output_size=64))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("dataset: 'folder' is an image folder without annotations; pipeline 'mosaic' needs"), details


def test_the_second_set_is_a_registered_dataset_name(server) -> None:
    for second, code, start in [
        ("", grpc.StatusCode.INVALID_ARGUMENT, "self_training.second_dataset: required"),
        ("missing", grpc.StatusCode.NOT_FOUND, "self_training.second_dataset: no dataset named 'missing'"),
        ("/data/unlabelled", grpc.StatusCode.INVALID_ARGUMENT, "self_training.second_dataset: expected a registered dataset name"),
    ]:
        got, details = first_status(server.grpc_address, _request("self-training", "synth", output_size=64, second_dataset=second))
        assert (got, details[: len(start)]) == (code, start), details
    assert first_status(server.grpc_address, _request("self-training", "synth", output_size=64, second_dataset="unlabelled"))[0] == grpc.StatusCode.OK


def test_float_images_are_not_sent_as_jpeg(server, paths) -> None:
    request = _request("cp2", "folder", output_size=32)
    request.wire.image_codec = pb.IMAGE_CODEC_JPEG
    code, details = first_status(server.grpc_address, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("wire.image_codec: IMAGE_CODEC_JPEG carries uint8"), details
    family = next(f for f in FAMILIES if f.pipeline == "cutmix")
    with remote(server, family, normalize=False, image_encoding="jpeg") as loader:
        batch = next(iter(loader))
    want = next(iter(family.local(paths, {**family.options, "normalize": False})))
    assert batch.images.dtype == torch.uint8 and batch.images.shape == want.images.shape
    assert torch.equal(batch.targets, want.targets) and torch.equal(batch.lam, want.lam)


@pytest.mark.parametrize(
    "family,params,per_pixel",
    [("cutmix", {"output_size": 64}, 15), ("cp2", {"output_size": 64, "return_views": True}, 50)],
)
def test_a_folder_stream_over_max_stream_bytes_is_refused_with_the_figure(paths, family, params, per_pixel) -> None:
    depth = 2 + 2  # the default prefetch_queue_depth + prefetch_batches
    needed = 2 * 64 * 64 * per_pixel * depth
    limits = Limits(max_streams=8, max_batch_size=16, max_output_size=512, max_stream_bytes=needed - 1)
    with running_server(make_config(paths, limits=limits)) as small:
        code, details = first_status(small.grpc_address, _request(family, "folder", **params))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith(f"max_stream_bytes: this request needs about 0.00 GiB ({needed} bytes"), details
        params = dict(params, output_size=32)
        assert first_status(small.grpc_address, _request(family, "folder", **params))[0] == grpc.StatusCode.OK


def test_instance_family_estimates_count_mosaic_tiles_and_the_bank() -> None:
    class Dataset:
        records = [type("R", (), {"annotations": [0, 1, 2]})()]

    loader = type("L", (), {"dataset": Dataset()})()
    options = {"batch_size": 2, "output_size": 64}
    plain, _ = PIPELINES["copy-paste"].memory({**options, "jitter": "none"}, loader, 4)
    assert plain == stream_memory_bytes(batch_size=2, output_size=64, max_scale=1.0, instances=3, depth=4)
    mosaic, _ = PIPELINES["mosaic"].memory({**options, "jitter": "none"}, loader, 4)
    assert mosaic == stream_memory_bytes(batch_size=2, output_size=64, max_scale=1.0, instances=12, depth=4)
    balanced, what = PIPELINES["balanced-copy-paste"].memory({**options, "jitter": "none", "bank_max_bytes": 1000}, loader, 4)
    from_bank = stream_memory_bytes(batch_size=2, output_size=64, max_scale=1.0, instances=3, depth=4, pasted_from_batch=False)
    assert balanced == from_bank + 1000 and "bank" in what


def test_decal_stream_pulls_any_family(server, capsys) -> None:
    from decal.server.smoke import main

    address = f"127.0.0.1:{server.grpc_port}"
    assert main([address, "--dataset", "folder", "--pipeline", "cp2", "--output-size", "32", "--batches", "2", "--device", "cpu"]) == 0
    assert "2 batches, 4 images" in capsys.readouterr().out
    argv = [address, "--dataset", "synth", "--pipeline", "self-training", "--second-dataset", "unlabelled", "--output-size", "64"]
    assert main([*argv, "--batches", "1", "--device", "cpu"]) == 0
    assert "max_stream_bytes=" in capsys.readouterr().out


def test_the_client_refuses_a_missing_or_misplaced_second_dataset_and_a_none_that_cannot_be() -> None:
    with pytest.raises(TypeError, match=r"pipeline='self-training'\) needs second_dataset"):
        RemoteLoader("127.0.0.1:1", "synth", pipeline="self-training")
    with pytest.raises(TypeError, match=r"second_dataset is an option of the self-training pipeline, not of 'mosaic'"):
        RemoteLoader("127.0.0.1:1", "synth", pipeline="mosaic", second_dataset="unlabelled")
    with pytest.raises(TypeError, match=r"flip_prob=None: flip_prob cannot be None for pipeline 'mosaic'"):
        RemoteLoader("127.0.0.1:1", "synth", pipeline="mosaic", flip_prob=None)
    with pytest.raises(ValueError, match=r"pipeline: expected one of copy-paste, .*cp2, got 'segment'"):
        RemoteLoader("127.0.0.1:1", "synth", pipeline="segment")


def test_a_bad_second_set_is_failed_precondition_naming_it_without_server_paths(paths, tmp_path) -> None:
    empty = tmp_path / "empty-second"
    empty.mkdir()
    with running_server(make_config({**paths, "empty": (None, empty)})) as s:
        code, details = first_status(s.grpc_address, _request("self-training", "synth", output_size=64, second_dataset="empty"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("dataset 'empty': "), details
    assert str(tmp_path) not in details and "no readable JPEG or PNG image" in details


def test_a_none_option_reaches_the_loader_as_none_not_as_the_servers_default(paths) -> None:
    """Over a real stream: ``num_classes=None`` (CutMix: the folder's classes) and
    ``repeat_factor_threshold=None`` (mosaic: uniform sampling) arrive as None although the
    server's ``[defaults.<family>]`` sets both; left out, the server's default applies."""
    defaults = {"copy-paste": FAST, "cutmix": {**FAST, "num_classes": 5}, "mosaic": {**FAST, "repeat_factor_threshold": 0.01}}
    cutmix, mosaic = FAMILIES[3], FAMILIES[2]
    assert (cutmix.pipeline, mosaic.pipeline) == ("cutmix", "mosaic")
    with running_server(make_config(paths, defaults=defaults)) as s:
        with remote(s, cutmix, num_classes=None) as loader:
            assert {tuple(b.targets.shape[1:]) for b in loader} == {(2,)}  # the folder's 2 classes
        with remote(s, cutmix) as loader:
            assert {tuple(b.targets.shape[1:]) for b in loader} == {(5,)}  # the server's default
        with remote(s, mosaic, repeat_factor_threshold=None) as loader:
            got = list(loader)
    want = list(mosaic.local(paths, dict(mosaic.options, repeat_factor_threshold=None)))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert_same(a, b)
