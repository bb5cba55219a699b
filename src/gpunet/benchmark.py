"""`gpunet benchmark`: latency, throughput and achieved GFLOP/s of GPUNets (and timm peers) per backend.

Backends (each skipped with a reason where it cannot run):

* `eager`            the model as built: BatchNorm unfused, contiguous NCHW (the baseline)
* `fused`            `optimize_for_inference(model)`: BN folded, channels_last (the fastest eager path)
* `fused-microbatch` (CPU) `optimize_for_inference(model, micro_batch=1)`: the fused model one image at a
                     time (the high-resolution activations stay in cache; the fastest CPU path at batch > 1)
* `compile`          `optimize_for_inference(model, compile=True)`: torch.compile (inductor; CPU: weight
                     freezing; CUDA: CUDA graphs via mode="reduce-overhead")
* `cudagraph`        (CUDA) the fused model replayed as one captured CUDA graph
* `onnxruntime`      `gpunet.export.export_onnx` + `onnx_session` (fp32; fp16 on CUDA)
* `onnxruntime-int8` `gpunet.quantize.quantize_onnx` (static INT8; calibration images from
                     --calibration-dir, else synthetic ones: fine for speed, not for accuracy)
* `openvino`         (CPU) `gpunet.export.openvino_model` on the exported ONNX, static batch shape, inference
                     precision pinned to the benchmarked one (f32 for fp32, bf16 for bf16); when openvino is installed
* `openvino-int8`    (CPU) the INT8 QDQ model of `onnxruntime-int8`, run by OpenVINO
* `tensorrt`         (CUDA) a TensorRT engine from `gpunet.export.export_tensorrt`, when tensorrt is installed

Timing: `torch.inference_mode`, `--warmup` untimed calls, then `--repeats` rounds; each round
times one call of every backend (interleaved, so a noisy neighbour hits all alike), with
`time.perf_counter` and CUDA synchronisation. On CPU each timed call follows a `--settle-ms`
pause: the runtimes' worker threads spin for a while after a call, and without the pause the
backend timed next runs on cores they still occupy (measured: OpenVINO 92 ms right after ONNX
Runtime, 68 ms after a 50 ms pause). Reported: median/p90/p99 latency, images/s =
batch / median, achieved GFLOP/s = 2 * MACs * batch / median (MACs: `gpunet.info.count_macs`),
and its share of a peak measured in the same run: the median GFLOP/s of a large matrix multiply
(2048^3, same device, threads and dtype). On CPU the peak is the faster of `torch.matmul` and the
same GEMM through oneDNN (a 1x1 convolution), since convolutions run on oneDNN, not on the BLAS
behind matmul; both are recorded.
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import importlib
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpunet._io import atomic_write, atomic_write_bytes

BACKENDS = ("eager", "fused", "fused-microbatch", "compile", "cudagraph", "onnxruntime", "onnxruntime-int8", "openvino",
            "openvino-int8", "tensorrt")
DEFAULT_BACKENDS = "eager,fused,compile,onnxruntime,openvino"
PER_BATCH_BACKENDS = ("cudagraph", "tensorrt", "openvino", "openvino-int8")  # built for one input shape
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PEAK_SIZE = 2048
EXIT_OK, EXIT_USAGE = 0, 2

Runner = Callable[[torch.Tensor], Any]


class BenchmarkError(Exception):
    """A usage error (unknown model/backend/precision)."""


@dataclass
class Record:
    model: str
    backend: str
    precision: str
    batch: int
    img_size: int
    threads: int
    device: str
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    images_per_s: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None
    peak_share: float | None = None
    macs: int | None = None
    top1: float | None = None
    repeats: int = 0
    skipped: bool = False
    reason: str = ""
    note: str = ""
    times_ms: list[float] = field(default_factory=list)


CSV_FIELDS = [f for f in Record.__dataclass_fields__ if f != "times_ms"]


class Skip(Exception):
    """A backend that cannot run here; the message is the reason."""


# ---------------------------------------------------------------------------- argument parsing

def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `gpunet benchmark`."""
    parser.add_argument("--models", default="gpunet_d1",
                        help="comma-separated zoo names, or 'all' (default gpunet_d1)")
    parser.add_argument("--peers", default="",
                        help="comma-separated timm models to compare, as timm:NAME (random weights, their own "
                             "input size unless --img-size), e.g. timm:efficientnet_b3,timm:resnet50")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS,
                        help=f"comma-separated, from {','.join(BACKENDS)} (default {DEFAULT_BACKENDS}); "
                             "unavailable ones are skipped with a reason")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="default 1,8,32")
    parser.add_argument("--precision", default="fp32", help="comma-separated from fp32,bf16,fp16 (default fp32)")
    parser.add_argument("--img-size", type=int, default=None, help="input resolution (default: each model's)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and ONNX Runtime (default: torch's current setting)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per backend (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per backend (default 20)")
    parser.add_argument("--settle-ms", type=float, default=50.0,
                        help="CPU: idle pause before each timed call, so the spinning worker threads of the "
                             "previous backend's runtime (OpenMP, ONNX Runtime, OpenVINO) do not steal the cores "
                             "of the next one (default 50; 0 disables)")
    parser.add_argument("--calibration-dir", default=None,
                        help="images for the int8 backends' calibration (default: synthetic images)")
    parser.add_argument("--output", "-o", default=None,
                        help="output folder for results.json, results.csv and perf_*.png "
                             "(default ./benchmark/<timestamp>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return parser


# ---------------------------------------------------------------------------- timing helpers

def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _time_call(fn: Callable[[], Any], device: torch.device) -> float:
    sync_device(device)
    t0 = time.perf_counter()
    fn()
    sync_device(device)
    return time.perf_counter() - t0


def measure_peak(device: torch.device, dtype: torch.dtype, *, size: int = PEAK_SIZE,
                 repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of a size^3 matrix multiply on `device`/`dtype` (median over repeats).

    On CPU also the same GEMM as a oneDNN 1x1 convolution; `peak` is the faster of the two.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    flops = 2.0 * size ** 3
    x = a.t().contiguous().reshape(1, size, size // 32, 32).contiguous(memory_format=torch.channels_last)
    w = b.t().contiguous().reshape(size, size, 1, 1)

    def matmul() -> torch.Tensor:
        return torch.matmul(a, b)

    def onednn_gemm() -> torch.Tensor:  # the same GEMM as a 1x1 convolution (oneDNN, like the network's)
        return torch.nn.functional.conv2d(x, w)

    candidates: dict[str, Callable[[], Any]] = {"matmul": matmul}
    if device.type == "cpu":
        candidates["onednn_gemm"] = onednn_gemm
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    with torch.inference_mode():
        for fn in candidates.values():
            for _ in range(2):
                fn()
        for _ in range(repeats):
            for k, fn in candidates.items():
                samples[k].append(_time_call(fn, device))
    out = {f"{k}_gflops": flops / statistics.median(v) / 1e9 for k, v in samples.items()}
    out["peak_gflops"] = max(out.values())
    return out


# ---------------------------------------------------------------------------- models and backends

@dataclass
class ModelSpec:
    name: str
    img_size: int
    macs: int
    top1: float | None
    build: Callable[[], nn.Module]
    is_gpunet: bool


def resolve_models(models: str, peers: str, img_size: int | None) -> list[ModelSpec]:
    from gpunet.info import count_macs
    from gpunet.zoo import create_model, get_architecture, get_pretrained_config, list_models

    names = list_models() if models.strip() == "all" else _csv_list(models)
    specs: list[ModelSpec] = []
    for name in names:
        if name.startswith("timm:"):
            peers = f"{peers},{name}"
            continue
        try:
            arch = get_architecture(name)
        except ValueError as e:
            raise BenchmarkError(str(e)) from None
        size = img_size or arch.img_resolution
        specs.append(ModelSpec(name, size, count_macs(name, size), get_pretrained_config(name).top1,
                               functools.partial(create_model, name), True))
    for peer in _csv_list(peers):
        if not peer.startswith("timm:"):
            raise BenchmarkError(f"peer {peer!r}: expected timm:NAME, e.g. timm:efficientnet_b3")
        specs.append(_timm_spec(peer[len("timm:"):], img_size))
    if not specs:
        raise BenchmarkError("no models to benchmark")
    return specs


def _timm_spec(name: str, img_size: int | None) -> ModelSpec:
    import timm

    from gpunet.info import count_macs

    try:
        with torch.device("meta"):
            meta = timm.create_model(name, pretrained=False).eval()
    except Exception as e:  # noqa: BLE001  (unknown name -> usage error)
        raise BenchmarkError(f"peer timm:{name}: {e}") from None
    cfg = dict(getattr(meta, "pretrained_cfg", None) or {})
    size = img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    top1 = cfg.get("top1")
    return ModelSpec(f"timm:{name}", size, count_macs(meta, size),
                     float(top1) if isinstance(top1, (int, float)) else None,
                     lambda: timm.create_model(name, pretrained=False).eval(), False)


def _export_module() -> Any:
    try:
        import gpunet.export as export
    except ImportError:
        raise Skip("gpunet.export not available") from None
    return export


def _onnx_path(spec: ModelSpec, model: nn.Module, workdir: Path, fp16: bool) -> Path:
    export = _export_module()
    path = workdir / f"{spec.name.replace(':', '_')}_{spec.img_size}{'_fp16' if fp16 else ''}.onnx"
    if not path.exists():
        export.export_onnx(copy.deepcopy(model).float().cpu(), path, img_size=spec.img_size, batch="dynamic",
                           fp16=fp16, fuse=spec.is_gpunet, check=False)
    return path


def _synthetic_calibration(workdir: Path, img_size: int, n: int = 8) -> Path:
    from PIL import Image

    folder = workdir / "calibration"
    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = torch.randint(0, 256, (img_size, img_size, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"synthetic_{i}.png")
    return folder


def _int8_onnx_path(fp32_path: Path, spec: ModelSpec, args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    """The static INT8 QDQ model of `fp32_path` (made once per run) and a note on its calibration."""
    try:
        import gpunet.quantize as quantize
    except ImportError:
        raise Skip("gpunet.quantize not available") from None
    calib, note = args.calibration_dir, ""
    if calib is None:
        calib = _synthetic_calibration(workdir, spec.img_size)
        note = ", synthetic calibration (speed only)"
    qpath = workdir / f"{fp32_path.stem}_int8.onnx"
    if not qpath.exists():
        quantize.quantize_onnx(fp32_path, qpath, calib, num_images=8 if args.calibration_dir is None else 128,
                               img_size=spec.img_size)
    return qpath, note


def _openvino_runner(compiled: Any) -> Runner:
    """Feeds float32 (numpy has no bfloat16): OpenVINO computes in the precision it was compiled for."""
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> Any:
        return request.infer(x.detach().cpu().float().numpy(), share_inputs=True)

    return run


def _ort_runner(session: Any, device: torch.device, fp16: bool) -> Runner:
    import numpy as np

    def run(x: torch.Tensor) -> Any:
        arr = x.detach().cpu().numpy()
        return session.run(["logits"], {"images": arr.astype(np.float16) if fp16 else arr})

    return run


def build_runner(backend: str, spec: ModelSpec, base: nn.Module, precision: str, device: torch.device,
                 args: argparse.Namespace, workdir: Path, example: torch.Tensor) -> tuple[Runner, str, bool]:
    """-> (callable taking the input batch, a note, whether it wants channels_last input). Raises Skip."""
    dtype = PRECISIONS[precision]
    if device.type == "cpu" and precision == "fp16":
        raise Skip("fp16 on CPU: no fast kernels in PyTorch's CPU backend (use bf16)")
    if backend == "eager":
        m = copy.deepcopy(base).to(device=device, dtype=dtype).eval()
        return m, "unfused, contiguous NCHW", False
    if backend == "fused-microbatch":
        if device.type != "cpu":
            raise Skip("fused-microbatch is a CPU technique (cache blocking); on CUDA use fused/cudagraph")
        if not spec.is_gpunet:
            raise Skip("fused-microbatch: GPUNets only")
        from gpunet.deploy import optimize_for_inference

        m = optimize_for_inference(copy.deepcopy(base), dtype=dtype, micro_batch=1)
        return m, "optimize_for_inference(micro_batch=1): fused, channels_last, one image at a time", True
    if backend in ("fused", "compile", "cudagraph"):
        if not spec.is_gpunet:
            m = copy.deepcopy(base).eval()
            m = m.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
            note = "channels_last (timm model: no BN folding)"
            if backend == "compile":
                return _compile_peer(m, device), note + ", torch.compile", True
            if backend == "cudagraph":
                return _cuda_graph(m, device, example), note + ", CUDA graph", True
            return m, note, True
        from gpunet.deploy import optimize_for_inference

        m = copy.deepcopy(base).to(device)
        if backend == "compile":
            _check_compile(device)
            m = optimize_for_inference(m, dtype=dtype, compile=True)
            mode = "reduce-overhead (CUDA graphs)" if device.type == "cuda" else "inductor, freezing"
            return m, f"optimize_for_inference(compile=True): {mode}", True
        m = optimize_for_inference(m, dtype=dtype)
        if backend == "cudagraph":
            return _cuda_graph(m, device, example), "fused + channels_last + CUDA graph", True
        return m, "optimize_for_inference: BN folded, channels_last", True
    if backend in ("onnxruntime", "onnxruntime-int8"):
        export = _export_module()
        fp16 = precision == "fp16"
        if backend == "onnxruntime-int8":
            if precision != "fp32":
                raise Skip("onnxruntime-int8 runs from the fp32 model: use --precision fp32")
        elif precision == "bf16":
            raise Skip("onnxruntime: no bf16 convolution kernels (fp32, or fp16 on CUDA)")
        elif fp16 and device.type != "cuda":
            raise Skip("onnxruntime fp16 needs CUDA")
        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        import onnxruntime as ort

        if providers[0] not in ort.get_available_providers():
            raise Skip(f"onnxruntime: {providers[0]} not available (have {ort.get_available_providers()})")
        path = _onnx_path(spec, base, workdir, fp16)
        note = f"{providers[0]}"
        if backend == "onnxruntime-int8":
            path, calibration = _int8_onnx_path(path, spec, args, workdir)
            note += calibration
        session = export.onnx_session(path, threads=args.threads, providers=providers)
        return _ort_runner(session, device, fp16), note, False
    if backend in ("openvino", "openvino-int8"):
        export = _export_module()
        if device.type != "cpu":
            raise Skip(f"{backend}: CPU only here (OpenVINO's GPU plugin is for Intel GPUs)")
        if not export.openvino_available():
            raise Skip("the openvino Python package is not installed (pip install 'gpunet[openvino]')")
        if backend == "openvino-int8" and precision != "fp32":
            raise Skip("openvino-int8 runs from the fp32 model: use --precision fp32")
        path = _onnx_path(spec, base, workdir, False)
        note = f"OpenVINO CPU, {export.OPENVINO_PRECISIONS[precision]} inference precision"
        if backend == "openvino-int8":
            path, calibration = _int8_onnx_path(path, spec, args, workdir)
            note = "OpenVINO CPU, the INT8 QDQ model of onnxruntime-int8" + calibration
        compiled = export.openvino_model(path, precision=precision, threads=args.threads, batch=example.shape[0])
        return _openvino_runner(compiled), note, False
    if backend == "tensorrt":
        if device.type != "cuda":
            raise Skip("tensorrt needs CUDA")
        export = _export_module()
        if not export.tensorrt_available():
            raise Skip("the tensorrt Python package is not installed")
        if precision == "bf16":
            raise Skip("tensorrt backend: fp32 or fp16")
        return _tensorrt_runner(export, spec, base, device, workdir, example, fp16=precision == "fp16")
    raise BenchmarkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def _tensorrt_runner(export: Any, spec: ModelSpec, base: nn.Module, device: torch.device, workdir: Path,
                     example: torch.Tensor, *, fp16: bool) -> tuple[Runner, str, bool]:
    """A TensorRT engine (gpunet.export.export_tensorrt, max batch = this batch) run on torch CUDA tensors."""
    import tensorrt as trt

    batch = example.shape[0]
    path = workdir / f"{spec.name.replace(':', '_')}_{spec.img_size}_b{batch}{'_fp16' if fp16 else ''}.plan"
    export.export_tensorrt(copy.deepcopy(base).float().cpu(), path, img_size=spec.img_size, fp16=fp16, batch=batch)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    context.set_input_shape("images", tuple(example.shape))
    out_dtype = torch.float16 if engine.get_tensor_dtype("logits") == trt.DataType.HALF else torch.float32
    in_dtype = torch.float16 if engine.get_tensor_dtype("images") == trt.DataType.HALF else torch.float32
    out = torch.empty(tuple(context.get_tensor_shape("logits")), device=device, dtype=out_dtype)
    static_in = torch.empty(tuple(example.shape), device=device, dtype=in_dtype)
    context.set_tensor_address("images", static_in.data_ptr())
    context.set_tensor_address("logits", out.data_ptr())

    keep_alive = (runtime, engine)  # the context needs its engine

    def run(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(x)
        context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream)
        assert keep_alive
        return out

    return run, f"TensorRT {trt.__version__} engine{' (fp16)' if fp16 else ''}", False


def _check_compile(device: torch.device) -> None:
    if not hasattr(torch, "compile"):
        raise Skip("torch.compile is not available in this PyTorch")
    if device.type == "cpu":
        import shutil

        if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
            raise Skip("torch.compile on CPU needs a C++ compiler (none found)")


def _compile_peer(m: nn.Module, device: torch.device) -> nn.Module:
    _check_compile(device)
    if device.type == "cuda":
        return torch.compile(m, mode="reduce-overhead")  # type: ignore[return-value]
    return torch.compile(m, options={"freezing": True})  # type: ignore[return-value]


def _cuda_graph(m: nn.Module, device: torch.device, example: torch.Tensor) -> Runner:
    if device.type != "cuda":
        raise Skip("cudagraph needs CUDA")
    from gpunet.deploy import capture_cuda_graph

    return capture_cuda_graph(m, example.to(memory_format=torch.channels_last))


# ---------------------------------------------------------------------------- the run

def _log(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda: CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise BenchmarkError(f"--device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    return device


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "threads": threads,
        "device": str(device), "onednn": torch.backends.mkldnn.is_available(),
    }
    for package in ("onnxruntime", "openvino"):
        try:
            info[package] = importlib.import_module(package).__version__
        except ImportError:
            info[package] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the configured benchmark; return {"header": ..., "records": [...]} (nothing written)."""
    backends = _csv_list(args.backends)
    for b in backends:
        if b not in BACKENDS:
            raise BenchmarkError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    precisions = _csv_list(args.precision)
    for p in precisions:
        if p not in PRECISIONS:
            raise BenchmarkError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    if args.repeats < 1 or args.warmup < 0:
        raise BenchmarkError("--repeats must be >= 1 and --warmup >= 0")
    device = _resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise BenchmarkError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    specs = resolve_models(args.models, args.peers, args.img_size)

    _log(args, f"gpunet benchmark: device {device}, {threads} threads; measuring the matmul peak")
    peaks = {p: measure_peak(device, PRECISIONS[p]) for p in precisions
             if not (device.type == "cpu" and p == "fp16")}
    header = {"machine": machine_info(device, threads), "peak": peaks, "peak_size": PEAK_SIZE,
              "warmup": args.warmup, "repeats": args.repeats, "settle_ms": args.settle_ms, "backends": backends,
              "batch_sizes": args.batch_sizes, "precisions": precisions,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="gpunet-bench-") as tmp:
        workdir = Path(tmp)
        for spec in specs:
            base = spec.build().eval()
            for precision in precisions:
                peak = peaks.get(precision, {}).get("peak_gflops")
                records.extend(_bench_model(spec, base, precision, device, threads, backends, args, workdir,
                                            peak))
            del base
    _log(args, "gpunet benchmark: done")
    return {"header": header, "records": [asdict(r) for r in records]}


def _bench_model(spec: ModelSpec, base: nn.Module, precision: str, device: torch.device, threads: int,
                 backends: list[str], args: argparse.Namespace, workdir: Path, peak: float | None) -> list[Record]:
    dtype = PRECISIONS[precision]
    out: list[Record] = []
    runners: dict[str, tuple[Runner, str, bool] | str] = {}
    for batch in args.batch_sizes:
        def record(backend: str, batch: int = batch) -> Record:
            return Record(spec.name, backend, precision, batch, spec.img_size, threads, str(device),
                          macs=spec.macs, top1=spec.top1)

        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 3, spec.img_size, spec.img_size, generator=g).to(device=device, dtype=dtype)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        active: dict[str, tuple[Runner, torch.Tensor]] = {}
        recs: dict[str, Record] = {}
        for backend in backends:
            rec = record(backend)
            recs[backend] = rec
            key = f"{backend}@{batch}" if backend in PER_BATCH_BACKENDS else backend
            try:
                if key not in runners:
                    try:
                        _log(args, f"  building {spec.name} {backend} {precision}")
                        runners[key] = build_runner(backend, spec, base, precision, device, args, workdir, x)
                    except Skip as e:
                        runners[key] = str(e)
                built = runners[key]
                if isinstance(built, str):
                    raise Skip(built)
                fn, note, wants_cl = built
                rec.note = note
                inp = x_cl if wants_cl else x
                with torch.inference_mode():
                    for _ in range(max(args.warmup, 1)):
                        fn(inp)
                    sync_device(device)
                active[backend] = (fn, inp)
            except Skip as e:
                rec.skipped, rec.reason = True, str(e)
            except Exception as e:  # noqa: BLE001  (a backend failing here must not end the run)
                rec.skipped, rec.reason = True, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                runners[key] = rec.reason
        settle = args.settle_ms / 1e3 if device.type == "cpu" and len(active) > 1 else 0.0
        with torch.inference_mode():
            for _ in range(args.repeats):
                for backend, (fn, inp) in active.items():
                    time.sleep(settle)
                    recs[backend].times_ms.append(_time_call(functools.partial(fn, inp), device) * 1e3)
        for backend in backends:
            rec = recs[backend]
            if not rec.skipped:
                _summarise(rec, peak)
                _log(args, f"  {spec.name:>22} {backend:>16} {precision} b{batch:<3} {rec.median_ms:9.2f} ms "
                           f"{rec.images_per_s:9.1f} img/s {rec.gflops:7.1f} GFLOP/s")
            else:
                _log(args, f"  {spec.name:>22} {backend:>16} {precision} b{batch:<3} skipped: {rec.reason}")
            out.append(rec)
    return out


def _summarise(rec: Record, peak: float | None) -> None:
    t = rec.times_ms
    rec.repeats = len(t)
    rec.median_ms = statistics.median(t)
    rec.p90_ms = percentile(t, 90)
    rec.p99_ms = percentile(t, 99)
    rec.images_per_s = rec.batch / (rec.median_ms / 1e3)
    if rec.macs is not None:
        rec.gflops = 2.0 * rec.macs * rec.batch / (rec.median_ms / 1e3) / 1e9
        if peak:
            rec.peak_gflops = peak
            rec.peak_share = rec.gflops / peak


# ---------------------------------------------------------------------------- outputs

def write_outputs(results: dict[str, Any], output: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """results.json, results.csv and (optionally) perf_latency.png, perf_throughput.png, perf_pareto.png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.csv"]
    atomic_write_bytes(written[0], (json.dumps(results, indent=2) + "\n").encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in results["records"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    atomic_write_bytes(written[1], buf.getvalue().encode())
    if plots:
        written += plot_results(results, out)
    return written


def plot_results(results: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        raise ValueError("the PNG plots need matplotlib: pip install 'gpunet[benchmark]', or pass --no-plots "
                         "(the JSON and CSV results were written)") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in results["records"] if not r["skipped"]]
    machine = results["header"]["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['threads']} threads"
    paths: list[Path] = []
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in recs:
        series.setdefault((r["model"], r["backend"], r["precision"]), []).append(r)
    for fname, key, ylabel, title in (
            ("perf_latency.png", "median_ms", "median latency (ms)", "Latency vs batch size"),
            ("perf_throughput.png", "images_per_s", "images / s", "Throughput vs batch size")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for (model, backend, precision), rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rs], [r[key] for r in rs], marker="o",
                    label=f"{model} {backend} {precision}")
        ax.set_xscale("log", base=2)
        if key == "median_ms":
            ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} ({where})", fontsize=9)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        paths.append(_save_fig(fig, out / fname))
        plt.close(fig)
    # top-1 vs batch-1 latency, NVIDIA's Pareto figure: one curve per (backend, precision)
    fig, ax = plt.subplots(figsize=(8, 5))
    b1 = [r for r in recs if r["batch"] == min((x["batch"] for x in recs), default=1) and r["top1"] is not None]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in b1:
        kind = "GPUNet" if not r["model"].startswith("timm:") else "timm"
        groups.setdefault((f"{kind} {r['backend']}", r["precision"]), []).append(r)
    for (label, precision), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["median_ms"])
        ax.plot([r["median_ms"] for r in rs], [r["top1"] for r in rs], marker="o", label=f"{label} {precision}")
        for r in rs:
            ax.annotate(r["model"].replace("gpunet_", "").upper() if r["model"].startswith("gpunet_")
                        else r["model"][5:], (r["median_ms"], r["top1"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(f"median latency at batch {min((x['batch'] for x in recs), default=1)} (ms)")
    ax.set_ylabel("published ImageNet top-1 (%)")
    ax.set_title(f"Top-1 vs latency ({where})", fontsize=9)
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    paths.append(_save_fig(fig, out / "perf_pareto.png"))
    plt.close(fig)
    return paths


def _save_fig(fig: Any, path: Path) -> Path:
    fig.tight_layout()

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=110)

    atomic_write(path, write)
    return path


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of the records (ratios vs eager of the same model/precision/batch)."""
    from gpunet.info import format_table

    recs = results["records"]
    eager = {(r["model"], r["precision"], r["batch"]): r["median_ms"] for r in recs
             if r["backend"] == "eager" and not r["skipped"]}
    rows = []
    for r in recs:
        if r["skipped"]:
            rows.append([r["model"], r["backend"], r["precision"], r["batch"], "-", "-", "-", "-", "-",
                         "skipped: " + r["reason"]])
            continue
        base = eager.get((r["model"], r["precision"], r["batch"]))
        rows.append([r["model"], r["backend"], r["precision"], r["batch"], f"{r['median_ms']:.2f}",
                     f"{r['p90_ms']:.2f}", f"{r['images_per_s']:.1f}", f"{r['gflops']:.1f}",
                     f"{100 * r['peak_share']:.0f}%" if r["peak_share"] is not None else "-",
                     f"{base / r['median_ms']:.2f}x vs eager" if base else ""])
    peaks = ", ".join(f"{p}: {v['peak_gflops']:.1f} GFLOP/s" for p, v in results["header"]["peak"].items())
    table = format_table(["model", "backend", "prec", "batch", "median ms", "p90 ms", "img/s", "GFLOP/s",
                          "of peak", ""], rows)
    return f"{table}\npeak (2048^3 matmul, same run): {peaks}"


def run_benchmark(args: argparse.Namespace) -> int:
    """`gpunet benchmark`: run, print a summary, write JSON/CSV/PNGs into --output. Exit status 0 / 2."""
    try:
        results = benchmark(args)
    except BenchmarkError as e:
        print(f"gpunet: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or os.path.join("benchmark", time.strftime("%Y%m%d-%H%M%S"))
    paths = write_outputs(results, output, plots=not args.no_plots)
    print(format_summary(results))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_benchmark_arguments(argparse.ArgumentParser(prog="gpunet benchmark", description=__doc__,
                                                             formatter_class=argparse.RawDescriptionHelpFormatter))
    return run_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
