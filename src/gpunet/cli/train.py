"""`gpunet train` (TRANSITIONAL: arguments and runner still live in gpunet.train)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Train a GPUNet on an ImageFolder dataset with timm's machinery; `--recipe NAME "
    "--print-config` shows NVIDIA's settings for a model. Multi-process: torchrun "
    "--nproc-per-node N -m gpunet train ..."
)


def register(sub: Any) -> None:
    from gpunet.train import add_train_arguments

    p = sub.add_parser("train", help="train or fine-tune (NVIDIA's recipes, distillation, torchrun)",
                       description=DESCRIPTION)
    add_train_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.train import run_from_args

    return int(run_from_args(args))
