"""The optional packages the deploy layer runs on (onnx, ONNX Runtime, OpenVINO): import them or say what to install.

None of them is imported when gpunet is: each feature asks for its package when it runs, and a
missing one is a `DeployDependencyError` naming the pip extra that installs it. That error is
both an `ExportError` (what export and runtime code has always raised) and an `ImportError`
(`gpunet._optional.MissingDependencyError`).
"""

from __future__ import annotations

import os
from typing import Any

from gpunet._optional import MissingDependencyError, importable, require
from gpunet.errors import ExportError


class DeployDependencyError(MissingDependencyError, ExportError):
    """An optional package an export or a runtime needs is missing; the message says how to install it."""


def require_package(module: str, why: str, extra: str = "export") -> Any:
    """`gpunet._optional.require`, raising the deploy layer's `DeployDependencyError`."""
    try:
        return require(module, why, extra)
    except MissingDependencyError as exc:
        raise DeployDependencyError(str(exc)) from exc.__cause__


def import_onnx() -> Any:
    return require_package("onnx", "ONNX export needs the `onnx` package (with onnxruntime, onnxscript)")


def import_onnxruntime() -> Any:
    return require_package("onnxruntime",
                           "running ONNX models needs ONNX Runtime (onnxruntime-gpu on a CUDA machine)")


def import_openvino() -> Any:
    return require_package("openvino", "OpenVINO export and inference need the `openvino` package",
                           extra="openvino")


def onnxscript_available() -> bool:
    """torch's dynamo ONNX exporter needs onnxscript."""
    return importable("onnxscript")


def openvino_available() -> bool:
    return importable("openvino")


def read_openvino(path: str | os.PathLike[str], core: Any = None) -> Any:
    """`Core.read_model(path)` (an IR .xml with its .bin, or an .onnx), with a one-line error naming the file."""
    ov = import_openvino()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such OpenVINO or ONNX model")
    try:
        return (core or ov.Core()).read_model(os.fspath(path))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"{os.fspath(path)}: OpenVINO cannot read this file as a model (an OpenVINO .xml with "
                          f"its .bin beside it, or an .onnx): {detail[:300]}") from exc
