"""The server's typed configuration, read from TOML (``decal serve --config server.toml``).

Example (every key optional except the dataset paths; relative paths are resolved against
the TOML file's folder)::

    [server]
    host = "0.0.0.0"          # default 127.0.0.1: loopback only until you say otherwise
    grpc_port = 50051
    http_port = 8080          # FastAPI control plane; 0 = an ephemeral port, -1 = off
    token_env = "DECAL_TOKEN" # or token_file = "/run/secrets/decal", or token = "..."
    tls_cert = "server.crt"   # TLS on the gRPC port when cert and key are both given
    tls_key = "server.key"
    tls_client_ca = "ca.crt"  # optional: require client certificates (mTLS)
    grace_seconds = 10        # SIGTERM: streams end at a batch boundary within this time
    include_sample = true     # register the embedded sample dataset as "sample"

    [pipeline]                # how the server runs each stream's DALI pipeline
    device = "auto"           # auto | cpu | gpu | cuda | cuda:N
    device_id = 0
    num_threads = 2
    prefetch_queue_depth = 2

    [limits]
    max_streams = 8
    max_batch_size = 64
    max_output_size = 2048
    max_num_pasted = 200
    max_message_bytes = 268435456
    prefetch_batches = 2      # encoded batches queued per stream (backpressure)
    max_stream_bytes = 8589934592  # estimated memory of one stream (see server/memory.py)

    [datasets.coco-train]
    annotations = "/data/coco/annotations/instances_train2017.json"
    images = "/data/coco/train2017"
    description = "COCO 2017 train"

    [datasets.imagenet-train] # an image folder without annotations: for the cutmix and
    format = "image-folder"   # cp2 pipelines, and as a self-training second set
    images = "/data/imagenet/train"

    [defaults.copy-paste]     # server-side defaults for parameters a client leaves unset
    output_size = 1024
    jitter = "lsj"

Unknown keys are errors (a typo must not silently fall back to a default): a
:class:`ConfigError` names the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..dali_pipes.core.backend import parse_device
from ..dali_pipes.core.options import ConfigError, OptionError

__all__ = ["ConfigError", "DatasetEntry", "Limits", "PipelineRuntime", "ServerConfig", "DATASET_NAME"]

#: What a dataset name may look like (and so what a request's ``dataset`` must match), used
#: with ``fullmatch`` (``$`` would accept a trailing newline).
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

SAMPLE_DATASET = "sample"
#: What ``[datasets.NAME] format`` may say: a COCO/LVIS json + images (the default), or an
#: image folder alone (the CutMix and CP² pipelines; a self-training second set).
DATASET_FORMATS = ("coco", "image-folder")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset the server may stream: a COCO/LVIS json and its image folder, or an image
    folder alone (``annotations`` None: the CutMix and CP² pipelines read it; CutMix needs a
    class-per-directory tree)."""

    name: str
    annotations: Path | None
    images: Path
    description: str = ""


@dataclass(frozen=True)
class Limits:
    """What one client may ask for."""

    max_streams: int = 8
    max_batch_size: int = 64
    max_output_size: int = 2048
    max_num_pasted: int = 200
    max_message_bytes: int = 256 * 1024 * 1024
    prefetch_batches: int = 2
    max_shards: int = 65536
    #: estimated bytes one stream may hold (scaled images and masks in flight, see
    #: decal.server.memory); larger requests get RESOURCE_EXHAUSTED before admission
    max_stream_bytes: int = 8 * 1024**3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"limits.{f.name}: must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class PipelineRuntime:
    """How the server runs each stream's pipeline (never chosen by clients)."""

    device: str = "auto"
    device_id: int = 0
    num_threads: int = 2
    prefetch_queue_depth: int = 2

    def __post_init__(self) -> None:
        try:  # decal's one device vocabulary; "cuda:N" also sets device_id
            parsed = parse_device(self.device, "pipeline.device")
        except OptionError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "device", parsed.kind)
        if parsed.index is not None:
            object.__setattr__(self, "device_id", parsed.index)
        for name in ("device_id", "num_threads", "prefetch_queue_depth"):
            value = getattr(self, name)
            minimum = 0 if name == "device_id" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"pipeline.{name}: must be an integer >= {minimum}, got {value!r}")

    def loader_options(self) -> dict[str, Any]:
        return {
            "device": None if self.device == "auto" else self.device,
            "device_id": self.device_id,
            "num_threads": self.num_threads,
            "prefetch_queue_depth": self.prefetch_queue_depth,
        }


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``decal serve`` needs."""

    datasets: Mapping[str, DatasetEntry] = field(default_factory=dict)
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    grace_seconds: float = 10.0
    include_sample: bool = False
    limits: Limits = field(default_factory=Limits)
    pipeline: PipelineRuntime = field(default_factory=PipelineRuntime)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, entry in self.datasets.items():
            if not DATASET_NAME.fullmatch(name):
                raise ConfigError(f"datasets.{name}: a dataset name must match {DATASET_NAME.pattern}")
        for key in ("grpc_port", "http_port"):
            value = getattr(self, key)
            low = -1 if key == "http_port" else 0
            if not isinstance(value, int) or not low <= value <= 65535:
                raise ConfigError(f"server.{key}: must be an integer in [{low}, 65535], got {value!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("server.tls_cert / server.tls_key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("server.tls_client_ca: needs server.tls_cert and server.tls_key")
        if self.token is not None and not self.token:
            raise ConfigError("server.token: empty token")
        if not self.grace_seconds >= 0:
            raise ConfigError(f"server.grace_seconds: must be >= 0, got {self.grace_seconds!r}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def with_sample(self) -> "ServerConfig":
        """This config with the embedded sample registered as ``sample`` (built on demand)."""
        if not self.include_sample or SAMPLE_DATASET in self.datasets:
            return self
        from ..dali_pipes.coco.sample_data import ensure_sample_dataset

        annotations, images = ensure_sample_dataset()
        entry = DatasetEntry(SAMPLE_DATASET, Path(annotations), Path(images), "decal's embedded sample (2 photos)")
        return replace(self, datasets={**self.datasets, SAMPLE_DATASET: entry})

    # -- TOML ------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path) -> "ServerConfig":
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror})") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from error
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str | Path = ".") -> "ServerConfig":
        base = Path(base_dir)
        _only(data, ("server", "pipeline", "limits", "datasets", "defaults"), "")
        server = dict(data.get("server", {}))
        _only(
            server,
            ("host", "grpc_port", "http_port", "token", "token_env", "token_file", "tls_cert", "tls_key",
             "tls_client_ca", "grace_seconds", "include_sample"),
            "server.",
        )  # fmt: skip
        token = _token(server)
        kwargs: dict[str, Any] = {k: server[k] for k in ("host", "grpc_port", "http_port", "grace_seconds", "include_sample") if k in server}
        for key in ("tls_cert", "tls_key", "tls_client_ca"):
            if key in server:
                kwargs[key] = _path(server[key], base, f"server.{key}")
        limits = data.get("limits", {})
        _only(limits, tuple(f.name for f in fields(Limits)), "limits.")
        runtime = data.get("pipeline", {})
        _only(runtime, tuple(f.name for f in fields(PipelineRuntime)), "pipeline.")
        datasets = {}
        for name, entry in dict(data.get("datasets", {})).items():
            if not isinstance(entry, Mapping):
                raise ConfigError(f"datasets.{name}: must be a table with 'annotations' and 'images'")
            _only(entry, ("annotations", "images", "description", "format"), f"datasets.{name}.")
            folder = entry.get("format", DATASET_FORMATS[0])
            if folder not in DATASET_FORMATS:
                raise ConfigError(f"datasets.{name}.format: must be one of {', '.join(DATASET_FORMATS)}, got {folder!r}")
            folder = folder == "image-folder"
            if folder and "annotations" in entry:
                raise ConfigError(f"datasets.{name}.annotations: an image-folder dataset has no annotations (drop the key or the format)")
            for key in ("images",) if folder else ("annotations", "images"):
                if key not in entry:
                    raise ConfigError(f"datasets.{name}.{key}: required")
            datasets[name] = DatasetEntry(
                name,
                None if folder else _path(entry["annotations"], base, f"datasets.{name}.annotations"),
                _path(entry["images"], base, f"datasets.{name}.images"),
                str(entry.get("description", "")),
            )
        defaults = {str(k): dict(v) for k, v in dict(data.get("defaults", {})).items()}
        return cls(
            datasets=datasets,
            token=token,
            limits=Limits(**limits),
            pipeline=PipelineRuntime(**runtime),
            defaults=defaults,
            **kwargs,
        )


def _only(table: Any, allowed: tuple[str, ...], prefix: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: must be a table")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(allowed)})")


def _path(value: Any, base: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a path string, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _token(server: Mapping[str, Any]) -> str | None:
    given = [k for k in ("token", "token_env", "token_file") if k in server]
    if len(given) > 1:
        raise ConfigError(f"server.{given[1]}: give only one of token, token_env, token_file")
    if not given:
        return None
    key = given[0]
    value = server[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"server.{key}: must be a non-empty string")
    if key == "token":
        return value
    if key == "token_env":
        token = os.environ.get(value)
        if not token:
            raise ConfigError(f"server.token_env: environment variable {value} is not set")
        return token
    try:
        token = Path(value).read_text().strip()
    except OSError as error:
        raise ConfigError(f"server.token_file: cannot read {value} ({error.strerror})") from error
    if not token:
        raise ConfigError(f"server.token_file: {value} is empty")
    return token
