"""`gpunet quantize` (TRANSITIONAL: arguments and runner still live in gpunet.quantize)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Static INT8 quantization (QDQ, per-channel weights) calibrated on a folder of "
    "images; with --val, reports the top-1 difference and the speed-up vs fp32."
)


def register(sub: Any) -> None:
    from gpunet.quantize import add_quantize_arguments

    p = sub.add_parser("quantize", help="INT8 ONNX (ONNX Runtime static quantization, calibrated on images)",
                       description=DESCRIPTION)
    add_quantize_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.quantize import run_quantize

    return int(run_quantize(args))
