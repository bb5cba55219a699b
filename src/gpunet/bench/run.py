"""`benchmark(config)`: latency, throughput and achieved GFLOP/s of GPUNets (and timm peers) per backend.

Backends (each skipped with a reason where it cannot run; `gpunet.bench.backends` builds them):

* `eager`            the model as built: BatchNorm unfused, contiguous NCHW (the baseline)
* `fused`            `optimize_for_inference(model)`: BN folded, channels_last (the fastest eager path)
* `fused-microbatch` (CPU) `optimize_for_inference(model, micro_batch=1)`: the fused model one image at a
                     time (the high-resolution activations stay in cache; the fastest CPU path at batch > 1)
* `compile`          `optimize_for_inference(model, compile=True)`: torch.compile (inductor; CPU: weight
                     freezing; CUDA: CUDA graphs via mode="reduce-overhead")
* `cudagraph`        (CUDA) the fused model replayed as one captured CUDA graph
* `onnxruntime`      `gpunet.deploy.onnx.export_onnx`, run by ONNX Runtime (fp32; fp16 on CUDA)
* `onnxruntime-int8` `gpunet.deploy.quantize.quantize_onnx` (static INT8; calibration images from
                     `calibration_dir`, else synthetic ones: fine for speed, not for accuracy)
* `openvino`         (CPU) the exported ONNX run by OpenVINO, static batch shape, inference precision
                     pinned to the benchmarked one (f32 for fp32, bf16 for bf16); when openvino is installed
* `openvino-int8`    (CPU) the INT8 QDQ model of `onnxruntime-int8`, run by OpenVINO
* `tensorrt`         (CUDA) a TensorRT engine from `gpunet.deploy.tensorrt`, when tensorrt is installed

Timing (`gpunet.timing`): `torch.inference_mode`, `warmup` untimed calls, then `repeats` rounds;
each round times one call of every backend (interleaved, so a noisy neighbour hits all alike),
with CUDA synchronisation. On CPU each timed call follows a `settle_ms` pause: the runtimes'
worker threads spin for a while after a call, and without the pause the backend timed next
runs on cores they still occupy (measured: OpenVINO 92 ms right after ONNX Runtime, 68 ms
after a 50 ms pause). Reported: median/p90/p99 latency, images/s = batch / median, achieved
GFLOP/s = 2 * MACs * batch / median (MACs: `gpunet.info.count_macs`), and its share of a peak
measured in the same run (`gpunet.bench.machine.measure_peak`). The thread count of
`config.threads` holds for the run only: the caller's is restored afterwards.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpunet.bench.backends import BackendRequest, Built, Skip, build_runner
from gpunet.bench.config import PER_BATCH_BACKENDS, PRECISIONS, BenchmarkConfig
from gpunet.bench.machine import PEAK_SIZE, machine_info, measure_peak
from gpunet.bench.models import ModelSpec, resolve_models
from gpunet.bench.records import Record
from gpunet.device import cpu_threads, resolve_device
from gpunet.timing import sample_times, time_call

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default `log`: say nothing."""


def benchmark(config: BenchmarkConfig, *, log: Log = _quiet) -> dict[str, Any]:
    """Run `config`; return {"header": ..., "records": [...]} (nothing written). `log` gets progress lines."""
    device = resolve_device(config.device)
    with cpu_threads(config.threads) as threads:
        specs = resolve_models(config.models, config.peers, config.img_size)
        log(f"gpunet benchmark: device {device}, {threads} threads; measuring the matmul peak")
        peaks = {p: measure_peak(device, PRECISIONS[p]) for p in config.precisions
                 if not (device.type == "cpu" and p == "fp16")}
        header = {"machine": machine_info(device, threads), "peak": peaks, "peak_size": PEAK_SIZE,
                  "warmup": config.warmup, "repeats": config.repeats, "settle_ms": config.settle_ms,
                  "backends": list(config.backends), "batch_sizes": list(config.batch_sizes),
                  "precisions": list(config.precisions), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        records: list[Record] = []
        with tempfile.TemporaryDirectory(prefix="gpunet-bench-") as tmp:
            for spec in specs:
                run = _ModelRun(config, spec, spec.build().eval(), device, threads, Path(tmp), log)
                for precision in config.precisions:
                    records += run.measure(precision, peaks.get(precision, {}).get("peak_gflops"))
    log("gpunet benchmark: done")
    return {"header": header, "records": [asdict(r) for r in records]}


@dataclass
class _ModelRun:
    """One model through every backend, precision and batch size; runners are built once and reused."""

    config: BenchmarkConfig
    spec: ModelSpec
    model: nn.Module
    device: torch.device
    threads: int
    workdir: Path
    log: Log

    def measure(self, precision: str, peak: float | None) -> list[Record]:
        """Records of every (batch, backend) at `precision`, in the config's order."""
        runners: dict[str, Built | str] = {}  # a Skip reason or failure is remembered like a runner
        out: list[Record] = []
        for batch in self.config.batch_sizes:
            g = torch.Generator().manual_seed(batch)
            x = torch.randn(batch, 3, self.spec.img_size, self.spec.img_size, generator=g)
            x = x.to(device=self.device, dtype=PRECISIONS[precision])
            recs = {b: Record(self.spec.name, b, precision, batch, self.spec.img_size, self.threads,
                              str(self.device), macs=self.spec.macs, top1=self.spec.top1)
                    for b in self.config.backends}
            active = {b: run for b, rec in recs.items()
                      if (run := self._ready(b, rec, precision, x, runners)) is not None}
            self._time(active, recs)
            for rec in recs.values():
                if not rec.skipped:
                    rec.summarise(peak)
                self._report(rec)
                out.append(rec)
        return out

    def _ready(self, backend: str, rec: Record, precision: str, x: torch.Tensor,
               runners: dict[str, Built | str]) -> Callable[[], Any] | None:
        """The backend's runner bound to its input, warmed up; None (and `rec` marked skipped) if it cannot run."""
        key = f"{backend}@{x.shape[0]}" if backend in PER_BATCH_BACKENDS else backend
        try:
            if key not in runners:
                runners[key] = self._build(backend, precision, x)
            built = runners[key]
            if isinstance(built, str):
                raise Skip(built)
            rec.note = built.note
            call = functools.partial(built.run, x.contiguous(memory_format=torch.channels_last)
                                     if built.channels_last else x)
            with torch.inference_mode():
                sample_times(call, warmup=max(self.config.warmup, 1), repeats=0, device=self.device)
            return call
        except Skip as e:
            rec.skipped, rec.reason = True, str(e)
        except Exception as e:  # noqa: BLE001  (a backend failing here must not end the run)
            rec.skipped, rec.reason = True, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            runners[key] = rec.reason
        return None

    def _build(self, backend: str, precision: str, x: torch.Tensor) -> Built | str:
        self.log(f"  building {self.spec.name} {backend} {precision}")
        request = BackendRequest(self.spec, self.model, precision, self.device, x, self.workdir,
                                 threads=self.config.threads, calibration_dir=self.config.calibration_dir)
        try:
            return build_runner(backend, request)
        except Skip as e:
            return str(e)

    def _time(self, active: dict[str, Callable[[], Any]], recs: dict[str, Record]) -> None:
        """`repeats` rounds, each timing one call of every active backend (after the CPU settle pause)."""
        settle = self.config.settle_ms / 1e3 if self.device.type == "cpu" and len(active) > 1 else 0.0
        with torch.inference_mode():
            for _ in range(self.config.repeats):
                for backend, call in active.items():
                    time.sleep(settle)
                    recs[backend].times_ms.append(time_call(call, self.device) * 1e3)

    def _report(self, rec: Record) -> None:
        where = f"  {rec.model:>22} {rec.backend:>16} {rec.precision} b{rec.batch:<3}"
        if rec.skipped:
            self.log(f"{where} skipped: {rec.reason}")
        else:
            self.log(f"{where} {rec.median_ms:9.2f} ms {rec.images_per_s:9.1f} img/s {rec.gflops:7.1f} GFLOP/s")

