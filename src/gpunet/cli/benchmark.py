"""`gpunet benchmark` (TRANSITIONAL: arguments and runner still live in gpunet.benchmark)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Measure GPUNets (and timm peers) on this machine: median/p90/p99 latency, "
    "images/s, GFLOP/s and its share of a matmul peak measured in the same run. "
    "Writes JSON, CSV and PNG plots."
)


def register(sub: Any) -> None:
    from gpunet.benchmark import add_benchmark_arguments

    p = sub.add_parser("benchmark", help="latency/throughput of backends, batch sizes and precisions",
                       description=DESCRIPTION)
    add_benchmark_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.benchmark import run_benchmark

    return int(run_benchmark(args))
