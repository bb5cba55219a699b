"""The benchmark backends: one registry from a backend's name to the function that builds its runner.

A builder takes a `BackendRequest` (the model, precision, device, an example batch, a work
folder) and returns a `Built` runner: a callable on the input batch, a note for the record and
whether it wants channels_last input. A backend that cannot run here raises `Skip` with the
reason. The exported-file backends (ONNX Runtime, OpenVINO) run through
`gpunet.deploy.runtime.open_runner`, TensorRT through `gpunet.deploy.tensorrt.engine_runner`;
`gpunet.search.latency` measures whole models on TensorRT through this registry too.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from gpunet._optional import importable
from gpunet.bench.config import BACKENDS
from gpunet.bench.models import ModelSpec
from gpunet.device import PRECISIONS
from gpunet.errors import BenchmarkError

if TYPE_CHECKING:
    from gpunet.deploy.runtime import Runner as FileRunner

Runner = Callable[[torch.Tensor], Any]
PEER_NOTE = "timm model (no BN folding)"


class Skip(Exception):
    """A backend that cannot run here; the message is the reason."""


@dataclass(frozen=True)
class BackendRequest:
    """What a backend builder gets. Builders copy `model` (fp32, CPU, eval) and never change it."""

    spec: ModelSpec
    model: nn.Module
    precision: str
    device: torch.device
    example: torch.Tensor  # a batch of the benchmarked shape, dtype and device
    workdir: Path  # exported files, reused across batch sizes of one run
    threads: int | None = None  # ONNX Runtime / OpenVINO threads (None: their default)
    calibration_dir: str | None = None  # int8 calibration images (None: synthetic, for speed only)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def batch(self) -> int:
        return int(self.example.shape[0])


class Built(NamedTuple):
    """A backend ready to time: `run(x)` on the input batch, a note for the record, its input layout."""

    run: Runner
    note: str
    channels_last: bool


def build_runner(backend: str, request: BackendRequest) -> Built:
    """The runner of `backend` for `request`; raises Skip where it cannot run here."""
    builder = BACKEND_BUILDERS.get(backend)
    if builder is None:
        raise BenchmarkError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if request.device.type == "cpu" and request.precision == "fp16":
        raise Skip("fp16 on CPU: no fast kernels in PyTorch's CPU backend (use bf16)")
    return builder(request)


# ---------------------------------------------------------------------------- PyTorch backends

# the PyTorch backends beyond eager: each is a set of `gpunet.deploy.optimize.plan_inference` arguments
PLAN_OPTIONS: dict[str, dict[str, Any]] = {
    "fused": {}, "padded": {"pad_channels": 8}, "fused-microbatch": {"micro_batch": 1}, "compile": {"compile": True},
    "cudagraph": {"cuda_graph": True}, "padded-cudagraph": {"pad_channels": 8, "cuda_graph": True},
    "compile-cudagraph": {"compile": True, "cuda_graph": True}, "auto": {"mode": "auto"},
    "triton-dw": {"pad_channels": 8, "triton_depthwise": True},
    "triton-dw-cudagraph": {"pad_channels": 8, "triton_depthwise": True, "cuda_graph": True},
}


def _eager(req: BackendRequest) -> Built:
    m = copy.deepcopy(req.model).to(device=req.device, dtype=req.dtype).eval()
    return Built(m, "unfused, contiguous NCHW", False)


def _planned(backend: str) -> Callable[[BackendRequest], Built]:
    """The builder of a PyTorch backend of `PLAN_OPTIONS`."""
    return functools.partial(_plan_built, backend)


def _plan_built(backend: str, req: BackendRequest) -> Built:
    """`optimize_for_inference`'s steps for `backend` on a copy of the model; timm peers are not padded.

    Compiled backends specialise on each batch size (`dynamic=False`: the fastest kernels per
    shape); CUDA-graph backends capture one graph per batch size at their first (warm-up) call
    and skip the output copy (the benchmark discards outputs).
    """
    from gpunet.deploy.optimize import CudaGraphModule, apply_plan, plan_inference

    options = _backend_options(backend, req)
    plan = plan_inference(req.device, precision=req.precision, **options)
    if plan.compile:
        _check_compile(req.device)
    model = apply_plan(copy.deepcopy(req.model), plan)
    if isinstance(model, CudaGraphModule):
        model.clone_outputs = False
    note = plan.describe() if req.spec.is_gpunet else f"{PEER_NOTE}: {plan.describe().removeprefix('fused, ')}"
    return Built(model, note, plan.channels_last)


def _backend_options(backend: str, req: BackendRequest) -> dict[str, Any]:
    """`PLAN_OPTIONS[backend]` for this request, or Skip where the backend cannot run."""
    options = dict(PLAN_OPTIONS[backend])
    cuda = req.device.type == "cuda"
    if options.get("cuda_graph") and not cuda:
        raise Skip(f"{backend} needs CUDA (CUDA graphs)")
    if backend == "fused-microbatch" and cuda:
        raise Skip("fused-microbatch is a CPU technique (cache blocking); on CUDA use fused/cudagraph")
    if options.get("triton_depthwise"):
        from gpunet.deploy.depthwise import kernel_can_run

        reason = kernel_can_run(req.device)
        if reason is not None:
            raise Skip(f"{backend}: {reason}")
    if not req.spec.is_gpunet:
        if backend == "fused-microbatch" or options.get("pad_channels"):
            raise Skip(f"{backend}: GPUNets only")
        if backend == "auto":
            options["pad_channels"] = 0  # a peer keeps its widths
    if cuda and (options.get("compile") or backend == "auto"):
        options["dynamic"] = False
    return options


def _check_compile(device: torch.device) -> None:
    if not hasattr(torch, "compile"):
        raise Skip("torch.compile is not available in this PyTorch")
    if device.type == "cuda" and not importable("triton"):
        raise Skip("torch.compile on CUDA needs Triton (not installed)")
    if device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
                                     or shutil.which("clang++")):
        raise Skip("torch.compile on CPU needs a C++ compiler (none found)")


# ---------------------------------------------------------------------------- exported-file backends

def _file_stem(req: BackendRequest) -> str:
    return f"{req.spec.name.replace(':', '_')}_{req.spec.img_size}"


def _onnx_file(req: BackendRequest, fp16: bool) -> Path:
    """The model exported to ONNX (dynamic batch; BN folded for GPUNets), once per run."""
    from gpunet.deploy.onnx import export_onnx

    path = req.workdir / f"{_file_stem(req)}{'_fp16' if fp16 else ''}.onnx"
    if not path.exists():
        export_onnx(copy.deepcopy(req.model).float().cpu(), path, img_size=req.spec.img_size, batch="dynamic",
                    fp16=fp16, fuse=req.spec.is_gpunet, check=False)
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


def _int8_file(req: BackendRequest) -> tuple[Path, str]:
    """The static INT8 QDQ model of the fp32 ONNX file (made once per run) and a note on its calibration."""
    from gpunet.deploy.quantize import quantize_onnx

    fp32_path = _onnx_file(req, False)
    calib, note = req.calibration_dir, ""
    if calib is None:
        calib = os.fspath(_synthetic_calibration(req.workdir, req.spec.img_size))
        note = ", synthetic calibration (speed only)"
    path = req.workdir / f"{fp32_path.stem}_int8.onnx"
    if not path.exists():
        quantize_onnx(fp32_path, path, calib, num_images=8 if req.calibration_dir is None else 128,
                      img_size=req.spec.img_size)
    return path, note


def _numpy_runner(runner: FileRunner) -> Runner:
    """A runtime's runner (numpy in, cast to its input dtype there) on torch input; bf16 goes in as float32."""

    def run(x: torch.Tensor) -> Any:
        t = x.detach().cpu()
        return runner.run((t.float() if t.dtype == torch.bfloat16 else t).numpy())

    return run


def _ort_provider(req: BackendRequest) -> str:
    if not importable("onnxruntime"):
        raise Skip("the onnxruntime Python package is not installed (pip install 'gpunet[export]')")
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if req.device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise Skip(f"onnxruntime: {provider} not available (have {ort.get_available_providers()})")
    return provider


def _onnxruntime(req: BackendRequest) -> Built:
    if req.precision == "bf16":
        raise Skip("onnxruntime: no bf16 convolution kernels (fp32, or fp16 on CUDA)")
    if req.precision == "fp16" and req.device.type != "cuda":
        raise Skip("onnxruntime fp16 needs CUDA")
    provider = _ort_provider(req)
    return _ort_built(req, _onnx_file(req, req.precision == "fp16"), provider)


def _onnxruntime_int8(req: BackendRequest) -> Built:
    if req.precision != "fp32":
        raise Skip("onnxruntime-int8 runs from the fp32 model: use --precision fp32")
    provider = _ort_provider(req)
    path, calibration = _int8_file(req)
    return _ort_built(req, path, provider + calibration)


def _ort_built(req: BackendRequest, path: Path, note: str) -> Built:
    from gpunet.deploy.runtime import open_runner

    runner = open_runner(path, "onnxruntime", threads=req.threads, precision=req.precision, device=str(req.device))
    return Built(_numpy_runner(runner), note, False)


def _check_openvino(req: BackendRequest, backend: str) -> None:
    if req.device.type != "cpu":
        raise Skip(f"{backend}: CPU only here (OpenVINO's GPU plugin is for Intel GPUs)")
    if not importable("openvino"):
        raise Skip("the openvino Python package is not installed (pip install 'gpunet[openvino]')")


def _openvino(req: BackendRequest) -> Built:
    _check_openvino(req, "openvino")
    return _openvino_built(req, _onnx_file(req, False), None)


def _openvino_int8(req: BackendRequest) -> Built:
    _check_openvino(req, "openvino-int8")
    if req.precision != "fp32":
        raise Skip("openvino-int8 runs from the fp32 model: use --precision fp32")
    path, calibration = _int8_file(req)
    return _openvino_built(req, path, "OpenVINO CPU, the INT8 QDQ model of onnxruntime-int8" + calibration)


def _openvino_built(req: BackendRequest, path: Path, note: str | None) -> Built:
    """Compiled for this batch (static shapes: OpenVINO's fastest kernels), at the benchmarked precision.

    The note defaults to the runner's description ("OpenVINO CPU, f32 inference precision").
    """
    from gpunet.deploy.runtime import open_runner

    runner = open_runner(path, "openvino", threads=req.threads, precision=req.precision, batch=req.batch)
    return Built(_numpy_runner(runner), note or runner.description, False)


def _tensorrt(req: BackendRequest) -> Built:
    """A TensorRT engine built for this batch, run on torch CUDA tensors."""
    if req.device.type != "cuda":
        raise Skip("tensorrt needs CUDA")
    if not importable("tensorrt"):
        raise Skip("the tensorrt Python package is not installed")
    if req.precision == "bf16":
        raise Skip("tensorrt backend: fp32 or fp16")
    from gpunet.deploy.tensorrt import engine_runner, export_tensorrt, tensorrt_version

    fp16 = req.precision == "fp16"
    path = req.workdir / f"{_file_stem(req)}_b{req.batch}{'_fp16' if fp16 else ''}.plan"
    export_tensorrt(copy.deepcopy(req.model).float().cpu(), path, img_size=req.spec.img_size, fp16=fp16,
                    batch=req.batch)
    run = engine_runner(path, tuple(req.example.shape), req.device)
    return Built(run, f"TensorRT {tensorrt_version()} engine{' (fp16)' if fp16 else ''}", False)


# the registry: BACKENDS (gpunet.bench.config) names exactly these, in this order
BACKEND_BUILDERS: dict[str, Callable[[BackendRequest], Built]] = {
    "eager": _eager, **{name: _planned(name) for name in PLAN_OPTIONS},
    "onnxruntime": _onnxruntime, "onnxruntime-int8": _onnxruntime_int8,
    "openvino": _openvino, "openvino-int8": _openvino_int8, "tensorrt": _tensorrt,
}
