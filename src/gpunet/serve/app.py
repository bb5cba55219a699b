"""The Ray Serve application: HTTP replicas (FastAPI routes) in front of model replicas (batched inference).

    POST /v1/classify[?top_k=K]   raw image body (image/*, application/octet-stream) or multipart file parts
    GET  /v1/health               {"status": "ok"}
    GET  /v1/model                name, input size, classes, runtime, precision, limits
    GET  /openapi.json            the schema;  GET /  the demo page

An HTTP replica (`GPUNetServer`) checks the request, decodes and preprocesses each image with the
model's own transform and sends the tensor to a model replica (`GPUNetModel`), where `@serve.batch`
groups the images of concurrent requests up to `max_batch_size` within `batch_wait_ms`. A refused
request is a 4xx with `{"error": "<one line>"}`: nothing a client sends makes a 500. Each replica
is a Ray actor that Ray restarts when it dies; an image whose model replica died under it is sent
again (`RETRIES`), so the client sees the answer, or a 503 that says what happened.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which Serve's class wrapper
# would otherwise leave as unresolvable strings.
import asyncio
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from ray import serve
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException

from gpunet._version import __version__
from gpunet.serve.config import ServeConfig
from gpunet.serve.engine import Engine, Item, Transform, prepare
from gpunet.serve.inputs import MULTIPART, RequestError, Upload, check_headers, form_uploads, media_type, read_body


class TopKEntry(BaseModel):
    rank: int
    index: int
    class_id: str
    label: str
    prob: float


class ImageResult(BaseModel):
    source: str
    topk: list[TopKEntry]


class ClassifyResponse(BaseModel):
    model: str
    results: list[ImageResult]


class ErrorResponse(BaseModel):
    error: str


_IMAGE_BODY = {"type": "string", "format": "binary"}
_REQUEST_BODY = {"required": True, "content": {
    "image/*": {"schema": _IMAGE_BODY},
    "application/octet-stream": {"schema": _IMAGE_BODY},
    MULTIPART: {"schema": {"type": "object", "properties": {"image": {"type": "array", "items": _IMAGE_BODY}}}},
}}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why} for status, why in (
        (400, "empty body, not an image, truncated image, bad multipart body or parameter"),
        (413, "body over --max-bytes, image over --max-pixels, too many images"),
        (415, "a Content-Type that carries no image"))}

api = FastAPI(title="gpunet serve", version=__version__, docs_url=None, redoc_url=None,
              description="NVIDIA's GPUNet image classifiers on Ray Serve, with dynamic batching.")


@api.exception_handler(RequestError)
async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                        status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"bad request parameter: {where}"}, status_code=400)


RETRIES = 2  # times an image is sent again when its model replica dies under it


def demo_page(root_path: str) -> str:
    """The demo page (a package file, no external assets), its links relative to where the app is mounted."""
    page = resources.files("gpunet.serve").joinpath("static", "index.html").read_text(encoding="utf-8")
    return page.replace("{{BASE}}", root_path.rstrip("/") + "/", 1)


@serve.deployment(name="GPUNetModel")
class GPUNetModel:
    """A model replica: the model loaded once, and the batch queue in front of it."""

    def __init__(self, config: ServeConfig) -> None:
        torch.set_num_threads(config.replica_threads)  # this replica's own process
        self.config = config
        # Ray makes the GPU it assigned the only visible one
        self.engine = Engine(config, device="cuda" if config.uses_cuda else None)
        self.model_info = self.engine.info()
        batcher: Any = self.classify  # @serve.batch's setters
        batcher.set_max_batch_size(config.max_batch_size)
        batcher.set_batch_wait_timeout_s(config.batch_wait_ms / 1000.0)

    def info(self) -> dict[str, Any]:
        return self.model_info

    def transform(self) -> Transform:
        return self.engine.transform

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def classify(self, items: list[Item]) -> list[list[dict[str, Any]]]:
        """Preprocessed images of concurrent requests, in one forward pass (off the event loop)."""
        return await asyncio.to_thread(self.engine.classify, items)

    async def classify_images(self, images: Sequence[bytes], top_k: int | None = None) -> list[list[dict[str, Any]]]:
        """Top-k of each encoded image, for callers holding a handle to this deployment (decoded here)."""
        k = top_k or self.config.top_k
        uploads = [Upload(f"image {i}", bytes(b)) for i, b in enumerate(images)]
        tensors = await asyncio.to_thread(lambda: [self.engine.prepare(u) for u in uploads])
        return list(await asyncio.gather(*(self.classify((t, k)) for t in tensors)))


@serve.deployment(name="GPUNet")
@serve.ingress(api)
class GPUNetServer:
    """An HTTP replica: reads and checks requests, decodes and preprocesses images with the model's own
    transform, and sends the tensors to the model replicas (again, if the replica they went to died)."""

    async def __init__(self, config: ServeConfig, model: Any) -> None:  # type: ignore[misc]  # Ray awaits it
        """`model`: a handle to the model deployment, or the name of the application that serves it."""
        torch.set_num_threads(1)  # this replica's own process; decoding runs in threads
        self.config = config
        self.model = serve.get_app_handle(model) if isinstance(model, str) else model
        self.model_info = await self.model.info.remote()
        self.transform = await self.model.transform.remote()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(demo_page(request.scope.get("root_path", "")))

    @api.get("/v1/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/model")
    async def model_facts(self) -> dict[str, Any]:
        return self.model_info

    @api.post("/v1/classify", response_model=ClassifyResponse, responses=_REFUSALS,
              openapi_extra={"requestBody": _REQUEST_BODY})
    async def classify(self, request: Request, top_k: int | None = Query(
            None, ge=1, description="classes per image (default: the server's --top-k)")) -> dict[str, Any]:
        """Top-k classes of the image in the body, or of each file part of a multipart/form-data body."""
        cfg = self.config
        check_headers(request.headers, cfg.max_bytes)
        body = await read_body(request.stream(), cfg.max_bytes)
        if media_type(request.headers) == MULTIPART:
            uploads = await form_uploads(request.scope, body, cfg.max_images)
        else:
            uploads = [Upload("body", body)]
        k = top_k or cfg.top_k
        tensors = await asyncio.to_thread(lambda: [prepare(u, self.transform, cfg.max_pixels) for u in uploads])
        tops = await asyncio.gather(*(self._classify(t, k) for t in tensors))
        return {"model": self.model_info["name"],
                "results": [{"source": u.source, "topk": top} for u, top in zip(uploads, tops, strict=True)]}

    async def _classify(self, tensor: torch.Tensor, k: int) -> list[dict[str, Any]]:
        for attempt in range(RETRIES + 1):
            try:
                return cast(list[dict[str, Any]], await self.model.classify.remote((tensor, k)))
            except RayActorError:  # its model replica died; Ray is starting another, which the retry waits for
                if attempt == RETRIES:
                    raise RequestError(503, f"the model replica died {RETRIES + 1} times while classifying this "
                                            "image; Ray restarts replicas: retry shortly") from None
        raise AssertionError("unreachable")


def deployment(config: ServeConfig) -> Any:
    """The model deployment (a `ray.serve.Deployment`) with the config's replicas, resources and concurrency.
    Bound (`deployment(cfg).bind(cfg)`) inside your own application, its handle answers
    `await handle.classify_images.remote([jpeg_bytes, ...], top_k)`; `.options(...)` adjusts it further
    (e.g. an `autoscaling_config`)."""
    actor: dict[str, Any] = {"num_cpus": config.cpus_per_replica}
    if config.uses_cuda:
        actor["num_gpus"] = 1.0 if config.gpus_per_replica is None else config.gpus_per_replica
    return cast(Any, GPUNetModel).options(
        num_replicas=config.replicas, ray_actor_options=actor, max_ongoing_requests=config.max_ongoing_requests,
        graceful_shutdown_timeout_s=config.drain_timeout_s,
        graceful_shutdown_wait_loop_s=min(0.5, config.drain_timeout_s))


def _http_deployment(config: ServeConfig) -> Any:
    return cast(Any, GPUNetServer).options(
        num_replicas=config.http_replicas, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=config.max_ongoing_requests * config.replicas,
        graceful_shutdown_timeout_s=config.drain_timeout_s,
        graceful_shutdown_wait_loop_s=min(0.5, config.drain_timeout_s))


def build_app(config: ServeConfig) -> Any:
    """The HTTP application (a `ray.serve.Application`) for `serve.run`: HTTP replicas in front of the model's."""
    return _http_deployment(config).bind(config, deployment(config).bind(config))


def build_apps(config: ServeConfig, model_app: str) -> tuple[Any, Any]:
    """(model application, HTTP application calling it by name): run as two applications, the model one
    under the name `model_app` without a route, they stop in order (HTTP first), so in-flight requests
    drain through a model that is still there."""
    return deployment(config).bind(config), _http_deployment(config).bind(config, model_app)


def app_builder(args: dict[str, Any]) -> Any:
    """For Ray's own command line: `serve run gpunet.serve.app:app_builder model=gpunet_0 pretrained=true ...`."""
    return build_app(ServeConfig.from_args(args))


__all__ = ["GPUNetModel", "GPUNetServer", "api", "app_builder", "build_app", "build_apps", "demo_page", "deployment"]
