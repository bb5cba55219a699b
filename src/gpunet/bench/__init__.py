"""Benchmarking: latency, throughput and achieved GFLOP/s of GPUNets (and timm peers) per backend.

    from gpunet.bench import BenchmarkConfig, benchmark, format_summary, write_outputs
    results = benchmark(BenchmarkConfig(models=("gpunet_0",), backends=("eager", "fused"), batch_sizes=(1, 8)))
    print(format_summary(results))
    write_outputs(results, "benchmark/run1")

- `config`: `BenchmarkConfig` and the backend / precision names;
- `models`: the models measured (`ModelSpec`: zoo GPUNets and timm peers);
- `backends`: the backend registry (name -> runner builder, `Skip` where it cannot run);
- `machine`: the machine description and the matmul peak;
- `records`: one result (`Record`) and its statistics;
- `run`: the run itself (`benchmark(config)`);
- `report`: JSON / CSV / PNG outputs and the text summary.
"""

from typing import TYPE_CHECKING

from gpunet._lazy import lazy_attributes

if TYPE_CHECKING:
    from gpunet.bench.backends import BACKEND_BUILDERS, BackendRequest, Built, Runner, Skip, build_runner
    from gpunet.bench.config import BACKENDS, DEFAULT_BACKENDS, PER_BATCH_BACKENDS, PRECISIONS, BenchmarkConfig
    from gpunet.bench.machine import PEAK_SIZE, machine_info, measure_peak
    from gpunet.bench.models import ModelSpec, resolve_models
    from gpunet.bench.records import CSV_FIELDS, Record
    from gpunet.bench.report import format_summary, plot_results, write_outputs
    from gpunet.bench.run import benchmark

_SOURCES = {
    "BACKEND_BUILDERS": "gpunet.bench.backends",
    "BackendRequest": "gpunet.bench.backends",
    "Built": "gpunet.bench.backends",
    "Runner": "gpunet.bench.backends",
    "Skip": "gpunet.bench.backends",
    "build_runner": "gpunet.bench.backends",
    "BACKENDS": "gpunet.bench.config",
    "DEFAULT_BACKENDS": "gpunet.bench.config",
    "PER_BATCH_BACKENDS": "gpunet.bench.config",
    "PRECISIONS": "gpunet.bench.config",
    "BenchmarkConfig": "gpunet.bench.config",
    "PEAK_SIZE": "gpunet.bench.machine",
    "machine_info": "gpunet.bench.machine",
    "measure_peak": "gpunet.bench.machine",
    "ModelSpec": "gpunet.bench.models",
    "resolve_models": "gpunet.bench.models",
    "CSV_FIELDS": "gpunet.bench.records",
    "Record": "gpunet.bench.records",
    "format_summary": "gpunet.bench.report",
    "plot_results": "gpunet.bench.report",
    "write_outputs": "gpunet.bench.report",
    "benchmark": "gpunet.bench.run",
}

__all__ = [
    "BACKENDS", "BACKEND_BUILDERS", "CSV_FIELDS", "DEFAULT_BACKENDS", "PEAK_SIZE", "PER_BATCH_BACKENDS", "PRECISIONS",
    "BackendRequest", "BenchmarkConfig", "Built", "ModelSpec", "Record", "Runner", "Skip", "benchmark",
    "build_runner", "format_summary", "machine_info", "measure_peak", "plot_results", "resolve_models",
    "write_outputs",
]

__getattr__ = lazy_attributes(__name__, _SOURCES)
