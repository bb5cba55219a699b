"""`benchmark(config)`: latency, throughput and achieved GFLOP/s of GPUNets (and timm peers) per backend.

Backends (each skipped with a reason where it cannot run; `gpunet.bench.backends` builds them):

* `eager`             the model as built: BatchNorm unfused, contiguous NCHW (the baseline)
* `fused`             `optimize_for_inference(model)`: BN folded, channels_last (the fastest eager path)
* `padded`            `fused` with channel counts padded to multiples of 8 (zero weights; GPUNets only)
* `fused-microbatch`  (CPU) `optimize_for_inference(model, micro_batch=1)`: the fused model one image at a
                      time (the high-resolution activations stay in cache; the fastest CPU path at batch > 1)
* `compile`           `optimize_for_inference(model, compile=True)`: torch.compile (inductor; CPU: weight
                      freezing; CUDA: one specialisation per batch size, no CUDA graphs)
* `cudagraph`         (CUDA) the fused model replayed as one CUDA graph per batch size (`CudaGraphModule`)
* `padded-cudagraph`  (CUDA) `padded` in a CUDA graph
* `compile-cudagraph` (CUDA) `compile` in a CUDA graph
* `auto`              `optimize_for_inference(model, mode="auto")`: CUDA: padded, inductor max-autotune, CUDA
                      graph; CPU: `fused`
* `triton-dw`         (CUDA) `padded` with each depthwise conv + bias + activation as one Triton kernel
                      (`gpunet.deploy.depthwise`; GPUNets only)
* `triton-dw-cudagraph` (CUDA) `triton-dw` in a CUDA graph
* `onnxruntime`       `gpunet.deploy.onnx.export_onnx`, run by ONNX Runtime (fp32; fp16 on CUDA)
* `onnxruntime-int8`  `gpunet.deploy.quantize.quantize_onnx` (static INT8; calibration images from
                      `calibration_dir`, else synthetic ones: fine for speed, not for accuracy)
* `openvino`          (CPU) the exported ONNX run by OpenVINO, static batch shape, inference precision
                      pinned to the benchmarked one (f32 for fp32, bf16 for bf16); when openvino is installed
* `openvino-int8`     (CPU) the INT8 QDQ model of `onnxruntime-int8`, run by OpenVINO
* `tensorrt`          (CUDA) a TensorRT engine from `gpunet.deploy.tensorrt`, when tensorrt is installed

On CUDA the run has cuDNN autotuning on (`config.cudnn_benchmark`, restored afterwards) and
torch.compile's recompile limit raised for the run (every GPUNet shares `GPUNet.forward`: seven
models at three batch sizes exceed dynamo's default of 8 entries, after which it would silently
run eager code and the "compiled" numbers would be eager ones; hitting the raised limit is an
error, recorded as that backend's failure). A backend that fails, while building or while being
timed, is recorded as skipped with the reason and the run goes on; `on_record` gets the results
so far after every record (the command line writes them to disk each time, atomically).

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

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpunet.bench.backends import BackendRequest, Built, Skip, build_runner
from gpunet.bench.config import COMPILED_BACKENDS, PER_BATCH_BACKENDS, BenchmarkConfig
from gpunet.bench.machine import PEAK_SIZE, machine_info, measure_peak
from gpunet.bench.models import ModelSpec, resolve_models
from gpunet.bench.records import Record
from gpunet.device import PRECISIONS, cpu_threads, cudnn_autotune, resolve_device
from gpunet.timing import sample_times, time_call

Log = Callable[[str], None]
RECOMPILE_LIMIT = 256  # torch.compile entries per code object during a run (dynamo's default: 8)


def _quiet(message: str) -> None:
    """The default `log`: say nothing."""


def benchmark(config: BenchmarkConfig, *, log: Log = _quiet,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run `config`; return {"header": ..., "records": [...]}. `log` gets progress lines, `on_record` the
    results so far after each record (e.g. to write them: a crash then loses nothing finished)."""
    device = resolve_device(config.device)
    with cpu_threads(config.threads) as threads, _run_settings(config, device):
        specs = resolve_models(config.models, config.peers, config.img_size)
        log(f"gpunet benchmark: device {device}, {threads} threads; measuring the matmul peak")
        peaks = {p: measure_peak(device, PRECISIONS[p]) for p in config.precisions
                 if not (device.type == "cpu" and p == "fp16")}
        results: dict[str, Any] = {"header": _header(config, device, threads, peaks), "records": []}
        with tempfile.TemporaryDirectory(prefix="gpunet-bench-") as tmp:
            for spec in specs:
                run = _ModelRun(config, spec, spec.build().eval(), device, threads, Path(tmp), log)
                for precision in config.precisions:
                    for rec in run.measure(precision, peaks.get(precision, {}).get("peak_gflops")):
                        results["records"].append(asdict(rec))
                        if on_record is not None:
                            on_record(results)
    log("gpunet benchmark: done")
    return results


def _header(config: BenchmarkConfig, device: torch.device, threads: int, peaks: dict[str, Any]) -> dict[str, Any]:
    return {"machine": machine_info(device, threads), "peak": peaks, "peak_size": PEAK_SIZE,
            "warmup": config.warmup, "repeats": config.repeats, "settle_ms": config.settle_ms,
            "backends": list(config.backends), "batch_sizes": list(config.batch_sizes),
            "precisions": list(config.precisions), "cudnn_benchmark": config.cudnn_benchmark and device.type == "cuda",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@contextlib.contextmanager
def _run_settings(config: BenchmarkConfig, device: torch.device) -> Iterator[None]:
    """cuDNN autotuning (CUDA) and torch.compile's recompile limit, for the run only."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(cudnn_autotune(config.cudnn_benchmark))
        if any(b in COMPILED_BACKENDS for b in config.backends):
            import torch._dynamo

            limits = {"cache_size_limit": RECOMPILE_LIMIT, "accumulated_cache_size_limit": 4 * RECOMPILE_LIMIT,
                      "fail_on_cache_limit_hit": True}  # names every torch since 2.6 knows (newer ones alias them)
            stack.enter_context(torch._dynamo.config.patch(
                {k: v for k, v in limits.items() if hasattr(torch._dynamo.config, k)}))
        yield


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

    def measure(self, precision: str, peak: float | None) -> Iterator[Record]:
        """Records of every (batch, backend) at `precision`, in the config's order, each batch's as it is done."""
        runners: dict[str, Built | str] = {}  # a Skip reason or failure is remembered like a runner
        for batch in self.config.batch_sizes:
            g = torch.Generator().manual_seed(batch)
            x = torch.randn(batch, 3, self.spec.img_size, self.spec.img_size, generator=g)
            x = x.to(device=self.device, dtype=PRECISIONS[precision])
            recs = {b: Record(self.spec.name, b, precision, batch, self.spec.img_size, self.threads,
                              str(self.device), macs=self.spec.macs, top1=self.spec.top1)
                    for b in self.config.backends}
            active = {b: run for b, rec in recs.items()
                      if (run := self._ready(b, rec, precision, x, runners)) is not None}
            self._time(active, recs, runners)
            for rec in recs.values():
                if not rec.skipped:
                    rec.summarise(peak)
                self._report(rec)
                yield rec

    @staticmethod
    def _key(backend: str, batch: int) -> str:
        return f"{backend}@{batch}" if backend in PER_BATCH_BACKENDS else backend

    def _ready(self, backend: str, rec: Record, precision: str, x: torch.Tensor,
               runners: dict[str, Built | str]) -> Callable[[], Any] | None:
        """The backend's runner bound to its input, warmed up; None (and `rec` marked skipped) if it cannot run."""
        key = self._key(backend, x.shape[0])
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
            runners[key] = _failed(rec, e)
        return None

    def _build(self, backend: str, precision: str, x: torch.Tensor) -> Built | str:
        self.log(f"  building {self.spec.name} {backend} {precision}")
        request = BackendRequest(self.spec, self.model, precision, self.device, x, self.workdir,
                                 threads=self.config.threads, calibration_dir=self.config.calibration_dir)
        try:
            return build_runner(backend, request)
        except Skip as e:
            return str(e)

    def _time(self, active: dict[str, Callable[[], Any]], recs: dict[str, Record],
              runners: dict[str, Built | str]) -> None:
        """`repeats` rounds, each timing one call of every active backend (after the CPU settle pause);
        a backend that fails is recorded so and dropped (also for the later batch sizes)."""
        settle = self.config.settle_ms / 1e3 if self.device.type == "cpu" and len(active) > 1 else 0.0
        with torch.inference_mode():
            for _ in range(self.config.repeats):
                for backend, call in list(active.items()):
                    time.sleep(settle)
                    rec = recs[backend]
                    try:
                        rec.times_ms.append(time_call(call, self.device) * 1e3)
                    except Exception as e:  # noqa: BLE001  (a backend failing here must not end the run)
                        runners[self._key(backend, rec.batch)] = _failed(rec, e)
                        del active[backend]

    def _report(self, rec: Record) -> None:
        where = f"  {rec.model:>22} {rec.backend:>16} {rec.precision} b{rec.batch:<3}"
        if rec.skipped:
            self.log(f"{where} skipped: {rec.reason}")
        else:
            self.log(f"{where} {rec.median_ms:9.2f} ms {rec.images_per_s:9.1f} img/s {rec.gflops:7.1f} GFLOP/s")



def _failed(rec: Record, error: Exception) -> str:
    """Mark `rec` as skipped because its backend failed; the reason (one line)."""
    rec.skipped, rec.times_ms = True, []
    rec.reason = f"failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
    return rec.reason
