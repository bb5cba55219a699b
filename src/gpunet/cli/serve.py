"""`gpunet serve`: an HTTP endpoint for a model on Ray Serve until Ctrl-C or SIGTERM (then it drains and stops)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

from gpunet.cli.common import DEVICE_HELP, EXIT_OK, add_weights_arguments, err, warn_random
from gpunet.serve.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, RUNTIMES


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (Ray Serve, dynamic batching, demo page)",
                       description="Serve a model over HTTP on Ray Serve: POST /v1/classify, GET /v1/health, "
                                   "GET /v1/model, GET /openapi.json and a demo page at /. Runs until Ctrl-C or "
                                   "SIGTERM, which drain in-flight requests and stop.")
    p.add_argument("model", metavar="MODEL", help="zoo name, NVIDIA-format JSON, gpunet .safetensors, or an "
                                                  "exported .onnx / OpenVINO .xml (as `gpunet predict` accepts)")
    add_weights_arguments(p)
    p.add_argument("--runtime", choices=RUNTIMES, help="what runs the model (default: torch for a model, by file "
                                                       "type for an exported file)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; on cuda each replica gets a GPU from Ray")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: ImageNet-1k for 1000 "
                                                     "classes)")
    p.add_argument("--top-k", "-k", type=int, default=5, help="classes per image unless a request asks (?top_k=)")
    g = p.add_argument_group("replicas and batching")
    g.add_argument("--replicas", type=int, default=1, help="model replicas (Ray actors)")
    g.add_argument("--http-replicas", type=int, default=1, help="replicas that take HTTP requests and decode images")
    g.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves for each replica; "
                                                                       "also its thread count (default 1)")
    g.add_argument("--gpus-per-replica", type=float, help="GPUs per replica on cuda (default 1; 0.5 shares one)")
    g.add_argument("--max-batch-size", type=int, default=8, help="images classified together at most "
                                                                 "(1: dynamic batching off)")
    g.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5)")
    g.add_argument("--max-ongoing-requests", type=int, default=64, help="requests a replica holds at once; more "
                                                                        "wait in Serve's queue")
    g.add_argument("--drain-timeout", type=float, default=10.0, help="seconds in-flight requests get on shutdown")
    lim = p.add_argument_group("request limits (over them: 413)")
    lim.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="request body size (default 20 MiB)")
    lim.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                     help="pixels of one image, read from its header before decoding (default: Pillow's "
                          "decompression-bomb limit)")
    lim.add_argument("--max-images", type=int, default=16, help="images in one multipart request")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--address", help="a running Ray cluster (e.g. auto after `ray start --head`); default: a "
                                       "local one for this command")
    ray.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: this machine's, or "
                                                  "what the replicas need)")
    ray.add_argument("--metrics-port", type=int, help="export Ray's Prometheus metrics on this port (local Ray)")
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace) -> tuple[Any, Any]:
    from gpunet.labels import read_labels_file
    from gpunet.serve.config import ServeConfig, ServerOptions

    labels = tuple(read_labels_file(args.labels)) if args.labels else None
    config = ServeConfig(
        args.model, weights=args.weights, pretrained=args.pretrained, random_weights=args.random_weights,
        runtime=args.runtime, device=args.device, amp=args.amp, img_size=args.img_size, labels=labels,
        top_k=args.top_k, replicas=args.replicas, http_replicas=args.http_replicas,
        cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms, max_ongoing_requests=args.max_ongoing_requests, max_bytes=args.max_bytes,
        max_pixels=args.max_pixels, max_images=args.max_images, drain_timeout_s=args.drain_timeout)
    options = ServerOptions(host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus,
                            metrics_port=args.metrics_port)
    return config, options


def run(args: argparse.Namespace) -> int:
    from gpunet.serve import check, start

    config, options = _configs(args)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # this process's Ray sends no usage data
    if args.random_weights:
        warn_random(args.model, "its labels and probabilities are")
    info = check(config)  # a bad model, weights or setting fails here, before Ray starts
    batching = f"batches of up to {config.max_batch_size} within {config.batch_wait_ms:g} ms" \
        if config.max_batch_size > 1 else "batching off"
    err(f"gpunet: starting Ray Serve: {info['name']} ({info['weights']}; {info['runtime']}, {info['precision']}, "
        f"{info['input_size'][-1]} px), {config.replicas} model replica{'s' if config.replicas != 1 else ''}, "
        f"{batching}")
    server = start(config, options)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # after ray.init, which sets its own
    url = server.url
    metrics = f", metrics http://{options.host}:{options.metrics_port}/metrics" if options.metrics_port else ""
    err(f"gpunet: serving at {url} (demo page; API {url}v1/classify, {url}v1/model, {url}v1/health, "
        f"{url}openapi.json{metrics}). Ctrl-C or SIGTERM stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        err(f"gpunet: stopping: draining in-flight requests (up to {config.drain_timeout_s:g} s)")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    err("gpunet: stopped")
    return EXIT_OK
