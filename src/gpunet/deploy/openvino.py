"""OpenVINO: the IR export (`export_openvino`), compiled models at a pinned precision, and a signal-stack fix.

The fastest CPU runtime we measured for GPUNets (docs/performance.md). The IR is converted
from our ONNX graph by OpenVINO's C++ ONNX frontend and carries the same gpunet metadata in its
rt_info (`gpunet.deploy.read_metadata(path)`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from torch import nn

from gpunet.deploy.common import (
    ExportReport,
    check_batches,
    check_export_path,
    check_parity,
    default_rtol,
    deploy_copy,
    export_img_size,
    parse_batch,
)
from gpunet.deploy.metadata import model_metadata
from gpunet.deploy.onnx import export_onnx
from gpunet.deploy.packages import import_openvino, read_openvino
from gpunet.errors import ExportError

# gpunet precision -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class SignalStack(ctypes.Structure):
    """The C library's `stack_t` (sigaltstack(2)) on Linux."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Give the calling thread back its alternate signal stack after the block (Linux).

    OpenVINO's CPU plugin (2026.4) installs an alternate signal stack on the thread that compiles
    a model and can free that memory while it is still installed. The next signal handled on the
    thread with a Python handler -- SIGCHLD once torch's DataLoader with workers has installed
    its handler, when any child process exits -- then runs on freed memory and kills the process
    with a segmentation fault. Nothing of OpenVINO's handles signals on that stack, so restoring
    the previous one costs nothing.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = SignalStack()
    saved = libc.sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if saved:
            libc.sigaltstack(ctypes.byref(before), None)


def openvino_model(path: str | os.PathLike[str], *, precision: str = "fp32", threads: int | None = None,
                   batch: int | None = None, device: str = "CPU") -> Any:
    """Compile an OpenVINO IR (.xml) or ONNX file for `device` with an explicit inference precision.

    `precision` "fp32" pins f32 math: on CPUs with AMX OpenVINO would otherwise run bf16 and
    silently change the numerics. `batch` fixes a dynamic batch axis (static shapes get OpenVINO's
    fastest kernels); `threads` caps the inference threads. Call the result with an
    (N, 3, R, R) float32 array: `compiled(x)[0]` is the logits array.
    """
    ov = import_openvino()
    if precision not in OPENVINO_PRECISIONS:
        raise ExportError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    core = ov.Core()
    model = read_openvino(path, core)
    if batch is not None:
        shape = model.input(0).get_partial_shape()
        shape[0] = batch
        model.reshape({model.input(0).get_any_name(): shape})
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    with keep_signal_stack():
        return core.compile_model(model, device, config)


def export_openvino(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                    batch: int | str = "dynamic", fp16: bool = False, fuse: bool = True, check: bool = True,
                    threads: int | None = None, opset: int | None = None, rtol: float | None = None) -> ExportReport:
    """OpenVINO IR: `path` (.xml) and its weights beside it (.bin), converted from our ONNX graph.

    The metadata of `export_onnx` is kept in the IR's rt_info. `fp16` stores the weights as
    float16 (half the size; OpenVINO still computes in the precision `openvino_model` asks for).
    `check` compiles the IR on the CPU at f32 precision and compares it with PyTorch like
    `export_onnx` does (same tolerances, `rtol` overrides). Both files are replaced only after
    the check passed.
    """
    ov = import_openvino()
    path = os.fspath(path)
    if not path.endswith(".xml"):
        raise ExportError(f"{path}: an OpenVINO model is an .xml file with its weights in a .bin beside it; "
                          "name the output <name>.xml")
    check_export_path(path)
    size = export_img_size(model, img_size)
    fixed = parse_batch(batch)
    weights_path = path[: -len(".xml")] + ".bin"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gpunet-openvino-", dir=folder) as tmp:
        onnx_report = export_onnx(model, os.path.join(tmp, "model.onnx"), img_size=size, batch=batch, opset=opset,
                                  fuse=fuse, check=False)
        # Core.read_model (OpenVINO's C++ ONNX frontend), not ov.convert_model: the latter sends usage
        # data to Intel unless the user has opted out, and nobody exporting a model asked for that.
        ov_model = ov.Core().read_model(os.path.join(tmp, "model.onnx"))
        for key, value in model_metadata(model, size, fused=fuse, precision="fp16" if fp16 else "fp32").items():
            ov_model.set_rt_info(value, key.split(".", 1))
        xml, weights = os.path.join(tmp, "model.xml"), os.path.join(tmp, "model.bin")
        ov.save_model(ov_model, xml, compress_to_fp16=fp16)
        report = ExportReport(path=path, format="openvino", opset=onnx_report.opset,
                              size_bytes=os.path.getsize(xml) + os.path.getsize(weights), img_size=size,
                              batch="dynamic" if fixed is None else fixed, fp16=fp16, fused=fuse,
                              exporter=f"openvino {ov.__version__}", extra_files=[weights_path])
        if check:
            compiled = openvino_model(xml, threads=threads)
            report.batch_sizes = check_batches(fixed)
            report.max_abs_diff, report.tolerance = check_parity(
                lambda x: compiled(x)[0], path, "OpenVINO", deploy_copy(model, fuse), size, report.batch_sizes,
                default_rtol(fp16, rtol))
        os.replace(weights, weights_path)
        os.replace(xml, path)  # last: the .xml names the model, so it appears only with its weights in place
    return report
