"""``decal serve`` start-up: every config, certificate and bind problem is one line naming the
key, file or port, exit code 2, no traceback."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from coco_factory import write_coco_dataset
from decal.server import serve
from decal.server.config import DATASET_NAME, ConfigError, ServerConfig
from server_helpers import first_status, make_config, request, running_server, write_server_toml

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make test certificates")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_coco_dataset(tmp_path_factory.mktemp("synth"), num_images=2, seed=3)


def run_serve(capsys, *argv: str) -> tuple[int, str]:
    code = serve.main([*argv, "--device", "cpu", "--log-level", "ERROR"])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("decal serve: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = make_certificate(folder, "a")
    other_key, _ = make_certificate(folder, "b")
    garbage = folder / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return {"key": key, "cert": cert, "other_key": other_key, "garbage": garbage}


def busy_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    return listener


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port"])
def test_port_in_use(synth, tmp_path, capsys, flag: str) -> None:
    toml = write_server_toml(tmp_path / "server.toml", {"synth": synth})
    with busy_port() as listener:
        port = listener.getsockname()[1]
        other = "--http-port" if flag == "--grpc-port" else "--grpc-port"
        code, err = run_serve(capsys, "--config", str(toml), flag, str(port), other, "0")
    assert code == 2
    assert_one_line(err, f"127.0.0.1:{port}", flag[2:].replace("-", "_"))


@pytest.mark.parametrize(
    "tls, key, words",
    [
        ({"tls_cert": "missing.crt", "tls_key": "key"}, "tls_cert", ["missing.crt", "cannot read"]),
        ({"tls_cert": "garbage", "tls_key": "key"}, "tls_cert", ["garbage.crt", "not a PEM certificate"]),
        ({"tls_cert": "cert", "tls_key": "other_key"}, "tls_key", ["b.key", "does not match", "a.crt"]),
    ],
)
def test_certificate_problems_name_the_file(synth, tmp_path, capsys, certificates, tls, key, words) -> None:
    paths = {k: (certificates[v] if v in certificates else tmp_path / v) for k, v in tls.items()}
    extra = "\n".join(f'{k} = "{v}"' for k, v in paths.items())
    toml = write_server_toml(tmp_path / "server.toml", {"synth": synth}, extra)
    code, err = run_serve(capsys, "--config", str(toml), "--grpc-port", "0", "--http-port", "-1")
    assert code == 2
    assert_one_line(err, f"server.{key}", *words)
    assert "Failed to bind" not in err


def test_bad_pipeline_default_is_a_one_line_error(synth, tmp_path, capsys) -> None:
    toml = write_server_toml(tmp_path / "server.toml", {"synth": synth})
    toml.write_text(toml.read_text() + "\n[defaults.copy-paste]\nflip_prob = 7.0\n")
    code, err = run_serve(capsys, "--config", str(toml), "--grpc-port", "0", "--http-port", "-1")
    assert code == 2
    assert_one_line(err, "defaults.copy-paste", "flip_prob")


def test_dataset_names_with_a_trailing_newline_are_invalid(synth) -> None:
    assert DATASET_NAME.fullmatch("synth") and not DATASET_NAME.fullmatch("synth\n")
    with pytest.raises(ConfigError, match="datasets"):
        ServerConfig.from_dict({"datasets": {"synth\n": {"annotations": str(synth[0]), "images": str(synth[1])}}})
    with running_server(make_config({"synth": synth})) as server:
        code, details = first_status(server.grpc_address, request("synth\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("dataset:")
