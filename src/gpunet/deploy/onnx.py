"""ONNX: the one ONNX export of gpunet (`trace_onnx`), the checked classifier export, and ONNX Runtime sessions.

    from gpunet.deploy import export_onnx, onnx_session
    model = gpunet.create_model("gpunet_d1", pretrained=True)
    report = export_onnx(model, "gpunet_d1.onnx")          # fused, dynamic batch, parity-checked
    session = onnx_session("gpunet_d1.onnx", threads=4)
    logits = session.run(["logits"], {"images": batch_numpy})[0]

`trace_onnx` turns any module with one image-like input into an in-memory ModelProto (input
`images`, output `logits`); `export_onnx` uses it for classifiers and adds the gpunet metadata,
onnx's checker and the ONNX Runtime parity check, and the architecture search uses it for
single layers. An fp16 export keeps float32 inputs and outputs (casts inside), so clients and
Triton configs do not change. Files are written atomically.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gpunet._io import atomic_path
from gpunet.deploy.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportReport,
    HalfPrecision,
    check_batches,
    check_export_path,
    check_parity,
    default_rtol,
    deploy_copy,
    export_img_size,
    parse_batch,
    quiet_exporter,
)
from gpunet.deploy.metadata import gpunet_version, model_metadata, set_metadata
from gpunet.deploy.packages import import_onnx, import_onnxruntime, onnxscript_available
from gpunet.errors import ExportError, SettingError

DEFAULT_OPSET = 18  # the opset torch's dynamo exporter emits natively (TensorRT 10 and ORT >= 1.14 read it)
LEGACY_OPSET = 17
MIN_OPSET = 7  # the oldest opset torch's exporters emit; ONNX Runtime has no kernels for older Mul/Sigmoid
EXPORTERS = ("auto", "dynamo", "legacy")
MAX_DYNAMIC_BATCH = 4096


def _torch_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def choose_exporter(exporter: str = "auto", opset: int | None = None) -> str:
    """"dynamo" or "legacy": `exporter`, or for "auto" dynamo when onnxscript, torch >= 2.9 and opset >= 18 allow.

    An `opset` outside MIN_OPSET .. the newest the installed onnx knows is refused here, before any tracing.
    """
    if opset is not None:
        check_opset(opset)
    if exporter == "auto":
        # the dynamo exporter emits opset >= 18 only (older opsets: a version conversion that fails on these graphs)
        dynamo_ok = onnxscript_available() and _torch_version() >= (2, 9) and (opset is None or opset >= DEFAULT_OPSET)
        return "dynamo" if dynamo_ok else "legacy"
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be 'auto', 'dynamo' or 'legacy', got {exporter!r}")
    if exporter == "dynamo" and not onnxscript_available():
        raise ExportError("torch's ONNX exporter needs onnxscript: pip install 'gpunet[export]' "
                          "(or pip install onnxscript), or pass exporter='legacy'")
    return exporter


def check_opset(opset: int) -> None:
    """ExportError unless `opset` is one gpunet can export and check: MIN_OPSET to the installed onnx's newest."""
    onnx = import_onnx()
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset!r}: gpunet exports ONNX opsets {MIN_OPSET} to {newest} ({MIN_OPSET}: the "
                          f"oldest torch's exporters emit; {newest}: the newest the installed onnx "
                          f"{onnx.__version__} knows); the default is {DEFAULT_OPSET}")


def trace_onnx(module: nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = True, opset: int | None = None,
               exporter: str = "auto", fp16: bool = False) -> Any:
    """`module` traced to an in-memory onnx.ModelProto: one input `images`, its first output `logits`.

    `input_shape` is the (N, ...) shape of the input. With `dynamic_batch` the first axis of the
    input and of the output is the symbol `batch` (traced at batch max(2, N)); without, it is N.
    A float32 CPU eval-mode copy is traced (the caller's module is untouched); `fp16` computes
    in float16 with float32 inputs and outputs. `opset` defaults to 18 (dynamo) or 17 (legacy);
    `exporter` as in `export_onnx`. Export failures are ExportErrors.
    """
    used = choose_exporter(exporter, opset)
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise SettingError(f"input_shape must be positive dimensions, batch first, got {tuple(input_shape)}")
    net: nn.Module = copy.deepcopy(module).float().cpu().eval()
    if fp16:
        net = HalfPrecision(net).eval()
    fixed_batch = None if dynamic_batch else shape[0]
    example = torch.randn(max(2, shape[0]) if dynamic_batch else shape[0], *shape[1:])
    try:
        proto = (_export_dynamo if used == "dynamo" else _export_legacy)(net, example, dynamic_batch, opset)
    except ExportError:
        raise
    except Exception as exc:  # torch.export / the exporters raise many types; report them as one
        raise ExportError(f"torch.onnx.export ({used} exporter) failed: {type(exc).__name__}: {exc}") from exc
    _name_batch_axes(proto, fixed_batch)
    proto.producer_name = "gpunet"
    proto.producer_version = gpunet_version()
    return proto


def _export_dynamo(net: nn.Module, example: torch.Tensor, dynamic_batch: bool, opset: int | None) -> Any:
    dynamic = ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},) if dynamic_batch else None
    with quiet_exporter():
        program = torch.onnx.export(net, (example,), None, dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset or DEFAULT_OPSET,
                                    dynamic_shapes=dynamic, external_data=False, optimize=True, verbose=False)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    if opset is not None and onnx_opset(proto) != opset:
        raise ExportError(f"torch's dynamo ONNX exporter produced opset {onnx_opset(proto)}, not {opset}; use "
                          "exporter='legacy' for opsets below 18")
    return proto


def _export_legacy(net: nn.Module, example: torch.Tensor, dynamic_batch: bool, opset: int | None) -> Any:
    onnx = import_onnx()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="gpunet-onnx-") as tmp, quiet_exporter():
        tmp_path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(net, (example,), tmp_path, dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset or LEGACY_OPSET, dynamic_axes=axes,
                          do_constant_folding=True)
        return onnx.load(tmp_path)


def _name_batch_axes(proto: Any, fixed_batch: int | None) -> None:
    """Dynamic exports: the first axis of inputs and outputs is the symbol `batch`; fixed: that number."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        if fixed_batch:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = fixed_batch
        else:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"


def onnx_opset(proto: Any) -> int | None:
    """The default-domain opset of an onnx.ModelProto."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                batch: int | str = "dynamic", opset: int | None = None, fp16: bool = False, fuse: bool = True,
                check: bool = True, exporter: str = "auto", threads: int | None = None,
                rtol: float | None = None) -> ExportReport:
    """Export a GPUNet classifier to ONNX (see the module docstring for the interface).

    `batch="dynamic"` gives a symbolic batch axis; an integer fixes it. `fp16` computes in
    float16 (inputs/outputs stay float32). `fuse` folds BatchNorm (on a copy). `check` runs the
    file in ONNX Runtime (CPU) against PyTorch float32 on the same random input, at batch 1 and 3
    (dynamic) or the fixed batch, and raises ExportError when max |diff| exceeds 1e-4 x max |logit|
    (5e-2 for fp16; `rtol` overrides); a file that fails is not written. `exporter`: "dynamo"
    (torch.export based, needs onnxscript), "legacy" (TorchScript based, deprecated by torch) or
    "auto" (dynamo when onnxscript is installed, torch >= 2.9 and opset >= 18; else legacy).
    """
    check_export_path(path)
    onnx = import_onnx()
    size = export_img_size(model, img_size)
    fixed = parse_batch(batch)
    used = choose_exporter(exporter, opset)
    reference = deploy_copy(model, fuse)
    proto = trace_onnx(reference, (fixed or 2, 3, size, size), dynamic_batch=fixed is None, opset=opset,
                       exporter=used, fp16=fp16)
    set_metadata(proto, model_metadata(model, size, fused=fuse, precision="fp16" if fp16 else "fp32"))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises several checker/shape-inference error types
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    data = proto.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError("the ONNX model is over 2 GiB; protobuf cannot hold it in one file")
    report = ExportReport(path=os.fspath(path), format="onnx", opset=onnx_opset(proto), size_bytes=len(data),
                          img_size=size, batch="dynamic" if fixed is None else fixed, fp16=fp16, fused=fuse,
                          exporter=used)
    with atomic_path(path) as tmp:  # checked before it replaces `path`: a failing export leaves nothing behind
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            report.batch_sizes = check_batches(fixed)
            report.max_abs_diff, report.tolerance = _check_onnx(tmp, os.fspath(path), reference, size,
                                                                report.batch_sizes, default_rtol(fp16, rtol), threads)
    return report


def _check_onnx(file: str, path: str, reference: nn.Module, img_size: int, batches: Sequence[int], rtol: float,
                threads: int | None) -> tuple[float, float]:
    """`check_parity` of the ONNX `file` (about to become `path`) in ONNX Runtime on the CPU."""
    try:
        session = onnx_session(file, threads=threads, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise ExportError(f"{path}: ONNX Runtime cannot load the exported model ({exc}); nothing was written "
                          "(check=False / --no-check writes it unchecked)") from exc
    return check_parity(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], path, "ONNX Runtime", reference,
                        img_size, batches, rtol)


def onnx_session(path: str | os.PathLike[str], *, threads: int | None = None,
                 providers: Sequence[Any] | None = None) -> Any:
    """An ONNX Runtime InferenceSession with all graph optimizations and `threads` intra-op threads.

    `providers` defaults to CUDA (when onnxruntime-gpu has it) then CPU; TensorRT's provider is
    only used when asked for explicitly (it builds engines on first run).
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if threads < 0:
            raise SettingError(f"threads must be >= 0 (0: ONNX Runtime's default), got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such ONNX file")
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=list(providers))
