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

What a layer is (its resolution, padding, activation, module) comes from the builder
(`gpunet.builder.layer_geometry` and `build_layer`), the one place that knows NVIDIA's rules;
timing from `gpunet.timing`, ONNX files from `gpunet.deploy.onnx`, whole-model TensorRT
engines from the benchmark's backend registry (`gpunet.bench.backends`).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet.arch import Architecture, FusedIRBSpec, HeadSpec, IRBSpec, TailSpec
from gpunet.builder import LayerGeometry, build_layer, layer_geometry
from gpunet.device import PRECISIONS, cpu_threads, resolve_device
from gpunet.errors import LatencyError, SettingError
from gpunet.search.config import LATENCY_BACKENDS as BACKENDS
from gpunet.timing import sample_times_until


@dataclass(frozen=True)
class LatencyContext:
    """What a latency is measured in: device, backend, precision, batch size, CPU threads, and for how long."""

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
        try:
            dev = resolve_device(self.device)
        except SettingError as e:
            raise LatencyError(str(e)) from None
        object.__setattr__(self, "device", str(dev))  # "auto" -> what it resolved to (keys name the device)
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
    """Median milliseconds of `run(example)` after warm-up (>= min_repeats calls and >= min_time_s).

    On CPU torch runs with `ctx.threads` threads for the measurement; the caller's count is restored.
    """
    device = torch.device(ctx.device)

    def call() -> Any:
        return run(example)

    with cpu_threads(max(1, ctx.threads) if device.type == "cpu" else None), torch.inference_mode():
        samples = sample_times_until(call, warmup=3, min_repeats=ctx.min_repeats, min_seconds=ctx.min_time_s,
                                     device=device)
    return float(np.median(samples)) * 1e3


def _onnx_runner(module: nn.Module, example: torch.Tensor, ctx: LatencyContext,
                 workdir: str) -> Callable[[torch.Tensor], Any]:
    """`module` traced to ONNX (`gpunet.deploy.onnx`) and run by ONNX Runtime; the runner ignores its argument
    and always feeds `example` (converted once, so the conversion is not timed)."""
    from gpunet.deploy.onnx import trace_onnx
    from gpunet.deploy.runtime import open_runner

    # the legacy exporter, as before: seconds faster per layer than dynamo, and the table's entries stay comparable
    proto = trace_onnx(module, tuple(example.shape), dynamic_batch=False, exporter="legacy",
                       fp16=ctx.precision == "fp16")
    path = Path(workdir) / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    runner = open_runner(path, "onnxruntime", threads=max(1, ctx.threads), precision=ctx.precision,
                         device=ctx.device)
    arr = example.float().cpu().numpy().astype(runner.input_dtype)
    return lambda _: runner.run(arr)


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
    return _measure_tensorrt(model, arch.img_resolution, ctx)


def _measure_tensorrt(model: nn.Module, img_size: int, ctx: LatencyContext) -> float:
    """Whole-model TensorRT latency through the benchmark's backend registry."""
    from gpunet.bench.backends import BackendRequest, Skip, build_runner
    from gpunet.bench.models import ModelSpec

    device = torch.device(ctx.device)
    spec = ModelSpec("search", img_size, 0, None, lambda: model, True)
    example = torch.randn(ctx.batch_size, 3, img_size, img_size, device=device, dtype=PRECISIONS[ctx.precision])
    with tempfile.TemporaryDirectory(prefix="gpunet_trt_") as tmp:
        try:
            built = build_runner("tensorrt", BackendRequest(spec, model, ctx.precision, device, example, Path(tmp)))
        except Skip as e:
            raise LatencyError(f"tensorrt: {e}") from None
        return time_runner(built.run, example, ctx)


# ---------------------------------------------------------------------------- layers

def layer_key(layer: LayerGeometry, distill: bool, ctx: LatencyContext) -> str:
    """Everything that changes the layer's cost, as one string (the builder's geometry, then the context)."""
    spec = layer.spec
    parts = [spec.layer_type, f"in{spec.in_channels}", f"out{spec.out_channels}"]
    if isinstance(spec, TailSpec):
        parts += [f"cls{spec.num_classes}"]
    else:
        if not isinstance(spec, HeadSpec):
            parts += [f"k{layer.kernel_size}", f"s{layer.stride}"]
            if isinstance(spec, (IRBSpec, FusedIRBSpec)):
                parts += [f"e{spec.expansion:g}", f"se{int(bool(spec.use_se))}"]
        parts += [f"act{layer.act}"]
    lc = ctx.layer_context()
    parts += [f"r{layer.in_resolution}", f"d{int(distill)}", f"b{lc.batch_size}", lc.device_name,
              lc.device.split(":")[0], lc.backend, lc.precision, f"t{lc.threads}"]
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

    def keys_of(self, arch: Architecture) -> list[tuple[str, LayerGeometry]]:
        """(key, geometry) of every layer of `arch` (stem, blocks, tail), as the builder makes them."""
        return [(layer_key(g, arch.distill, self.ctx), g) for g in layer_geometry(arch)]

    def lookup(self, arch: Architecture) -> float:
        """Sum of the layers' latencies, measuring (and saving) the ones not in the table yet."""
        total, new = 0.0, False
        lc = self.ctx.layer_context()
        for key, g in self.keys_of(arch):
            if key not in self.entries:
                r = g.in_resolution
                self.entries[key] = measure_module(build_layer(arch, g.index), (g.spec.in_channels, r, r), lc)
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
