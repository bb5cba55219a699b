"""Exported models (ONNX, OpenVINO IR) behind a GPUNet's interface, so the deployed file itself can be checked.

    clf = gpunet.Classifier("gpunet_d1.int8.onnx")                  # ONNX Runtime
    clf = gpunet.Classifier("gpunet_d1.xml")                        # OpenVINO
    gpunet.validate("gpunet_d1.onnx", "/data/imagenet/val", runtime="openvino")

`gpunet predict` and `gpunet validate` take such files as `--model`. The preprocessing and the
class names come from the file's gpunet metadata (written by `gpunet export` and `gpunet
quantize`), so they are the ones the weights were trained with; a file without that metadata is
refused rather than guessed at. The runtime follows the file (.xml: OpenVINO, .onnx: ONNX
Runtime) unless `runtime` says otherwise (OpenVINO reads .onnx files too).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet.export import (
    META_LABELS,
    META_MODEL,
    META_NUM_CLASSES,
    META_PRECISION,
    META_PREPROCESS,
    ExportError,
    onnx_session,
    openvino_model,
    read_metadata,
)

RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
EXPORTED_SUFFIXES = (".onnx", ".xml")

Run = Callable[[np.ndarray], np.ndarray]


def is_exported(model: Any) -> bool:
    """Whether `model` names an exported file (.onnx / OpenVINO .xml) rather than an architecture."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(EXPORTED_SUFFIXES)


def default_runtime(path: str | os.PathLike[str]) -> str:
    return "openvino" if os.fspath(path).lower().endswith(".xml") else "onnxruntime"


def exported_runner(path: str | os.PathLike[str], runtime: str, threads: int | None = None, *,
                    cpu: bool = False) -> tuple[Run, int | None]:
    """(a function from an input batch to the logits of `path` in `runtime`, the file's fixed batch or None).

    OpenVINO runs on the CPU at f32 inference precision: a float32 file computes in float32 and
    the INT8 parts of a quantized file stay INT8. ONNX Runtime uses CUDA when onnxruntime-gpu
    has it, unless `cpu`.
    """
    if runtime == "openvino":
        compiled = openvino_model(path, threads=threads)
        dim = compiled.inputs[0].get_partial_shape()[0]
        return (lambda x: compiled(x, share_inputs=False)[0]), (dim.get_length() if dim.is_static else None)
    if runtime != "onnxruntime":
        raise ExportError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    session = onnx_session(path, threads=threads, providers=["CPUExecutionProvider"] if cpu else None)
    name = session.get_inputs()[0].name
    batch = session.get_inputs()[0].shape[0]
    return (lambda x: session.run(None, {name: x})[0]), (batch if isinstance(batch, int) and batch > 0 else None)


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
        self._run, self.fixed_batch = exported_runner(self.path, self.runtime, threads)

    @property
    def img_size(self) -> int:
        return int(self.pretrained_cfg["input_size"][-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        n = arr.shape[0]
        if self.fixed_batch is None or n == self.fixed_batch:
            out = self._run(arr)
        else:
            chunks = []
            for start in range(0, n, self.fixed_batch):
                part = arr[start:start + self.fixed_batch]
                pad = self.fixed_batch - part.shape[0]
                if pad:
                    part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
                chunks.append(self._run(part)[:self.fixed_batch - pad])
            out = np.concatenate(chunks)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    @property
    def engine(self) -> str:
        """What runs the file, e.g. "OpenVINO, int8"."""
        return f"{RUNTIMES[self.runtime]}, {self.precision}"

    def describe(self) -> str:
        return f"{self.path} ({self.engine})"


def check_options(model: nn.Module, *, img_size: int | None = None, amp: bool = False) -> None:
    """Refuse options that cannot apply to an exported file (its resolution and precision are fixed)."""
    if not isinstance(model, ExportedModel):
        return
    if img_size is not None and img_size != model.img_size:
        raise ExportError(f"{model.path} was exported for {model.img_size} px; --img-size {img_size} cannot change "
                          "that (export again with --img-size)")
    if amp:
        raise ExportError(f"{model.path}: --amp applies to PyTorch models; an exported file's precision "
                          f"({model.precision}) was fixed when it was exported")
