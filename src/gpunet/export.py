"""Deployment formats: ONNX (checked in ONNX Runtime), OpenVINO IR, TorchScript, a Triton repository, TensorRT.

    from gpunet.export import export_onnx, onnx_session
    model = gpunet.create_model("gpunet_d1", pretrained=True)
    report = export_onnx(model, "gpunet_d1.onnx")          # fused, dynamic batch, parity-checked
    session = onnx_session("gpunet_d1.onnx", threads=4)
    logits = session.run(["logits"], {"images": batch_numpy})[0]

Every exported file takes one input `images` (N, 3, R, R) float32, normalised like
`gpunet.eval_transform(model)` produces, and gives one output `logits` (N, num_classes)
float32. An `--fp16` ONNX keeps float32 inputs and outputs (casts inside), so clients and
Triton configs do not change. The ONNX metadata (`read_metadata`) carries the architecture,
the preprocessing, the class names and the gpunet version, so the file is self-describing.

Models are copied before fusing (BatchNorm folded, see `gpunet.deploy.fuse`): the caller's
model is never modified. Files are written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import importlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet._io import atomic_path, atomic_write_bytes

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18  # the opset torch's dynamo exporter emits natively (TensorRT 10 and ORT >= 1.14 read it)
LEGACY_OPSET = 17
FP32_RTOL = 1e-4  # max |onnx - torch| allowed, relative to max |logit|
FP16_RTOL = 5e-2
CHECK_BATCHES_DYNAMIC = (1, 3)
FORMATS = ("onnx", "openvino", "torchscript", "tensorrt", "triton")

# metadata_props keys written into every exported ONNX file
META_ARCHITECTURE = "gpunet.architecture"  # NVIDIA-format JSON list
META_PREPROCESS = "gpunet.preprocess"  # {"input_size", "crop_pct", "interpolation", "mean", "std"}
META_LABELS = "gpunet.labels"  # JSON list of class names, index order
META_VERSION = "gpunet.version"
META_MODEL = "gpunet.model"  # zoo name or "custom"
META_NUM_CLASSES = "gpunet.num_classes"
META_FUSED = "gpunet.fused"
META_PRECISION = "gpunet.precision"  # "fp32" | "fp16" | "int8"
_JSON_KEYS = (META_ARCHITECTURE, META_PREPROCESS, META_LABELS)
_META_KEYS = (*_JSON_KEYS, META_VERSION, META_MODEL, META_NUM_CLASSES, META_FUSED, META_PRECISION)


class ExportError(ValueError):
    """An export could not be made or failed its check (the message says why and what to do)."""


@dataclass
class ExportReport:
    """What an export wrote and how closely it matches PyTorch."""

    path: str
    format: str = "onnx"
    max_abs_diff: float | None = None  # vs the PyTorch float32 model on the same random input; None: unchecked
    tolerance: float | None = None
    batch_sizes: tuple[int, ...] = ()  # batch sizes the check ran
    opset: int | None = None
    size_bytes: int = 0
    img_size: int = 0
    batch: int | str = "dynamic"
    fp16: bool = False
    fused: bool = True
    exporter: str = ""
    extra_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


# ---------------------------------------------------------------------------- helpers

def _version() -> str:
    from gpunet import __version__

    return __version__


def preprocess_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """input_size, crop_pct, interpolation, mean, std: the model's pretrained config or the eval defaults."""
    from gpunet.transforms import preprocess_config

    cfg = preprocess_config(model)
    size = int(img_size or cfg["input_size"][-1])
    return {"input_size": [3, size, size], "crop_pct": float(cfg["crop_pct"]),
            "interpolation": str(cfg["interpolation"]), "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]]}


def _img_size(model: nn.Module, img_size: int | None) -> int:
    if img_size is not None:
        if int(img_size) < 32:
            raise ExportError(f"img_size {img_size} is too small: GPUNets downsample by 32 (use 32 px or more)")
        return int(img_size)
    return int(preprocess_config(model)["input_size"][-1])


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n <= 0:
        raise ExportError("only a classifier with num_classes > 0 can be exported (a GPUNet from "
                          "gpunet.create_model; feature extractors and headless models are not supported)")
    return n


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("name") or "custom")


def _labels(model: nn.Module) -> list[str]:
    from gpunet.labels import class_names

    return class_names(_num_classes(model))


def _deploy_copy(model: nn.Module, fuse: bool) -> nn.Module:
    """A float32 CPU eval-mode copy (fused if asked); the caller's model is untouched."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"expected a torch.nn.Module (a GPUNet), got {type(model).__name__}")
    net = copy.deepcopy(model).float().cpu().eval()
    if fuse:
        from gpunet.deploy import fuse as fuse_model

        net = fuse_model(net)
    return net


class _HalfPrecision(nn.Module):
    """float32 in -> float16 compute -> float32 out, so clients keep feeding float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def _metadata(model: nn.Module, img_size: int, *, fused: bool, precision: str) -> dict[str, str]:
    arch = getattr(model, "arch", None)
    meta = {
        META_PREPROCESS: json.dumps(preprocess_config(model, img_size)),
        META_LABELS: json.dumps(_labels(model)),
        META_VERSION: _version(),
        META_MODEL: _model_name(model),
        META_NUM_CLASSES: str(_num_classes(model)),
        META_FUSED: "true" if fused else "false",
        META_PRECISION: precision,
    }
    if arch is not None and hasattr(arch, "to_json"):
        meta[META_ARCHITECTURE] = json.dumps(arch.to_json())
    return meta


def set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """Replace (or add) `metadata_props` entries of an onnx.ModelProto."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for key, value in [*keep, *meta.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path_or_proto: Any) -> dict[str, Any]:
    """The gpunet metadata of an exported ONNX or OpenVINO (.xml) file (JSON fields decoded; the rest as text)."""
    if isinstance(path_or_proto, (str, os.PathLike)) and os.fspath(path_or_proto).endswith(".xml"):
        return _decode_metadata(_openvino_metadata(path_or_proto), os.fspath(path_or_proto))
    if isinstance(path_or_proto, (str, os.PathLike)):
        onnx = _import_onnx()
        proto = onnx.load(os.fspath(path_or_proto), load_external_data=False)
    else:
        proto = path_or_proto
    return _decode_metadata({p.key: p.value for p in proto.metadata_props}, "ONNX")


def _decode_metadata(meta: dict[str, str], source: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(meta)
    for key in _JSON_KEYS:
        if key in meta:
            try:
                out[key] = json.loads(meta[key])
            except json.JSONDecodeError as exc:
                raise ExportError(f"{source} metadata {key} is not valid JSON: {exc}") from exc
    return out


def _require(module: str, why: str, extra: str = "export") -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"{why}: pip install 'gpunet[{extra}]'") from exc


def _import_onnx() -> Any:
    return _require("onnx", "ONNX export needs the `onnx` package (with onnxruntime, onnxscript)")


def _import_ort() -> Any:
    return _require("onnxruntime", "running ONNX models needs ONNX Runtime (onnxruntime-gpu on a CUDA machine)")


def _torch_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _importable(module: str) -> bool:
    """Whether an optional dependency imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _have_onnxscript() -> bool:
    return _importable("onnxscript")


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence the exporters' progress prints and deprecation chatter (errors still raise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*training mode.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _parse_batch(batch: int | str) -> int | None:
    """'dynamic' -> None; N -> N."""
    if isinstance(batch, str):
        if batch.strip().lower() == "dynamic":
            return None
        try:
            batch = int(batch)
        except ValueError:
            raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def _file_size(path: str | os.PathLike[str]) -> int:
    return os.path.getsize(path)


# ---------------------------------------------------------------------------- ONNX

def _onnx_proto(net: nn.Module, img_size: int, fixed_batch: int | None, opset: int | None, exporter: str) -> Any:
    """Trace `net` to an in-memory onnx.ModelProto with input `images` and output `logits`."""
    if exporter == "auto":
        # the dynamo exporter emits opset >= 18 only (older opsets: a version conversion that fails on these graphs)
        dynamo_ok = _have_onnxscript() and _torch_version() >= (2, 9) and (opset is None or opset >= DEFAULT_OPSET)
        exporter = "dynamo" if dynamo_ok else "legacy"
    if exporter not in ("dynamo", "legacy"):
        raise ExportError(f"exporter must be 'auto', 'dynamo' or 'legacy', got {exporter!r}")
    if exporter == "dynamo" and not _have_onnxscript():
        raise ExportError("torch's ONNX exporter needs onnxscript: pip install 'gpunet[export]' "
                          "(or pip install onnxscript), or pass exporter='legacy'")
    try:
        proto = (_export_dynamo if exporter == "dynamo" else _export_legacy)(net, img_size, fixed_batch, opset)
    except ExportError:
        raise
    except Exception as exc:  # torch.export / the exporters raise many types; report them as one
        raise ExportError(f"torch.onnx.export ({exporter} exporter) failed: {type(exc).__name__}: {exc}") from exc
    _name_batch_axes(proto, fixed_batch)
    proto.producer_name = "gpunet"
    proto.producer_version = _version()
    return proto, exporter


def _export_dynamo(net: nn.Module, img_size: int, fixed_batch: int | None, opset: int | None) -> Any:
    example = torch.randn(fixed_batch or 2, 3, img_size, img_size)
    dynamic = None if fixed_batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with _quiet_torch():
        program = torch.onnx.export(net, (example,), None, dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset or DEFAULT_OPSET,
                                    dynamic_shapes=dynamic, external_data=False, optimize=True, verbose=False)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    if opset is not None and _opset(proto) != opset:
        raise ExportError(f"torch's dynamo ONNX exporter produced opset {_opset(proto)}, not {opset}; use "
                          "exporter='legacy' for opsets below 18")
    return proto


def _export_legacy(net: nn.Module, img_size: int, fixed_batch: int | None, opset: int | None) -> Any:
    onnx = _import_onnx()
    example = torch.randn(fixed_batch or 2, 3, img_size, img_size)
    axes = None if fixed_batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with tempfile.TemporaryDirectory(prefix="gpunet-onnx-") as tmp, _quiet_torch():
        tmp_path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(net, (example,), tmp_path, dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset or LEGACY_OPSET, dynamic_axes=axes,
                          do_constant_folding=True)
        return onnx.load(tmp_path)


def _name_batch_axes(proto: Any, fixed_batch: int | None) -> None:
    """Dynamic exports: the first axis of input and output is the symbol `batch`; fixed: that number."""
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


def onnx_session(path: str | os.PathLike[str], *, threads: int | None = None,
                 providers: Sequence[Any] | None = None) -> Any:
    """An ONNX Runtime InferenceSession with all graph optimizations and `threads` intra-op threads.

    `providers` defaults to CUDA (when onnxruntime-gpu has it) then CPU; TensorRT's provider is
    only used when asked for explicitly (it builds engines on first run).
    """
    ort = _import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: ONNX Runtime's default), got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such ONNX file")
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=list(providers))


def _tolerance(reference: np.ndarray, rtol: float) -> float:
    return rtol * max(float(np.abs(reference).max()), 1e-6)


def _check_parity(run: Callable[[np.ndarray], np.ndarray], path: str, engine: str, reference: nn.Module,
                  img_size: int, batches: Sequence[int], rtol: float) -> tuple[float, float]:
    """Max |`run` - PyTorch| over `batches` (the same seeded random inputs); ExportError over tolerance."""
    gen = torch.Generator().manual_seed(0)
    worst, tol = 0.0, float("inf")
    for b in batches:
        x = torch.randn(b, 3, img_size, img_size, generator=gen)
        with torch.no_grad():
            expected = reference(x).float().numpy()
        got = np.asarray(run(x.numpy()))
        if got.shape != expected.shape:
            raise ExportError(f"{path}: {engine} gave shape {got.shape} for batch {b}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
        tol = min(tol, _tolerance(expected, rtol))
    if not np.isfinite(worst) or worst > tol:
        raise ExportError(f"{path}: {engine} disagrees with PyTorch: max |diff| {worst:.3g} > tolerance {tol:.3g} "
                          f"({rtol:g} x max |logit|) on batch sizes {list(batches)}; nothing was written")
    return worst, tol


def _check_onnx(file: str, path: str, reference: nn.Module, img_size: int, batches: Sequence[int], rtol: float,
                threads: int | None) -> tuple[float, float]:
    """`_check_parity` of the ONNX `file` (about to become `path`) in ONNX Runtime on the CPU."""
    try:
        session = onnx_session(file, threads=threads, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise ExportError(f"{path}: ONNX Runtime cannot load the exported model ({exc}); nothing was written "
                          "(check=False / --no-check writes it unchecked)") from exc
    return _check_parity(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0], path, "ONNX Runtime", reference,
                         img_size, batches, rtol)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                batch: int | str = "dynamic", opset: int | None = None, fp16: bool = False, fuse: bool = True,
                check: bool = True, exporter: str = "auto", threads: int | None = None,
                rtol: float | None = None) -> ExportReport:
    """Export a GPUNet classifier to ONNX; see the module docstring for the interface.

    `batch="dynamic"` gives a symbolic batch axis; an integer fixes it. `fp16` computes in
    float16 (inputs/outputs stay float32). `fuse` folds BatchNorm (on a copy). `check` runs the
    file in ONNX Runtime (CPU) against PyTorch float32 on the same random input, at batch 1 and 3
    (dynamic) or the fixed batch, and raises ExportError when max |diff| exceeds 1e-4 x max |logit|
    (5e-2 for fp16; `rtol` overrides). `exporter`: "dynamo" (torch.export based, needs
    onnxscript), "legacy" (TorchScript based, deprecated by torch) or "auto" (dynamo when
    onnxscript is installed, torch >= 2.9 and opset >= 18; else legacy).
    """
    onnx = _import_onnx()
    size = _img_size(model, img_size)
    fixed = _parse_batch(batch)
    reference = _deploy_copy(model, fuse)
    net: nn.Module = _HalfPrecision(copy.deepcopy(reference)).eval() if fp16 else reference
    proto, used = _onnx_proto(net, size, fixed, opset, exporter)
    set_metadata(proto, _metadata(model, size, fused=fuse, precision="fp16" if fp16 else "fp32"))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises several checker/shape-inference error types
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    data = proto.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError("the ONNX model is over 2 GiB; protobuf cannot hold it in one file")
    report = ExportReport(path=os.fspath(path), format="onnx", opset=_opset(proto), size_bytes=len(data),
                          img_size=size, batch="dynamic" if fixed is None else fixed, fp16=fp16, fused=fuse,
                          exporter=used)
    with atomic_path(path) as tmp:  # checked before it replaces `path`: a failing export leaves nothing behind
        with open(tmp, "wb") as f:
            f.write(data)
        if check:
            batches = CHECK_BATCHES_DYNAMIC if fixed is None else (fixed,)
            report.max_abs_diff, report.tolerance = _check_onnx(tmp, os.fspath(path), reference, size, batches,
                                                                rtol if rtol is not None else
                                                                FP16_RTOL if fp16 else FP32_RTOL, threads)
            report.batch_sizes = tuple(batches)
    return report


def _opset(proto: Any) -> int | None:
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


# ---------------------------------------------------------------------------- TorchScript

def export_torchscript(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                       fuse: bool = True, check: bool = True) -> ExportReport:
    """torch.jit.trace + freeze -> `path` (load with torch.jit.load). Checked against eager at batch 1 and 3.

    TorchScript is deprecated by PyTorch (FutureWarnings in torch 2.14); it still works and its
    warnings are silenced here. Prefer ONNX for new deployments.
    """
    size = _img_size(model, img_size)
    net = _deploy_copy(model, fuse)
    example = torch.randn(2, 3, size, size)
    report = ExportReport(path=os.fspath(path), format="torchscript", img_size=size, fused=fuse,
                          exporter="torch.jit.trace")
    with _quiet_torch(), torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
        frozen = torch.jit.freeze(traced)
        extra = {"gpunet_metadata.json": json.dumps(_metadata(model, size, fused=fuse, precision="fp32"))}
        with atomic_path(path) as tmp:  # checked before it replaces `path`
            torch.jit.save(frozen, tmp, _extra_files=extra)
            report.size_bytes = _file_size(tmp)
            if check:
                loaded = torch.jit.load(tmp, map_location="cpu")
                report.max_abs_diff, report.tolerance = _check_parity(
                    lambda x: loaded(torch.from_numpy(x)).numpy(), os.fspath(path), "TorchScript", net, size,
                    CHECK_BATCHES_DYNAMIC, FP32_RTOL)
                report.batch_sizes = CHECK_BATCHES_DYNAMIC
    return report


# ---------------------------------------------------------------------------- Triton

_TRITON_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def triton_config(name: str, *, img_size: int, num_classes: int, max_batch_size: int = 32,
                  tensorrt_accelerator: bool = False, tensorrt_precision: str = "FP16", instances: int = 1,
                  kind: str = "auto", max_queue_delay_us: int = 100) -> str:
    """config.pbtxt for an ONNX GPUNet in Triton's onnxruntime backend."""
    preferred = [b for b in (4, 8, 16, 32, 64, 128) if b <= max_batch_size // 2 or b == max_batch_size]
    preferred = sorted(set(preferred or [max_batch_size]))
    kinds = {"auto": None, "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
    if kind not in kinds:
        raise ExportError(f"instance kind must be one of {', '.join(kinds)}, got {kind!r}")
    group = f"count: {instances}" + (f"\n    kind: {kinds[kind]}" if kinds[kind] else "")
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
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator : [",
            "      {",
            '        name : "tensorrt"',
            f'        parameters {{ key: "precision_mode" value: "{tensorrt_precision}" }}',
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def export_triton(model: nn.Module, repo_dir: str | os.PathLike[str], *, name: str | None = None,
                  max_batch_size: int = 32, fp16: bool = False, tensorrt_accelerator: bool = False,
                  img_size: int | None = None, **kwargs: Any) -> Path:
    """A Triton model repository entry: `<repo>/<name>/{config.pbtxt, labels.txt, 1/model.onnx}`.

    Serve with `tritonserver --model-repository <repo>`. The ONNX file has a dynamic batch
    axis (Triton batches requests up to `max_batch_size`); `fp16` exports float16 compute with
    float32 inputs/outputs; `tensorrt_accelerator` asks Triton's onnxruntime backend to run
    the model through TensorRT (precision_mode FP16). Returns the model folder; keyword
    arguments of `export_triton_report` (version, instances, kind, fuse, check, opset) pass through.
    """
    return export_triton_report(model, repo_dir, name=name, max_batch_size=max_batch_size, fp16=fp16,
                                tensorrt_accelerator=tensorrt_accelerator, img_size=img_size, **kwargs)[0]


def export_triton_report(model: nn.Module, repo_dir: str | os.PathLike[str], *, name: str | None = None,
                         max_batch_size: int = 32, fp16: bool = False, tensorrt_accelerator: bool = False,
                         img_size: int | None = None, version: int = 1, instances: int = 1, kind: str = "auto",
                         tensorrt_precision: str = "FP16", fuse: bool = True, check: bool = True,
                         opset: int | None = None) -> tuple[Path, ExportReport]:
    """`export_triton`, also returning the ONNX export report (check result, size)."""
    name = name or _model_name(model).replace("custom", "gpunet")
    if not _TRITON_NAME.match(name):
        raise ExportError(f"Triton model name {name!r} must be letters, digits, '_', '.', '-' (no '/' or spaces)")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ExportError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    if version < 1:
        raise ExportError(f"Triton model versions start at 1, got {version}")
    if tensorrt_precision not in ("FP16", "FP32"):
        raise ExportError(f"tensorrt_precision must be FP16 or FP32, got {tensorrt_precision!r}")
    size = _img_size(model, img_size)
    num_classes = _num_classes(model)
    config = triton_config(name, img_size=size, num_classes=num_classes, max_batch_size=max_batch_size,
                           tensorrt_accelerator=tensorrt_accelerator, tensorrt_precision=tensorrt_precision,
                           instances=instances, kind=kind)
    folder = Path(repo_dir) / name
    report = export_onnx(model, folder / str(version) / "model.onnx", img_size=size, batch="dynamic", fp16=fp16,
                         fuse=fuse, check=check, opset=opset)
    atomic_write_bytes(folder / "config.pbtxt", config.encode())
    atomic_write_bytes(folder / "labels.txt", ("\n".join(_labels(model)) + "\n").encode())
    report.extra_files = [str(folder / "config.pbtxt"), str(folder / "labels.txt")]
    return folder, report


# ---------------------------------------------------------------------------- OpenVINO

# gpunet precision -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _import_openvino() -> Any:
    return _require("openvino", "OpenVINO export and inference need the `openvino` package", extra="openvino")


def openvino_available() -> bool:
    return _importable("openvino")


def _openvino_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The gpunet entries of an OpenVINO IR's rt_info (written by `export_openvino`)."""
    model = _read_openvino(_import_openvino().Core(), path)
    meta = {}
    for key in _META_KEYS:
        where = key.split(".", 1)
        if model.has_rt_info(where):
            meta[key] = model.get_rt_info(where).astype(str)
    return meta


def _read_openvino(core: Any, path: str | os.PathLike[str]) -> Any:
    """`core.read_model(path)`, with a one-line error naming the file instead of OpenVINO's trace."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such OpenVINO or ONNX model")
    try:
        return core.read_model(os.fspath(path))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"{os.fspath(path)}: OpenVINO cannot read this file as a model (an OpenVINO .xml with "
                          f"its .bin beside it, or an .onnx): {detail[:300]}") from exc


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _keep_signal_stack() -> Iterator[None]:
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
    before = _StackT()
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
    ov = _import_openvino()
    if precision not in OPENVINO_PRECISIONS:
        raise ExportError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    core = ov.Core()
    model = _read_openvino(core, path)
    if batch is not None:
        shape = model.input(0).get_partial_shape()
        shape[0] = batch
        model.reshape({model.input(0).get_any_name(): shape})
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    with _keep_signal_stack():
        return core.compile_model(model, device, config)


def export_openvino(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                    batch: int | str = "dynamic", fp16: bool = False, fuse: bool = True, check: bool = True,
                    threads: int | None = None, opset: int | None = None, rtol: float | None = None) -> ExportReport:
    """OpenVINO IR: `path` (.xml) and its weights beside it (.bin), converted from our ONNX graph.

    The fastest CPU runtime we measured for GPUNets (docs/performance.md). The metadata of
    `export_onnx` is kept in the IR's rt_info (`read_metadata(path)`). `fp16` stores the weights
    as float16 (half the size; OpenVINO still computes in the precision `openvino_model` asks
    for). `check` compiles the IR on the CPU at f32 precision and compares it with PyTorch like
    `export_onnx` does (same tolerances, `rtol` overrides). Both files are replaced only after
    the check passed.
    """
    ov = _import_openvino()
    path = os.fspath(path)
    if not path.endswith(".xml"):
        raise ExportError(f"{path}: an OpenVINO model is an .xml file with its weights in a .bin beside it; "
                          "name the output <name>.xml")
    size = _img_size(model, img_size)
    fixed = _parse_batch(batch)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gpunet-openvino-", dir=folder) as tmp:
        onnx_report = export_onnx(model, os.path.join(tmp, "model.onnx"), img_size=size, batch=batch, opset=opset,
                                  fuse=fuse, check=False)
        # Core.read_model (OpenVINO's C++ ONNX frontend), not ov.convert_model: the latter sends usage
        # data to Intel unless the user has opted out, and nobody exporting a model asked for that.
        ov_model = ov.Core().read_model(os.path.join(tmp, "model.onnx"))
        for key, value in _metadata(model, size, fused=fuse, precision="fp16" if fp16 else "fp32").items():
            ov_model.set_rt_info(value, key.split(".", 1))
        xml, weights = os.path.join(tmp, "model.xml"), os.path.join(tmp, "model.bin")
        ov.save_model(ov_model, xml, compress_to_fp16=fp16)
        report = ExportReport(path=path, format="openvino", opset=onnx_report.opset,
                              size_bytes=_file_size(xml) + _file_size(weights), img_size=size,
                              batch="dynamic" if fixed is None else fixed, fp16=fp16, fused=fuse,
                              exporter=f"openvino {ov.__version__}")
        if check:
            compiled = openvino_model(xml, threads=threads)
            batches = CHECK_BATCHES_DYNAMIC if fixed is None else (fixed,)
            report.max_abs_diff, report.tolerance = _check_parity(
                lambda x: compiled(x)[0], path, "OpenVINO", _deploy_copy(model, fuse), size, batches,
                rtol if rtol is not None else FP16_RTOL if fp16 else FP32_RTOL)
            report.batch_sizes = tuple(batches)
        os.replace(weights, path[: -len(".xml")] + ".bin")
        os.replace(xml, path)  # last: the .xml names the model, so it appears only with its weights in place
    report.extra_files = [path[: -len(".xml")] + ".bin"]
    return report


# ---------------------------------------------------------------------------- TensorRT

TENSORRT_INSTALL = (
    "TensorRT is not installed (`import tensorrt` failed). Building an engine needs a machine with an NVIDIA "
    "GPU, its driver and CUDA: `pip install tensorrt` (the wheels bundle TensorRT's libraries; `tensorrt` "
    "installs the CUDA 12 build, `pip install tensorrt-cu13` or `tensorrt-cu11` match other CUDA major versions "
    "of the driver; see "
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html). Alternatively "
    "export with --format onnx and build the engine on the GPU machine with `trtexec --onnx=model.onnx "
    "--fp16 --saveEngine=model.plan`. --format onnx and --format triton work without TensorRT.")


def tensorrt_available() -> bool:
    return _importable("tensorrt")


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise ExportError(TENSORRT_INSTALL) from exc
    return tensorrt


def export_tensorrt(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                    fp16: bool = True, batch: int = 1, workspace_gib: float = 2.0,
                    opset: int | None = None) -> ExportReport:
    """A serialized TensorRT engine (ONNX -> trt.OnnxParser -> trt.Builder), batch 1..`batch`.

    Engines are tied to the GPU model and TensorRT version that built them: build on the
    deployment machine. Without the `tensorrt` package this raises ExportError explaining
    what to install.
    """
    trt = _import_tensorrt()
    if not isinstance(batch, int) or batch < 1:
        raise ExportError(f"TensorRT batch must be a positive integer (the largest batch of the engine), got {batch!r}")
    size = _img_size(model, img_size)
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
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        major = int(str(trt.__version__).split(".")[0])
        creation = trt.NetworkDefinitionCreationFlag
        flags = 0
        if major < 10:
            flags |= 1 << int(creation.EXPLICIT_BATCH)
        if fp16_onnx and hasattr(creation, "STRONGLY_TYPED"):
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
        profile.set_shape(INPUT_NAME, (1, 3, size, size), (batch, 3, size, size), (batch, 3, size, size))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
    except ExportError:
        raise
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError etc. (e.g. no CUDA device)
        raise ExportError(f"TensorRT engine build failed: {exc} (a CUDA GPU with a working driver is needed)") \
            from exc
    if engine is None:
        raise ExportError("TensorRT engine build failed (see TensorRT's log above)")
    atomic_write_bytes(path, bytes(engine))
    return ExportReport(path=os.fspath(path), format="tensorrt", opset=report.opset, size_bytes=_file_size(path),
                        img_size=size, batch=batch, fp16=fp16, fused=True, exporter=f"tensorrt {trt.__version__}")


# ---------------------------------------------------------------------------- CLI

def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `gpunet export MODEL ... -o OUT` (see `run_export`)."""
    p.add_argument("model", metavar="MODEL",
                   help="zoo name (see `gpunet list`), NVIDIA-format JSON or gpunet .safetensors")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", "-w", metavar="PATH_OR_URL",
                   help="checkpoint: NGC zip, timm .pth.tar, state dict, .safetensors, or an http(s)/file URL")
    w.add_argument("--pretrained", action="store_true", help="NVIDIA's NGC checkpoint (downloaded once)")
    w.add_argument("--random-weights", action="store_true",
                   help="export an untrained model (smoke tests only: its outputs are meaningless)")
    p.add_argument("--format", "-f", choices=FORMATS, default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin; the fastest CPU runtime), torchscript, tensorrt "
                        "(engine; needs TensorRT and a GPU), or triton (a model repository entry: OUT is the "
                        "repository folder)")
    p.add_argument("--output", "-o", required=True, metavar="OUT",
                   help="output file (.onnx, .xml, .pt, .plan/.engine), or the repository folder for --format triton")
    p.add_argument("--batch", default="dynamic",
                   help="'dynamic' (default) or a fixed batch size N; for tensorrt the largest batch (default 1)")
    p.add_argument("--fp16", action="store_true",
                   help="float16 compute (ONNX/Triton: inputs and outputs stay float32; TensorRT: FP16 engine; "
                        "OpenVINO: float16 weights, computed in the runtime's precision)")
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (default: folded into the convs)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime / OpenVINO / TorchScript parity check")
    p.add_argument("--name", help="Triton model name (default: the zoo name)")
    p.add_argument("--max-batch-size", type=int, default=32, help="Triton max_batch_size (default 32)")
    p.add_argument("--tensorrt-accelerator", action="store_true",
                   help="Triton: run the ONNX model through TensorRT inside the onnxruntime backend")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _print_report(r: ExportReport) -> None:
    desc = f"{r.format}, {r.img_size} px, batch {r.batch}"
    if r.opset is not None and r.format in ("onnx", "openvino"):
        desc += f", opset {r.opset}"
    if r.fp16:
        desc += ", fp16"
    if not r.fused:
        desc += ", unfused"
    print(f"wrote {r.path} ({_human(r.size_bytes)}; {desc})")
    for extra in r.extra_files:
        print(f"wrote {extra}")
    if r.max_abs_diff is not None:
        engine = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "torchscript": "TorchScript"}[r.format]
        print(f"{engine} vs PyTorch: max abs diff {r.max_abs_diff:.3g} (tolerance {r.tolerance:.3g}, "
              f"batch sizes {', '.join(str(b) for b in r.batch_sizes)})")


def _load(args: argparse.Namespace, num_classes: int | None = None) -> nn.Module:
    from gpunet.classify import load_model

    model = load_model(args.model, weights=args.weights, pretrained=args.pretrained, num_classes=num_classes,
                       random_weights=args.random_weights, progress=sys.stderr.isatty())
    if args.random_weights and args.weights is None and not args.pretrained:
        _err(f"gpunet: WARNING: --random-weights: {args.model} has untrained, random weights; the exported "
             "model's outputs are MEANINGLESS (smoke test only).")
    return model


def run_export(args: argparse.Namespace) -> int:
    """`gpunet export`: build the model, write the chosen format, print what was written."""
    if args.format == "tensorrt":
        _import_tensorrt()  # fail before loading weights
    if args.format == "openvino":
        _import_openvino()
    if args.img_size is not None and args.img_size < 32:
        raise ExportError(f"--img-size {args.img_size} is too small (32 px or more)")
    model = _load(args)
    fuse, check = not args.no_fuse, not args.no_check
    if args.format == "onnx":
        _print_report(export_onnx(model, args.output, img_size=args.img_size, batch=args.batch, opset=args.opset,
                                  fp16=args.fp16, fuse=fuse, check=check))
    elif args.format == "openvino":
        _print_report(export_openvino(model, args.output, img_size=args.img_size, batch=args.batch, opset=args.opset,
                                      fp16=args.fp16, fuse=fuse, check=check))
    elif args.format == "torchscript":
        if args.batch != "dynamic" or args.fp16 or args.opset:
            _err("gpunet: note: --batch, --fp16 and --opset do not apply to --format torchscript (ignored)")
        _print_report(export_torchscript(model, args.output, img_size=args.img_size, fuse=fuse, check=check))
    elif args.format == "triton":
        if args.batch != "dynamic":
            raise ExportError("--format triton always exports a dynamic batch axis; set --max-batch-size instead "
                              "of --batch")
        folder, report = export_triton_report(
            model, args.output, name=args.name, max_batch_size=args.max_batch_size, fp16=args.fp16,
            tensorrt_accelerator=args.tensorrt_accelerator, img_size=args.img_size, fuse=fuse, check=check,
            opset=args.opset)
        _print_report(report)
        print(f"serve with: tritonserver --model-repository {os.path.abspath(args.output)}  "
              f"(model {folder.name!r})")
    else:  # tensorrt
        batch = 1 if args.batch == "dynamic" else _parse_batch(args.batch)
        assert batch is not None
        _print_report(export_tensorrt(model, args.output, img_size=args.img_size, fp16=args.fp16, batch=batch,
                                      opset=args.opset))
    return 0
