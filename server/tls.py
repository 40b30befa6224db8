"""The server's TLS material, checked before gRPC or uvicorn see it.

gRPC reports an unreadable or mismatched certificate as ``Failed to bind to address``, which
points at the port; here each problem is a :class:`~decal.server.config.ConfigError` naming
the config key and the file: missing or unreadable, not a PEM certificate, a key that is not
a key or does not match the certificate. The checks use the standard library's :mod:`ssl`
(OpenSSL), the library uvicorn serves the control plane with.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from .config import ConfigError, ServerConfig

__all__ = ["check_tls_files", "server_credentials"]


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"server.{key}: cannot read {path} ({error.strerror or error})") from None


def check_tls_files(config: ServerConfig) -> None:
    """Raise ConfigError naming the key and file if the certificate, key or client CA of
    ``config`` cannot serve TLS. No-op without TLS."""
    if not config.tls:
        return
    assert config.tls_cert is not None and config.tls_key is not None
    for key, path in (("tls_cert", config.tls_cert), ("tls_key", config.tls_key), ("tls_client_ca", config.tls_client_ca)):
        if path is not None:
            _read(path, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(config.tls_cert))
    except ssl.SSLError as error:
        raise ConfigError(f"server.tls_cert: {config.tls_cert} is not a PEM certificate ({error.reason or error})") from None
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except ssl.SSLError as error:
        reason = str(error.reason or error)
        if "MISMATCH" in reason.upper():
            raise ConfigError(f"server.tls_key: {config.tls_key} does not match the certificate {config.tls_cert}") from None
        raise ConfigError(f"server.tls_key: {config.tls_key} is not a PEM private key ({reason})") from None
    if config.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(config.tls_client_ca))
        except ssl.SSLError as error:
            raise ConfigError(f"server.tls_client_ca: {config.tls_client_ca} is not a PEM certificate ({error.reason or error})") from None


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """gRPC credentials of ``config``'s (checked) certificate, key and optional client CA."""
    check_tls_files(config)
    assert config.tls_cert is not None and config.tls_key is not None
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=config.tls_client_ca.read_bytes() if config.tls_client_ca else None,
        require_client_auth=config.tls_client_ca is not None,
    )
