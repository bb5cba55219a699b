"""TensorRT: a serialized engine built from our ONNX graph (`export_tensorrt`) and a runner for it (`engine_runner`).

Engines are tied to the GPU model and TensorRT version that built them: build on the
deployment machine. Without the `tensorrt` package both raise an ExportError saying what to
install (and that `--format onnx` plus `trtexec` on the GPU machine is the alternative).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gpunet._io import atomic_write_bytes
from gpunet._optional import importable
from gpunet.deploy.common import INPUT_NAME, OUTPUT_NAME, ExportReport, check_export_path, export_img_size
from gpunet.deploy.onnx import export_onnx
from gpunet.deploy.packages import DeployDependencyError
from gpunet.device import resolve_device
from gpunet.errors import ExportError

TENSORRT_INSTALL = (
    "TensorRT is not installed (`import tensorrt` failed). Building an engine needs a machine with an NVIDIA "
    "GPU, its driver and CUDA: `pip install tensorrt` (the wheels bundle TensorRT's libraries; `tensorrt` "
    "installs the CUDA 12 build, `pip install tensorrt-cu13` or `tensorrt-cu11` match other CUDA major versions "
    "of the driver; see "
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html). Alternatively "
    "export with --format onnx and build the engine on the GPU machine with `trtexec --onnx=model.onnx "
    "--fp16 --saveEngine=model.plan`. --format onnx and --format triton work without TensorRT.")


def tensorrt_available() -> bool:
    return importable("tensorrt")


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a DeployDependencyError (an ExportError) saying how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DeployDependencyError(TENSORRT_INSTALL) from exc
    return tensorrt


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def export_tensorrt(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                    fp16: bool = True, batch: int = 1, workspace_gib: float = 2.0,
                    opset: int | None = None) -> ExportReport:
    """A serialized TensorRT engine (ONNX -> trt.OnnxParser -> trt.Builder) for batch 1..`batch`."""
    trt = import_tensorrt()
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"TensorRT batch must be a positive integer (the largest batch of the engine), got {batch!r}")
    check_export_path(path)
    size = export_img_size(model, img_size)
    # TensorRT < 11 takes FP16 as a builder flag over a float32 network; TensorRT 11 dropped weakly typed
    # networks, so there the ONNX itself computes in float16 and the network is parsed strongly typed.
    fp16_flag = fp16 and hasattr(trt.BuilderFlag, "FP16")
    fp16_onnx = fp16 and not fp16_flag
    with tempfile.TemporaryDirectory(prefix="gpunet-trt-") as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        report = export_onnx(model, onnx_path, img_size=size, batch="dynamic", opset=opset, fp16=fp16_onnx,
                             check=False)
        with open(onnx_path, "rb") as f:
            onnx_bytes = f.read()
    try:
        engine = _build_engine(trt, onnx_bytes, (batch, 3, size, size), fp16_flag=fp16_flag,
                               strongly_typed=fp16_onnx, workspace_gib=workspace_gib)
    except ExportError:
        raise
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError etc. (e.g. no CUDA device)
        raise ExportError(f"TensorRT engine build failed: {exc} (a CUDA GPU with a working driver is needed)") \
            from exc
    atomic_write_bytes(path, engine)
    return ExportReport(path=os.fspath(path), format="tensorrt", opset=report.opset, size_bytes=os.path.getsize(path),
                        img_size=size, batch=batch, fp16=fp16, fused=True, exporter=f"tensorrt {trt.__version__}")


def _build_engine(trt: Any, onnx_bytes: bytes, max_shape: tuple[int, int, int, int], *, fp16_flag: bool,
                  strongly_typed: bool, workspace_gib: float) -> bytes:
    """Parse the ONNX graph and build a serialized engine whose profile covers batch 1..max_shape[0]."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *max_shape[1:]), max_shape, max_shape)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT engine build failed (see TensorRT's log above)")
    return bytes(engine)


class _EngineRun:
    """One engine's execution context with static input/output buffers; holds the runtime and engine it needs."""

    def __init__(self, trt: Any, runtime: Any, engine: Any, input_shape: tuple[int, ...], device: torch.device) -> None:
        self.runtime, self.engine, self.device = runtime, engine, device  # the context needs both alive
        self.context = engine.create_execution_context()
        self.context.set_input_shape(INPUT_NAME, input_shape)

        def dtype(name: str) -> torch.dtype:
            return torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32

        out_shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        self.out = torch.empty(out_shape, device=device, dtype=dtype(OUTPUT_NAME))
        self.static_in = torch.empty(input_shape, device=device, dtype=dtype(INPUT_NAME))
        self.context.set_tensor_address(INPUT_NAME, self.static_in.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, self.out.data_ptr())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream)
        return self.out


def engine_runner(path: str | os.PathLike[str], input_shape: Sequence[int],
                  device: str | torch.device = "cuda") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the engine at `path` on (N, 3, R, R) CUDA tensors of shape `input_shape`.

    The engine's own input dtype is fed (float16 for a strongly typed fp16 engine). The returned
    tensor is the engine's static output buffer on `device`: the next call overwrites it (clone
    it to keep it). Work is queued on the current CUDA stream; synchronise before reading on
    the host.
    """
    trt = import_tensorrt()
    dev = resolve_device(device)
    if dev.type != "cuda":
        raise ExportError(f"a TensorRT engine runs on a CUDA device, not {dev}")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    with open(path, "rb") as f:
        engine = runtime.deserialize_cuda_engine(f.read())
    if engine is None:
        raise ExportError(f"{os.fspath(path)}: TensorRT cannot load this engine (built by another TensorRT "
                          "version or for another GPU?)")
    return _EngineRun(trt, runtime, engine, tuple(int(d) for d in input_shape), dev)
