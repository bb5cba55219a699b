"""`gpunet export` (TRANSITIONAL: arguments and runner still live in gpunet.export)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Export a GPUNet (BatchNorm folded) and check it against PyTorch: ONNX is run in "
    "ONNX Runtime and the max abs difference printed."
)


def register(sub: Any) -> None:
    from gpunet.export import add_export_arguments

    p = sub.add_parser("export", help="export to ONNX, TorchScript, a Triton repository or a TensorRT engine",
                       description=DESCRIPTION)
    add_export_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.export import run_export

    return int(run_export(args))
