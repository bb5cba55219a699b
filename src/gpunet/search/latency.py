"""Latency on the target device: real measurements, a per-layer lookup table and a fitted predictor.

`LatencyContext` says what is measured: device, backend (`eager`, `onnxruntime`, `tensorrt`),
precision, batch size and CPU threads. `measure_model` times a whole architecture for real;
`LatencyTable` times each distinct layer configuration once, in isolation (stem, one block,
or the tail), keyed by everything that changes its cost (type, channels, kernel, stride,
expansion, activation, SE, input resolution at that layer, batch, device, backend,
precision, threads), and keeps the results in a JSON file that later runs reuse.
`LatencyPredictor` sums the table over an architecture's layers and maps the sum to a
whole-model latency with a linear correction `a * sum + b` fitted on a few whole-model
measurements (the sum misses inter-layer effects: memory traffic, launch gaps, fusion).

For the `tensorrt` backend the layer table is measured with eager fp16 on the same GPU
(building a TensorRT engine per layer would take minutes each); the correction fitted on
real TensorRT whole-model measurements maps it onto TensorRT's scale.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet.arch import Architecture, ConvSpec, FusedIRBSpec, HeadSpec, IRBSpec, LayerSpec, TailSpec
from gpunet.benchmark import sync_device

BACKENDS = ("eager", "onnxruntime", "tensorrt")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class LatencyError(RuntimeError):
    """A backend/precision/device combination that cannot be measured here."""


@dataclass(frozen=True)
class LatencyContext:
    device: str = "cpu"
    backend: str = "eager"
    precision: str = "fp32"
    batch_size: int = 1
    threads: int = 1
    min_time_s: float = 0.15  # per measurement, after warm-up
    min_repeats: int = 10

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LatencyError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise LatencyError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise LatencyError("--device cuda: CUDA is not available on this machine")
        if dev.type == "cpu" and self.precision == "fp16":
            raise LatencyError("fp16 on CPU: PyTorch has no fast CPU fp16 kernels (use fp32 or bf16)")
        if self.backend == "tensorrt" and dev.type != "cuda":
            raise LatencyError("the tensorrt backend needs --device cuda")
        if self.backend in ("onnxruntime", "tensorrt") and self.precision == "bf16":
            raise LatencyError(f"{self.backend}: fp32 or fp16")

    @property
    def device_name(self) -> str:
        dev = torch.device(self.device)
        if dev.type == "cuda":
            return torch.cuda.get_device_name(dev).replace(" ", "_")
        return (platform.processor() or platform.machine() or "cpu").replace(" ", "_")

    def describe(self) -> str:
        return (f"{self.device_name} ({self.device}), {self.backend} {self.precision}, batch {self.batch_size}"
                + (f", {self.threads} thread(s)" if self.device.startswith("cpu") else ""))

    def layer_context(self) -> LatencyContext:
        """The context layers are measured in (TensorRT layers: eager fp16, see the module doc)."""
        if self.backend == "tensorrt":
            return replace(self, backend="eager", precision="fp16")
        return self


# ---------------------------------------------------------------------------- timing

def time_runner(run: Callable[[torch.Tensor], Any], example: torch.Tensor, ctx: LatencyContext) -> float:
    """Median milliseconds of `run(example)` after warm-up (>= min_repeats calls and >= min_time_s)."""
    device = torch.device(ctx.device)
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, ctx.threads))
    try:
        with torch.inference_mode():
            for _ in range(3):
                run(example)
            sync_device(device)
            samples: list[float] = []
            start = time.perf_counter()
            while len(samples) < ctx.min_repeats or (time.perf_counter() - start < ctx.min_time_s
                                                     and len(samples) < 1000):
                t0 = time.perf_counter()
                run(example)
                sync_device(device)
                samples.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old_threads)
    return statistics.median(samples) * 1e3


def _onnx_runner(module: nn.Module, example: torch.Tensor, ctx: LatencyContext, workdir: str) -> Callable[..., Any]:
    import onnxruntime as ort

    from gpunet.export import onnx_session

    fp16 = ctx.precision == "fp16"
    m = copy.deepcopy(module).float().cpu().eval()
    path = os.path.join(workdir, "m.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = example.float().cpu()
        try:
            torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        except TypeError:  # older torch without the dynamo flag
            torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], opset_version=17)
    if fp16:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(path)), path)
    cuda = ctx.device.startswith("cuda")
    providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    if providers[0] not in ort.get_available_providers():
        raise LatencyError(f"onnxruntime: {providers[0]} is not available")
    sess = onnx_session(path, threads=max(1, ctx.threads), providers=providers)
    arr = x.numpy().astype(np.float16 if fp16 else np.float32)

    def run(_: torch.Tensor) -> Any:
        return sess.run(None, {"x": arr})

    return run


def measure_module(module: nn.Module, input_shape: Sequence[int], ctx: LatencyContext) -> float:
    """Milliseconds of one forward pass of `module` on a (batch, *input_shape) input in `ctx`."""
    device = torch.device(ctx.device)
    dtype = PRECISIONS[ctx.precision]
    module = module.eval()
    example = torch.randn(ctx.batch_size, *input_shape)
    if ctx.backend == "eager":
        m = module.to(device=device, dtype=dtype)
        x = example.to(device=device, dtype=dtype)
        return time_runner(m, x, ctx)
    if ctx.backend == "onnxruntime":
        with tempfile.TemporaryDirectory(prefix="gpunet_lat_") as tmp:
            return time_runner(_onnx_runner(module, example, ctx, tmp), example, ctx)
    raise LatencyError(f"measure_module: backend {ctx.backend!r} measures whole models only")


def measure_model(arch: Architecture, ctx: LatencyContext) -> float:
    """Real whole-model latency (ms) of `arch` (random weights, BatchNorm as built) in `ctx`."""
    from gpunet.model import GPUNet

    model = GPUNet(arch).eval()
    shape = (3, arch.img_resolution, arch.img_resolution)
    if ctx.backend != "tensorrt":
        return measure_module(model, shape, ctx)
    from gpunet.benchmark import ModelSpec, build_runner

    device = torch.device(ctx.device)
    spec = ModelSpec("search", arch.img_resolution, 0, None, lambda: model, True)
    example = torch.randn(ctx.batch_size, *shape, device=device,
                          dtype=PRECISIONS[ctx.precision])
    with tempfile.TemporaryDirectory(prefix="gpunet_trt_") as tmp:
        args = argparse.Namespace(threads=None, calibration_dir=None)
        run, _, _ = build_runner("tensorrt", spec, model, ctx.precision, device, args, Path(tmp), example)
        return time_runner(run, example, ctx)


# ---------------------------------------------------------------------------- layers

def _conv_out(r: int, k: int, s: int, p: int) -> int:
    return (r + 2 * p - k) // s + 1


def layer_resolutions(arch: Architecture) -> list[int]:
    """Input spatial size of every layer of `arch` (stem, blocks, tail), following the builder's paddings."""
    r = arch.img_resolution
    out = [r]
    r = _conv_out(r, 3, 2, 1)  # stem (head_large adds 3x3 stride-1 convs: same size)
    for b in arch.blocks:
        out.append(r)
        k, s = b.kernel_size, b.stride
        if isinstance(b, ConvSpec):
            p = ((s - 1) + (k - 1)) // 2
        elif isinstance(b, FusedIRBSpec):
            p = k // 2 if (arch.distill or s == 1) else 0
        else:
            p = k // 2
        r = _conv_out(r, k, s, p)
    out.append(r)
    return out


class _Tail(nn.Module):
    def __init__(self, spec: TailSpec, distill: bool) -> None:
        super().__init__()
        from gpunet.blocks import ConvBnAct
        from gpunet.builder import DISTILLED_TAIL_WIDTH, EPS_DISTILLED, EPS_NON_DISTILLED

        width = DISTILLED_TAIL_WIDTH if distill else spec.out_channels
        eps = EPS_DISTILLED if distill else EPS_NON_DISTILLED
        self.head = ConvBnAct(spec.in_channels, width, 1, act="relu", eps=eps)
        self.proj = nn.Conv2d(width, spec.out_channels, 1, bias=False) if distill else None
        self.fc = nn.Linear(spec.out_channels, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x).mean((2, 3), keepdim=True)
        if self.proj is not None:
            x = torch.relu(self.proj(x))
        return self.fc(x.flatten(1))


def layer_module(layer: LayerSpec, distill: bool) -> nn.Module:
    """The module the builder makes for this one layer (drop path off)."""
    from gpunet.arch import Architecture as _A
    from gpunet.builder import build_block, build_stem

    if isinstance(layer, HeadSpec):
        dummy = _A(32, distill, (layer, TailSpec(layer.out_channels, 8, 2)))
        return build_stem(dummy)
    if isinstance(layer, TailSpec):
        return _Tail(layer, distill)
    return build_block(layer, distill, 0.0)


def layer_key(layer: LayerSpec, resolution: int, distill: bool, ctx: LatencyContext) -> str:
    """Everything that changes the layer's cost, as one string."""
    parts = [layer.layer_type, f"in{layer.in_channels}", f"out{layer.out_channels}"]
    if isinstance(layer, HeadSpec):
        parts += [f"act{'relu' if distill else (layer.act or 'swish')}"]
    elif isinstance(layer, TailSpec):
        parts += [f"cls{layer.num_classes}"]
    else:
        parts += [f"k{layer.kernel_size}", f"s{layer.stride}"]
        if isinstance(layer, (IRBSpec, FusedIRBSpec)):
            parts += [f"e{layer.expansion:g}", f"se{int(bool(layer.use_se))}"]
        parts += [f"act{'relu' if distill else layer.act}"]
    lc = ctx.layer_context()
    parts += [f"r{resolution}", f"d{int(distill)}", f"b{lc.batch_size}", lc.device_name, lc.device.split(":")[0],
              lc.backend, lc.precision, f"t{lc.threads}"]
    return "|".join(parts)


class LatencyTable:
    """Per-layer latencies (ms), measured once per configuration and kept in a JSON file."""

    def __init__(self, ctx: LatencyContext, path: str | os.PathLike[str] | None = None) -> None:
        self.ctx = ctx
        self.path = os.fspath(path) if path else None
        self.entries: dict[str, float] = {}
        self.measurements = 0  # layers measured by this object (not read from disk)
        if self.path and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            self.entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}

    def keys_of(self, arch: Architecture) -> list[tuple[str, LayerSpec, int]]:
        res = layer_resolutions(arch)
        return [(layer_key(layer, r, arch.distill, self.ctx), layer, r)
                for layer, r in zip(arch.layers, res, strict=True)]

    def lookup(self, arch: Architecture) -> float:
        """Sum of the layers' latencies, measuring (and saving) the ones not in the table yet."""
        total, new = 0.0, False
        lc = self.ctx.layer_context()
        for key, layer, r in self.keys_of(arch):
            if key not in self.entries:
                self.entries[key] = measure_module(layer_module(layer, arch.distill), (layer.in_channels, r, r), lc)
                self.measurements += 1
                new = True
            total += self.entries[key]
        if new:
            self.save()
        return total

    def save(self) -> None:
        if not self.path:
            return
        from gpunet._io import atomic_write_bytes

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # merge with what another run may have added meanwhile (shared --lut)
        entries = dict(self.entries)
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    entries = {**json.load(f).get("entries", {}), **entries}
            except (OSError, ValueError):
                pass
        text = json.dumps({"version": 1, "entries": dict(sorted(entries.items()))}, indent=1) + "\n"
        atomic_write_bytes(self.path, text.encode())


@dataclass
class PredictorQuality:
    spearman: float
    mape: float  # percent
    n: int
    predicted_ms: list[float]
    measured_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyPredictor:
    """Whole-model latency ~= a * (sum of the layer table) + b."""

    def __init__(self, table: LatencyTable, a: float = 1.0, b: float = 0.0) -> None:
        self.table, self.a, self.b = table, a, b

    def predict(self, arch: Architecture) -> float:
        return self.a * self.table.lookup(arch) + self.b

    def fit(self, archs: Sequence[Architecture], measured_ms: Sequence[float]) -> None:
        """Least-squares fit of the correction on whole-model measurements (ratio only if < 3 points)."""
        sums = np.array([self.table.lookup(a) for a in archs], dtype=np.float64)
        y = np.asarray(measured_ms, dtype=np.float64)
        if len(sums) >= 3 and np.ptp(sums) > 0:
            a, b = np.polyfit(sums, y, 1)
            if a > 0:
                self.a, self.b = float(a), float(b)
                return
        self.a, self.b = float(np.sum(y) / max(np.sum(sums), 1e-12)), 0.0

    def quality(self, archs: Sequence[Architecture], measured_ms: Sequence[float]) -> PredictorQuality:
        pred = [self.predict(a) for a in archs]
        return PredictorQuality(spearman(pred, measured_ms), mape(pred, measured_ms), len(pred),
                                [round(p, 4) for p in pred], [round(m, 4) for m in measured_ms])


# ---------------------------------------------------------------------------- metrics

def _ranks(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(len(a), dtype=np.float64)
    for v in np.unique(a):  # average ranks of ties
        idx = np.flatnonzero(a == v)
        if idx.size > 1:
            ranks[idx] = ranks[idx].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (nan for fewer than 2 points or constant input)."""
    if len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def mape(pred: Sequence[float], true: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(p - t) / np.abs(t)) * 100.0) if len(t) else float("nan")
