"""Starting and stopping a served model: Ray (a small local instance, or a running cluster), Serve's HTTP
proxy on the requested address, and the GPUNet application; `Server.stop()` drains and shuts it all down.

    server = start(ServeConfig("gpunet_0", pretrained=True), ServerOptions(port=8000))
    ...                      # http://127.0.0.1:8000/v1/classify
    server.stop()

`check` loads the model once in the calling process first, so a bad setting, missing weights or
an unfit checkpoint is a one-line error before any Ray process starts.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

from gpunet._optional import require
from gpunet.errors import SettingError
from gpunet.serve.config import ServeConfig, ServerOptions

# Serve's own logs: warnings and errors only (no access log line per request).
LOGGING = {"log_level": "WARNING", "enable_access_log": False}
_NEEDS = "gpunet serve needs Ray Serve and python-multipart"


def check(config: ServeConfig) -> dict[str, Any]:
    """Load the model here as a replica will (same refusals as `gpunet predict`); its `/v1/model` facts.

    "auto" is resolved to the device this machine has, so replicas ask Ray for a GPU when there is one.
    """
    from gpunet.device import resolve_device
    from gpunet.serve.engine import Engine

    require("ray.serve", _NEEDS, "serve")
    require("python_multipart", _NEEDS, "serve")
    return Engine(config, device=str(resolve_device(config.device))).info()


def resolved(config: ServeConfig) -> ServeConfig:
    """`config` with device "auto" made concrete ("cuda" or "cpu") for the replicas."""
    from gpunet.device import resolve_device

    if config.device != "auto":
        return config
    return dataclasses.replace(config, device=resolve_device("auto").type)


def _check_port(host: str, port: int) -> None:
    """A clear error now rather than a proxy that cannot bind later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SettingError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                               f"{_listen_advice(exc)}") from None


def _listen_advice(exc: OSError) -> str:
    """What to change when binding failed: the port (taken, privileged) or the host (not this machine's)."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ("choose another --host: an address of this machine (127.0.0.1 for this machine only, 0.0.0.0 for "
                "every interface)")
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges: choose a --port above 1023"
    return "choose another --port"


def _ray_init_kwargs(config: ServeConfig, options: ServerOptions) -> dict[str, Any]:
    common: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, "namespace": "gpunet"}
    if options.address is not None:
        return {"address": options.address, **common}
    import torch

    needed = math.ceil(config.replicas * config.cpus_per_replica)
    kwargs = {"address": "local", "num_cpus": options.num_cpus or max(os.cpu_count() or 1, needed),
              "num_gpus": torch.cuda.device_count() if config.uses_cuda else 0,
              "object_store_memory": options.object_store_mb * 2**20, **common}
    if options.metrics_port is not None:
        kwargs["_metrics_export_port"] = options.metrics_port
    return kwargs


@dataclass
class Server:
    """A running endpoint: the model and the HTTP replicas as two Serve applications (`app_name`-model and
    `app_name`). `stop()` deletes the HTTP one first, whose replicas finish the requests they hold (up to
    the config's `drain_timeout_s`), then the model one, then shuts down Serve and Ray when `start`
    started them (on a cluster only the two applications go)."""

    options: ServerOptions
    owns_ray: bool
    stopped: bool = False

    @property
    def url(self) -> str:
        return self.options.url

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        import ray
        from ray import serve

        try:
            serve.delete(self.options.app_name)  # HTTP replicas finish their requests, with the model still up
            serve.delete(model_app_name(self.options))
            if self.owns_ray:
                serve.shutdown()
        finally:
            ray.shutdown()


def model_app_name(options: ServerOptions) -> str:
    return f"{options.app_name}-model"


def start(config: ServeConfig, options: ServerOptions | None = None) -> Server:
    """Start Ray (local unless `options.address`), Serve's proxy on host:port, and the application."""
    options = options or ServerOptions()
    ray = require("ray", _NEEDS, "serve")
    serve = require("ray.serve", _NEEDS, "serve")
    from gpunet.serve.app import build_apps

    if options.address is None:
        _check_port(options.host, options.port)
        if options.metrics_port is not None:
            _check_port(options.host, options.metrics_port)
    ray.init(**_ray_init_kwargs(config, options))
    server = Server(options, owns_ray=options.address is None)
    try:
        serve.start(http_options={"host": options.host, "port": options.port}, proxy_location="HeadOnly",
                    logging_config=LOGGING)
        model_app, http_app = build_apps(resolved(config), model_app_name(options))
        serve.run(model_app, name=model_app_name(options), route_prefix=None, logging_config=LOGGING)
        serve.run(http_app, name=options.app_name, route_prefix=options.route_prefix, logging_config=LOGGING)
    except BaseException:
        server.stop()
        raise
    return server
