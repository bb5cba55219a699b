"""What a `gpunet serve` endpoint is made of: the model and its limits (`ServeConfig`) and where it listens
(`ServerOptions`). Both are frozen and checked when made: a bad value is a `SettingError` naming the setting."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from gpunet.errors import SettingError

RUNTIMES = ("torch", "onnxruntime", "openvino")
DEFAULT_MAX_BYTES = 20 * 2**20
# Pillow's own decompression-bomb threshold (about 89.5 million pixels); above it Pillow only warns.
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def _positive(name: str, value: float, *, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not zero):
        raise SettingError(f"{name}: expected a {'non-negative' if zero else 'positive'} number, got {value!r}")


def _integer(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(f"{name}: expected a whole number, got {value!r}")


@dataclass(frozen=True)
class ServeConfig:
    """One served model: what `gpunet predict` would load (model, weights, runtime, device), how its
    replicas batch requests, and what a request may hold.

    `replicas` model replicas (each `cpus_per_replica` CPUs, `gpus_per_replica` GPUs on cuda)
    classify batches; `http_replicas` light replicas take the HTTP requests, decode and
    preprocess the images and send the tensors on. `max_batch_size=1` turns dynamic batching
    off. `threads` is each model replica's intra-op CPU thread count (default: its
    `cpus_per_replica`, at least 1).
    """

    model: str
    weights: str | None = None
    pretrained: bool = False
    random_weights: bool = False
    runtime: str | None = None
    device: str = "auto"
    amp: bool = False
    img_size: int | None = None
    labels: tuple[str, ...] | None = None
    top_k: int = 5
    replicas: int = 1
    http_replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float | None = None
    threads: int | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    max_ongoing_requests: int = 64
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 16
    drain_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", os.fspath(self.model))
        if self.weights is not None:
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise SettingError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        for name in ("top_k", "replicas", "http_replicas", "max_batch_size", "max_ongoing_requests", "max_bytes",
                     "max_pixels", "max_images"):
            _integer(name, getattr(self, name))
            _positive(name, getattr(self, name))
        for name in ("img_size", "threads"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name))
                _positive(name, getattr(self, name))
        _positive("cpus_per_replica", self.cpus_per_replica, zero=True)
        _positive("batch_wait_ms", self.batch_wait_ms, zero=True)
        _positive("drain_timeout_s", self.drain_timeout_s, zero=True)
        if self.gpus_per_replica is not None:
            _positive("gpus_per_replica", self.gpus_per_replica, zero=True)
        if self.max_ongoing_requests < self.max_batch_size:
            raise SettingError(f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least max_batch_size "
                               f"({self.max_batch_size}): a replica takes no more requests at once, so it could "
                               "never fill a batch")

    @property
    def uses_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def replica_threads(self) -> int:
        return self.threads or max(1, int(self.cpus_per_replica))

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServeConfig:
        """A config from plain values, as `serve run MODULE:app_builder key=value ...` passes them (all strings)
        or a Serve YAML config's `args:` does (typed); unknown keys are an error naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(fields))
        if unknown:
            raise SettingError(f"unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(fields)}")
        return cls(**{k: _convert(k, str(fields[k].type), v) for k, v in args.items()})


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _convert(name: str, annotation: str, value: Any) -> Any:
    """A string from the command line -> the field's type (other values pass through for the checks above)."""
    if not isinstance(value, str) or annotation.startswith("str"):
        return tuple(value) if name == "labels" and isinstance(value, list) else value
    text = value.strip()
    if annotation.startswith("bool"):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise SettingError(f"{name}: expected true or false, got {value!r}")
    if name == "labels":
        return tuple(line.strip() for line in text.split(","))
    try:
        return int(text) if annotation.startswith("int") else float(text)
    except ValueError:
        raise SettingError(f"{name}: expected a number, got {value!r}") from None


@dataclass(frozen=True)
class ServerOptions:
    """Where the endpoint runs: the HTTP address Serve's proxy binds, and the Ray cluster (a local one
    sized for the replicas unless `address` names a running cluster, e.g. "auto" after `ray start --head`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int = 256
    metrics_port: int | None = None
    app_name: str = "gpunet"
    route_prefix: str = "/"

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= 65535):
                raise SettingError(f"{name}: expected a TCP port 1-65535, got {value!r}")
        if self.num_cpus is not None:
            _integer("num_cpus", self.num_cpus)
            _positive("num_cpus", self.num_cpus)
        _integer("object_store_mb", self.object_store_mb)
        if self.object_store_mb < 80:
            raise SettingError(f"object_store_mb: Ray needs at least 80 MB, got {self.object_store_mb}")
        if not self.route_prefix.startswith("/"):
            raise SettingError(f"route_prefix: expected a path starting with '/', got {self.route_prefix!r}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.route_prefix.rstrip('/')}/"
