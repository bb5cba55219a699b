"""Running exported files: one registry of runners (ONNX Runtime, OpenVINO), and `ExportedModel` built on it.

    runner = open_runner("gpunet_d1.onnx", "onnxruntime", threads=4)   # or "openvino", device="cuda", ...
    logits = runner(batch_float32)                                     # numpy in, numpy out

    clf = gpunet.Classifier("gpunet_d1.int8.onnx")                  # ONNX Runtime
    clf = gpunet.Classifier("gpunet_d1.xml")                        # OpenVINO
    gpunet.validate("gpunet_d1.onnx", "/data/imagenet/val", runtime="openvino")

Everything that runs an exported file goes through `open_runner`: `ExportedModel` (and with it
`gpunet predict/validate --model FILE`), the INT8 comparison of `gpunet quantize`, the
benchmark's ONNX Runtime and OpenVINO backends and the search's latency model. An
`ExportedModel` takes its preprocessing and class names from the file's gpunet metadata
(written by `gpunet export` and `gpunet quantize`), so they are the ones the weights were
trained with; a file without that metadata is refused rather than guessed at. The runtime
follows the file (.xml: OpenVINO, .onnx: ONNX Runtime) unless `runtime` says otherwise
(OpenVINO reads .onnx files too).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet.deploy.metadata import (
    META_LABELS,
    META_MODEL,
    META_NUM_CLASSES,
    META_PRECISION,
    META_PREPROCESS,
    read_metadata,
)
from gpunet.deploy.onnx import onnx_session
from gpunet.deploy.openvino import OPENVINO_PRECISIONS, openvino_model
from gpunet.deploy.packages import import_onnxruntime
from gpunet.device import resolve_device
from gpunet.errors import ExportError

EXPORTED_SUFFIXES = (".onnx", ".xml")

Run = Callable[[np.ndarray], np.ndarray]


class RuntimeUnavailableError(ExportError):
    """A runtime cannot run a file on the requested device here (no CUDA in ONNX Runtime, OpenVINO on CUDA)."""


@dataclass(frozen=True)
class Runner:
    """An exported file, opened in a runtime: `runner(x)` maps a float32 (N, 3, R, R) array to its first output."""

    run: Run  # casts the input to `input_dtype` itself
    fixed_batch: int | None  # the batch the file (or the compiled model) takes, None when any
    input_dtype: type[np.floating[Any]]  # what the runtime is fed
    description: str  # e.g. "ONNX Runtime, CPUExecutionProvider"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


Opener = Callable[..., Runner]


def _device_type(device: str | torch.device) -> str:
    """"auto" stays "auto" (each runtime's own best choice); anything else through `gpunet.device.resolve_device`."""
    return "auto" if str(device) == "auto" else resolve_device(device).type


def _onnxruntime(path: str, *, threads: int | None, precision: str, batch: int | None,
                 device: str | torch.device) -> Runner:
    """ONNX Runtime: CUDA for a cuda device (an error if this onnxruntime has none), CPU for cpu, the best for auto.

    The file fixes the precision and the batch (`precision` and `batch` do not apply); the
    input is cast to what the session wants (float16 for an fp16-I/O file).
    """
    kind = _device_type(device)
    providers: list[Any] | None = None  # auto: CUDA when onnxruntime-gpu has it, then CPU
    if kind == "cuda":
        available = import_onnxruntime().get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise RuntimeUnavailableError(f"onnxruntime: CUDAExecutionProvider is not available (have {available}); "
                                          "pip install onnxruntime-gpu, or run on the CPU")
        providers = [("CUDAExecutionProvider", {"device_id": resolve_device(device).index or 0})]
    elif kind == "cpu":
        providers = ["CPUExecutionProvider"]
    session = onnx_session(path, threads=threads, providers=providers)
    inp = session.get_inputs()[0]
    name, dtype = inp.name, (np.float16 if inp.type == "tensor(float16)" else np.float32)
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.asarray(x, dtype=dtype)})[0]

    return Runner(run, fixed, dtype, f"ONNX Runtime, {session.get_providers()[0]}")


def _openvino(path: str, *, threads: int | None, precision: str, batch: int | None,
              device: str | torch.device) -> Runner:
    """OpenVINO on the CPU at the pinned inference `precision`, optionally with a static `batch`."""
    if _device_type(device) == "cuda":
        raise RuntimeUnavailableError("OpenVINO runs on the CPU here (its GPU plugin is for Intel GPUs, not CUDA)")
    compiled = openvino_model(path, precision=precision, threads=threads, batch=batch)
    request = compiled.create_infer_request()  # one request, reused: no per-call allocation
    dim = compiled.inputs[0].get_partial_shape()[0]

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer(np.ascontiguousarray(x, dtype=np.float32), share_inputs=True)[0]

    return Runner(run, dim.get_length() if dim.is_static else None, np.float32,
                  f"OpenVINO CPU, {OPENVINO_PRECISIONS[precision]} inference precision")


# runtime name -> (what users read, how to open a file in it)
RUNNERS: dict[str, tuple[str, Opener]] = {
    "onnxruntime": ("ONNX Runtime", _onnxruntime),
    "openvino": ("OpenVINO", _openvino),
}
RUNTIMES = {name: label for name, (label, _) in RUNNERS.items()}


def default_runtime(path: str | os.PathLike[str]) -> str:
    """OpenVINO for an IR (.xml), ONNX Runtime for anything else."""
    return "openvino" if os.fspath(path).lower().endswith(".xml") else "onnxruntime"


def open_runner(path: str | os.PathLike[str], runtime: str | None = None, *, threads: int | None = None,
                precision: str = "fp32", batch: int | None = None, device: str | torch.device = "cpu") -> Runner:
    """Open an exported file (.onnx, OpenVINO .xml) in `runtime` (default: by file type), ready to run.

    `threads` caps the runtime's CPU threads (None: its default). `precision` and `batch` are
    OpenVINO's inference precision (fp32 pins f32 math, bf16, fp16) and static batch; ONNX
    Runtime runs the file's own. `device`: "cpu", "cuda"/"cuda:N" (ONNX Runtime only; a
    SettingError when PyTorch sees no such GPU, a RuntimeUnavailableError when onnxruntime has
    no CUDA) or "auto" (CUDA when ONNX Runtime has it, else the CPU).
    """
    runtime = runtime or default_runtime(path)
    if runtime not in RUNNERS:
        raise ExportError(f"runtime must be one of {', '.join(RUNNERS)}, got {runtime!r}")
    return RUNNERS[runtime][1](os.fspath(path), threads=threads, precision=precision, batch=batch, device=device)


def is_exported(model: Any) -> bool:
    """Whether `model` names an exported file (.onnx / OpenVINO .xml) rather than an architecture."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(EXPORTED_SUFFIXES)


def run_padded(run: Run, x: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """`run` on any batch size: split into `fixed_batch` chunks, the last padded by repeating its last image."""
    n = x.shape[0]
    if fixed_batch is None or n == fixed_batch:
        return run(x)
    chunks = []
    for start in range(0, n, fixed_batch):
        part = x[start:start + fixed_batch]
        pad = fixed_batch - part.shape[0]
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        chunks.append(run(part)[:fixed_batch - pad])
    return np.concatenate(chunks)


class ExportedModel(nn.Module):
    """An exported GPUNet file run by ONNX Runtime or OpenVINO, called like the PyTorch model.

    Takes and returns torch tensors ((N, 3, R, R) float32 in, (N, classes) float32 logits out,
    on the input's device); `pretrained_cfg`, `num_classes` and `labels` come from the file's
    metadata. Files with a fixed batch take any N (padded / split internally).
    """

    def __init__(self, path: str | os.PathLike[str], runtime: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such exported model file")
        meta = read_metadata(self.path)
        preprocess = meta.get(META_PREPROCESS)
        if not isinstance(preprocess, dict) or not isinstance(meta.get(META_LABELS), list):
            raise ExportError(f"{self.path}: has no gpunet metadata (preprocessing and class names); only files "
                              "written by `gpunet export` or `gpunet quantize` can be run as a model here")
        self.runtime = runtime or default_runtime(self.path)
        self.labels: list[str] = [str(v) for v in meta[META_LABELS]]
        self.num_classes = int(meta.get(META_NUM_CLASSES) or len(self.labels))
        self.precision = str(meta.get(META_PRECISION) or "fp32")
        self.pretrained_cfg = {**preprocess, "input_size": tuple(preprocess["input_size"]),
                               "name": os.path.basename(self.path), "architecture": meta.get(META_MODEL)}
        self.runner = open_runner(self.path, self.runtime, threads=threads, device="auto")

    @property
    def fixed_batch(self) -> int | None:
        return self.runner.fixed_batch

    @property
    def img_size(self) -> int:
        return int(self.pretrained_cfg["input_size"][-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = run_padded(self.runner, arr, self.fixed_batch)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    @property
    def engine(self) -> str:
        """What runs the file, e.g. "OpenVINO, int8"."""
        return f"{RUNTIMES[self.runtime]}, {self.precision}"

    def describe(self) -> str:
        return f"{self.path} ({self.engine})"


def check_options(model: nn.Module, *, img_size: int | None = None, amp: bool = False,
                  channels_last: bool = False) -> None:
    """Refuse options that cannot apply to an exported file (its resolution, precision and layout are fixed)."""
    if not isinstance(model, ExportedModel):
        return
    if img_size is not None and img_size != model.img_size:
        raise ExportError(f"{model.path} was exported for {model.img_size} px; --img-size {img_size} cannot change "
                          "that (export again with --img-size)")
    if amp:
        raise ExportError(f"{model.path}: --amp applies to PyTorch models; an exported file's precision "
                          f"({model.precision}) was fixed when it was exported")
    if channels_last:
        raise ExportError(f"{model.path}: --channels-last applies to PyTorch models; the runtime running an "
                          "exported file picks its own memory layout")
