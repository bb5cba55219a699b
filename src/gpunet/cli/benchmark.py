"""`gpunet benchmark`: the options, a `BenchmarkConfig` from them, the run, the summary and the files."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from gpunet.bench.config import BACKENDS, DEFAULT_BACKENDS, PRECISIONS, BenchmarkConfig, split_list
from gpunet.cli.common import DEVICE_HELP, EXIT_OK, err

DESCRIPTION = (
    "Measure GPUNets (and timm peers) on this machine: median/p90/p99 latency, "
    "images/s, GFLOP/s and its share of a matmul peak measured in the same run. "
    "Writes JSON, CSV and PNG plots."
)


def register(sub: Any) -> None:
    help_ = "latency/throughput of backends, batch sizes and precisions"
    p = add_benchmark_arguments(sub.add_parser("benchmark", help=help_, description=DESCRIPTION))
    p.set_defaults(func=run_benchmark)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in split_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `gpunet benchmark`."""
    parser.add_argument("--models", default="gpunet_d1",
                        help="comma-separated zoo names or NVIDIA-format architecture JSON files, or 'all' "
                             "(default gpunet_d1)")
    parser.add_argument("--peers", default="",
                        help="comma-separated timm models to compare, as timm:NAME (random weights, their own "
                             "input size unless --img-size), e.g. timm:efficientnet_b3,timm:resnet50")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS,
                        help=f"comma-separated, from {','.join(BACKENDS)} (default {DEFAULT_BACKENDS}); "
                             "unavailable ones are skipped with a reason")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="default 1,8,32")
    parser.add_argument("--precision", default="fp32",
                        help=f"comma-separated from {','.join(PRECISIONS)} (default fp32)")
    parser.add_argument("--img-size", type=int, default=None, help="input resolution (default: each model's)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and ONNX Runtime (default: torch's current setting)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per backend (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per backend (default 20)")
    parser.add_argument("--settle-ms", type=float, default=50.0,
                        help="CPU: idle pause before each timed call, so the spinning worker threads of the "
                             "previous backend's runtime (OpenMP, ONNX Runtime, OpenVINO) do not steal the cores "
                             "of the next one (default 50; 0 disables)")
    parser.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                        help="CUDA: leave cuDNN's algorithm autotuning off (default: on for the run)")
    parser.add_argument("--calibration-dir", default=None,
                        help="images for the int8 backends' calibration (default: synthetic images)")
    parser.add_argument("--output", "-o", default=None,
                        help="output folder for results.json, results.csv and perf_*.png "
                             "(default ./benchmark/<timestamp>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """The parsed options as the library's `BenchmarkConfig` (validated there)."""
    return BenchmarkConfig(models=split_list(args.models), peers=split_list(args.peers),
                           backends=split_list(args.backends), batch_sizes=tuple(args.batch_sizes),
                           precisions=split_list(args.precision), img_size=args.img_size,
                           device=args.device, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                           settle_ms=args.settle_ms, calibration_dir=args.calibration_dir,
                           cudnn_benchmark=args.cudnn_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    """Run, print a summary, write JSON/CSV/PNGs into --output (nothing is written after a usage error).

    results.json and results.csv are rewritten (atomically) after every record, so a run that
    crashes or is killed keeps what it finished; the plots follow at the end.
    """
    from gpunet.bench import benchmark, format_summary, write_outputs

    config = config_from_args(args)
    output = args.output or os.path.join("benchmark", time.strftime("%Y%m%d-%H%M%S"))

    def save(partial: dict[str, Any]) -> None:
        write_outputs(partial, output, plots=False)

    results = benchmark(config, log=(lambda _: None) if args.quiet else err, on_record=save)
    paths = write_outputs(results, output, plots=not args.no_plots)
    print(format_summary(results))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return EXIT_OK
