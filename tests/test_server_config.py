"""The server's TOML config: every table, relative paths, token sources, and errors that name
the key."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("grpc_health", reason="the server needs grpcio-health-checking (the serve extra)")
pytest.importorskip("prometheus_client", reason="the server needs prometheus-client (the serve extra)")

from decal.server.app import DecalServer  # noqa: E402
from decal.server.config import ConfigError, ServerConfig
from decal.server.serve import add_serve_arguments, load_config

FULL = """
[server]
host = "0.0.0.0"
grpc_port = 6000
http_port = -1
token_env = "DECAL_TEST_TOKEN"
grace_seconds = 3
include_sample = true

[pipeline]
device = "cpu"
num_threads = 1

[limits]
max_streams = 3
max_batch_size = 4
max_message_bytes = 1000000

[datasets.coco-mini]
annotations = "ann/instances.json"
images = "/abs/images"
description = "mini"

[defaults.copy-paste]
output_size = 256
jitter = [0.5, 1.5]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_full_config(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DECAL_TEST_TOKEN", "abc")
    config = ServerConfig.from_toml(write(tmp_path, FULL))
    assert (config.host, config.grpc_port, config.http_port, config.token, config.grace_seconds) == ("0.0.0.0", 6000, -1, "abc", 3)
    assert config.limits.max_streams == 3 and config.limits.max_batch_size == 4 and config.limits.prefetch_batches == 2
    assert config.pipeline.loader_options() == {"device": "cpu", "device_id": 0, "num_threads": 1, "prefetch_queue_depth": 2}
    entry = config.datasets["coco-mini"]
    assert entry.annotations == tmp_path / "ann/instances.json" and entry.images == Path("/abs/images")
    assert config.defaults["copy-paste"]["jitter"] == [0.5, 1.5]
    assert "sample" in config.with_sample().datasets


@pytest.mark.parametrize(
    "text,key",
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[limits]\nmax_streams = 0\n", "limits.max_streams"),
        ("[limits]\nmax_streamz = 2\n", "limits.max_streamz"),
        ("[pipeline]\ndevice = 'tpu'\n", "pipeline.device"),
        ("[datasets.x]\nimages = 'i'\n", "datasets.x.annotations"),
        ("[datasets.'a/b']\nannotations = 'a'\nimages = 'i'\n", "datasets.a/b"),
        ("[server]\ntls_cert = 'c.pem'\n", "server.tls_cert"),
        ("[server]\ntoken = 'a'\ntoken_env = 'B'\n", "server.token_env"),
        ("[server]\ntoken_env = 'DECAL_SURELY_UNSET_VAR'\n", "server.token_env"),
        ("[server]\ntoken_file = 'missing.txt'\n", "server.token_file"),
        ("[server]\ngrpc_port = 70000\n", "server.grpc_port"),
        ("[nonsense]\n", "nonsense"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("/", "/")):
        ServerConfig.from_toml(write(tmp_path, text))


def test_token_file(tmp_path) -> None:
    (tmp_path / "token.txt").write_text("from-file\n")
    config = ServerConfig.from_toml(write(tmp_path, f"[server]\ntoken_file = '{tmp_path / 'token.txt'}'\n"))
    assert config.token == "from-file"


@pytest.mark.parametrize(
    "defaults,key",
    [("output_size = 5", "output_size"), ("jitter = 'huge'", "jitter"), ("flip_prob = 2.0", "flip_prob"), ("colour = 1", "colour")],
)
def test_bad_pipeline_defaults_fail_at_start(tmp_path, defaults, key) -> None:
    config = ServerConfig.from_toml(write(tmp_path, f"[defaults.copy-paste]\n{defaults}\n"))
    with pytest.raises(ConfigError, match=key):
        DecalServer(config, backend="cpu")


def test_loader_default_over_the_size_limit_is_explained(tmp_path) -> None:
    config = ServerConfig.from_toml(write(tmp_path, "[limits]\nmax_output_size = 512\n"))
    with pytest.raises(ConfigError, match=r"defaults\.copy-paste\] output_size"):
        DecalServer(config, backend="cpu")


def test_cli_flags_override_the_file(tmp_path) -> None:
    import argparse

    parser = add_serve_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--config", str(write(tmp_path, FULL.replace('token_env = "DECAL_TEST_TOKEN"', ""))), "--grpc-port", "0", "--device", "cpu"])
    config = load_config(args)
    assert config.grpc_port == 0 and config.pipeline.device == "cpu" and config.host == "0.0.0.0"
    empty = load_config(parser.parse_args([]))
    assert empty.include_sample  # no datasets configured: serve the sample


@pytest.mark.parametrize("word,device,device_id", [("cuda", "gpu", 0), ("cuda:1", "gpu", 1), ("gpu:2", "gpu", 2), ("CPU", "cpu", 0)])
def test_serve_reads_the_one_device_vocabulary(tmp_path, word, device, device_id) -> None:
    """`decal serve --device` and `[pipeline] device` take what loaders and `decal train` take."""
    import argparse

    parser = add_serve_arguments(argparse.ArgumentParser())
    config = load_config(parser.parse_args(["--device", word]))
    assert (config.pipeline.device, config.pipeline.device_id) == (device, device_id)
    from_file = ServerConfig.from_toml(write(tmp_path, f"[pipeline]\ndevice = '{word}'\n"))
    assert (from_file.pipeline.device, from_file.pipeline.device_id) == (device, device_id)


def test_streams_share_one_parsed_dataset(tmp_path) -> None:
    """A registered dataset's json is parsed once for all streams (per on_error mode), and
    again only when the file changes."""
    import os

    from coco_factory import write_coco_dataset

    from decal.server.config import DatasetEntry
    from decal.server.pipelines import copy_paste_loader

    json_path, image_dir = write_coco_dataset(tmp_path, num_images=3)
    entry = DatasetEntry(name="tiny", annotations=json_path, images=image_dir)
    first = copy_paste_loader(entry, {"batch_size": 2, "output_size": 32, "device": "cpu"})
    second = copy_paste_loader(entry, {"batch_size": 1, "output_size": 48, "device": "cpu", "seed": 3})
    skipping = copy_paste_loader(entry, {"batch_size": 2, "output_size": 32, "device": "cpu", "on_error": "skip"})
    assert first.dataset is second.dataset
    assert skipping.dataset is not first.dataset and skipping.dataset.on_error == "skip"
    os.utime(json_path, ns=(0, os.stat(json_path).st_mtime_ns + 10**9))  # the json changed
    assert copy_paste_loader(entry, {"batch_size": 2, "device": "cpu"}).dataset is not first.dataset
    ids = [int(t["image_id"]) for b in second for t in b.targets]
    assert sorted(ids) == [1, 2, 3]


def test_an_image_folder_dataset_has_a_format_and_no_annotations(tmp_path) -> None:
    """``format = "image-folder"``: no annotations (the CutMix and CP² pipelines read it); a
    COCO dataset (the default format) still needs its annotations."""
    config = ServerConfig.from_dict({"datasets": {"folder": {"format": "image-folder", "images": "imgs"}}}, base_dir=tmp_path)
    assert config.datasets["folder"].annotations is None and config.datasets["folder"].images == tmp_path / "imgs"
    with pytest.raises(ConfigError, match=r"datasets\.folder\.annotations: an image-folder dataset has no annotations"):
        ServerConfig.from_dict({"datasets": {"folder": {"format": "image-folder", "images": "i", "annotations": "a.json"}}})
    with pytest.raises(ConfigError, match=r"datasets\.folder\.format: must be one of coco, image-folder, got 'voc'"):
        ServerConfig.from_dict({"datasets": {"folder": {"format": "voc", "images": "i"}}})
    with pytest.raises(ConfigError, match=r"datasets\.coco\.annotations: required"):
        ServerConfig.from_dict({"datasets": {"coco": {"format": "coco", "images": "i"}}})


def test_info_reports_every_limit_of_the_message_from_the_config() -> None:
    from dataclasses import fields

    from decal.proto import decal_pb2 as pb
    from decal.server.config import Limits
    from decal.server.stream_service import limits_message

    names = [field.name for field in pb.Limits.DESCRIPTOR.fields]
    assert set(names) <= {f.name for f in fields(Limits)}  # a new wire limit needs its config field
    limits = Limits(**{name: 1000 + i for i, name in enumerate(names)})
    message = limits_message(limits)
    assert [getattr(message, name) for name in names] == [1000 + i for i in range(len(names))]
