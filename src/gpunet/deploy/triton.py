"""A Triton Inference Server model repository entry: the ONNX file, its config.pbtxt and the class names.

    <repo>/<name>/config.pbtxt       onnxruntime backend, dynamic batching, optional TensorRT accelerator
    <repo>/<name>/labels.txt         class names, index order (Triton's label_filename)
    <repo>/<name>/<version>/model.onnx

Serve with `tritonserver --model-repository <repo>`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import nn

from gpunet._io import atomic_write_bytes
from gpunet.deploy.common import INPUT_NAME, OUTPUT_NAME, ExportReport, check_export_path, export_img_size
from gpunet.deploy.metadata import model_labels, model_name, model_num_classes
from gpunet.deploy.onnx import export_onnx
from gpunet.errors import ExportError

_TRITON_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
INSTANCE_KINDS = {"auto": None, "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
TENSORRT_PRECISIONS = ("FP16", "FP32")


def triton_config(name: str, *, img_size: int, num_classes: int, max_batch_size: int = 32,
                  tensorrt_accelerator: bool = False, tensorrt_precision: str = "FP16", instances: int = 1,
                  kind: str = "auto", max_queue_delay_us: int = 100) -> str:
    """config.pbtxt for an ONNX GPUNet in Triton's onnxruntime backend."""
    preferred = [b for b in (4, 8, 16, 32, 64, 128) if b <= max_batch_size // 2 or b == max_batch_size]
    preferred = sorted(set(preferred or [max_batch_size]))
    if kind not in INSTANCE_KINDS:
        raise ExportError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}, got {kind!r}")
    group = f"count: {instances}" + (f"\n    kind: {INSTANCE_KINDS[kind]}" if INSTANCE_KINDS[kind] else "")
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_FP32",
        "    format: FORMAT_NCHW",
        f"    dims: [ 3, {img_size}, {img_size} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {num_classes} ]",
        '    label_filename: "labels.txt"',
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    {group}",
        "  }",
        "]",
    ]
    if tensorrt_accelerator:
        lines += _tensorrt_accelerator(tensorrt_precision)
    return "\n".join(lines) + "\n"


def _tensorrt_accelerator(precision: str) -> list[str]:
    """The `optimization` block running the ONNX model through TensorRT inside the onnxruntime backend."""
    return [
        "optimization {",
        "  execution_accelerators {",
        "    gpu_execution_accelerator : [",
        "      {",
        '        name : "tensorrt"',
        f'        parameters {{ key: "precision_mode" value: "{precision}" }}',
        '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
        "      }",
        "    ]",
        "  }",
        "}",
    ]


def export_triton(model: nn.Module, repo_dir: str | os.PathLike[str], *, name: str | None = None,
                  max_batch_size: int = 32, fp16: bool = False, tensorrt_accelerator: bool = False,
                  img_size: int | None = None, version: int = 1, instances: int = 1, kind: str = "auto",
                  tensorrt_precision: str = "FP16", fuse: bool = True, check: bool = True,
                  opset: int | None = None) -> Path:
    """A Triton model repository entry `<repo>/<name>/{config.pbtxt, labels.txt, <version>/model.onnx}`.

    The ONNX file has a dynamic batch axis (Triton batches requests up to `max_batch_size`);
    `fp16` exports float16 compute with float32 inputs/outputs; `tensorrt_accelerator` asks
    Triton's onnxruntime backend to run the model through TensorRT (`tensorrt_precision`).
    `instances` and `kind` ("auto", "gpu", "cpu") set the instance group; `name` defaults to
    the zoo name. Returns the model folder; `export_triton_report` also returns the ONNX report.
    """
    return export_triton_report(model, repo_dir, name=name, max_batch_size=max_batch_size, fp16=fp16,
                                tensorrt_accelerator=tensorrt_accelerator, img_size=img_size, version=version,
                                instances=instances, kind=kind, tensorrt_precision=tensorrt_precision, fuse=fuse,
                                check=check, opset=opset)[0]


def export_triton_report(model: nn.Module, repo_dir: str | os.PathLike[str], *, name: str | None = None,
                         max_batch_size: int = 32, fp16: bool = False, tensorrt_accelerator: bool = False,
                         img_size: int | None = None, version: int = 1, instances: int = 1, kind: str = "auto",
                         tensorrt_precision: str = "FP16", fuse: bool = True, check: bool = True,
                         opset: int | None = None) -> tuple[Path, ExportReport]:
    """`export_triton`, also returning the ONNX export report (check result, size, the files written)."""
    name = name or model_name(model).replace("custom", "gpunet")
    _check_settings(name, max_batch_size, version, tensorrt_precision)
    check_export_path(repo_dir, folder=True)
    size = export_img_size(model, img_size)
    config = triton_config(name, img_size=size, num_classes=model_num_classes(model), max_batch_size=max_batch_size,
                           tensorrt_accelerator=tensorrt_accelerator, tensorrt_precision=tensorrt_precision,
                           instances=instances, kind=kind)
    folder = Path(repo_dir) / name
    report = export_onnx(model, folder / str(version) / "model.onnx", img_size=size, batch="dynamic", fp16=fp16,
                         fuse=fuse, check=check, opset=opset)
    atomic_write_bytes(folder / "config.pbtxt", config.encode())
    atomic_write_bytes(folder / "labels.txt", ("\n".join(model_labels(model)) + "\n").encode())
    report.extra_files = [str(folder / "config.pbtxt"), str(folder / "labels.txt")]
    return folder, report


def _check_settings(name: str, max_batch_size: int, version: int, tensorrt_precision: str) -> None:
    if not _TRITON_NAME.match(name):
        raise ExportError(f"Triton model name {name!r} must be letters, digits, '_', '.', '-' (no '/' or spaces)")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ExportError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    if version < 1:
        raise ExportError(f"Triton model versions start at 1, got {version}")
    if tensorrt_precision not in TENSORRT_PRECISIONS:
        raise ExportError(f"tensorrt_precision must be FP16 or FP32, got {tensorrt_precision!r}")
