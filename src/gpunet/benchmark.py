"""Deprecated: the benchmark moved to `gpunet.bench` (library) and `gpunet.cli.benchmark` (the command).

`gpunet.bench.benchmark` takes a `gpunet.bench.BenchmarkConfig` where this module's took the
parsed command-line options; `gpunet.bench.build_runner` takes a `BackendRequest`.
"""

from gpunet._deprecation import moved

_BENCH = ("BACKENDS", "CSV_FIELDS", "DEFAULT_BACKENDS", "PEAK_SIZE", "PER_BATCH_BACKENDS", "PRECISIONS", "ModelSpec",
          "Record", "Runner", "Skip", "benchmark", "build_runner", "format_summary", "machine_info", "measure_peak",
          "plot_results", "resolve_models", "write_outputs")

__getattr__ = moved(__name__, {
    **{name: "gpunet.bench" for name in _BENCH},
    "BenchmarkError": "gpunet.errors",
    "percentile": "gpunet.timing",
    "EXIT_OK": "gpunet.cli.common", "EXIT_USAGE": "gpunet.cli.common",
    "add_benchmark_arguments": "gpunet.cli.benchmark", "run_benchmark": "gpunet.cli.benchmark",
})
