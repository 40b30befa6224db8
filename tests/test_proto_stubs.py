"""The checked-in stubs match proto/decal.proto and import with the installed runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from decal.proto import regenerate

PROTO_DIR = Path(regenerate.__file__).resolve().parent


def test_regenerating_gives_the_checked_in_files(tmp_path: Path) -> None:
    fresh = regenerate.generate(tmp_path)
    for name, text in fresh.items():
        checked_in = (PROTO_DIR / name).read_text()
        assert checked_in == text, f"proto/{name} is stale: run `python -m decal.proto.regenerate`"


def test_checked_in_descriptor_is_the_proto(tmp_path: Path) -> None:
    """Independent of generator versions: protoc's descriptor of decal.proto equals the one
    embedded in decal_pb2."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "decal.desc"
    assert protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", str(PROTO_DIR / "decal.proto")]) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    from decal.proto import decal_pb2

    embedded = descriptor_pb2.FileDescriptorProto.FromString(decal_pb2.DESCRIPTOR.serialized_pb)
    for message in fresh.message_type:  # protoc adds json_name; the python gencode omits it
        _strip_json_names(message)
    assert embedded == fresh


def _strip_json_names(message) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _strip_json_names(nested)


def test_stubs_import_in_a_clean_interpreter() -> None:
    code = (
        "import warnings; warnings.simplefilter('error');"
        "from decal.proto import decal_pb2, decal_pb2_grpc;"
        "assert decal_pb2.DESCRIPTOR.package == 'decal.v1';"
        "assert hasattr(decal_pb2_grpc, 'BatchServiceStub')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_check_mode_reports_current() -> None:
    assert regenerate.main(["--check"]) == 0


@pytest.mark.parametrize("name", ["StreamRequest", "StreamResponse", "Batch", "Tensor", "InfoReply"])
def test_messages_round_trip(name: str) -> None:
    from decal.proto import decal_pb2

    message = getattr(decal_pb2, name)()
    assert type(message).FromString(message.SerializeToString()) == message
