"""`gpunet serve`: a GPUNet behind an HTTP endpoint on Ray Serve, with dynamic batching and a demo page.

    from gpunet.serve import ServeConfig, ServerOptions, start
    server = start(ServeConfig("gpunet_0", pretrained=True, max_batch_size=16), ServerOptions(port=8000))
    server.stop()

or composed into your own Ray Serve application:

    from ray import serve
    from gpunet.serve import ServeConfig, build_app
    serve.run(build_app(ServeConfig("gpunet_0", pretrained=True, device="cuda", replicas=2)), route_prefix="/gpunet")

Modules: `config` (settings), `inputs` (request bodies -> images or a 4xx), `engine` (the model
side: `Classifier`), `app` (the deployments and routes; needs Ray Serve), `server` (start/stop).
Importing this package needs neither Ray nor FastAPI; the functions below import them when called.
"""

from __future__ import annotations

from typing import Any

from gpunet.serve.config import ServeConfig, ServerOptions
from gpunet.serve.server import Server, check, start


def deployment(config: ServeConfig) -> Any:
    """The model's `ray.serve.Deployment` (replicas, resources, batching) to bind into your own application; its
    handle answers `classify_images.remote([image_bytes, ...], top_k)` (see `gpunet.serve.app.deployment`)."""
    from gpunet.serve.app import deployment as make

    return make(config)


def build_app(config: ServeConfig) -> Any:
    """The HTTP `ray.serve.Application` (routes, demo page, model replicas behind) for `serve.run`."""
    from gpunet.serve.app import build_app as make

    return make(config)


__all__ = ["ServeConfig", "ServerOptions", "Server", "build_app", "check", "deployment", "start"]
