"""`gpunet convert SRC DST`: a checkpoint to .safetensors (ours) or to NVIDIA's layout."""

from __future__ import annotations

import argparse
from typing import Any

from gpunet.cli.common import EXIT_OK


def register(sub: Any) -> None:
    c = sub.add_parser("convert", help="convert a checkpoint (to .safetensors, or to NVIDIA's layout)",
                       description="DST ending in .safetensors: gpunet's format (architecture in the metadata); "
                                   "anything else: NVIDIA's layout, loadable by NVIDIA's code.")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    c.add_argument("--model", "-m", help="architecture (zoo name or JSON); inferred for released models")
    c.add_argument("--layout", choices=("timm", "raw_state_dict"), help="NVIDIA layout (default: the model's)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.conversion import convert

    layout = convert(args.src, args.dst, model=args.model, layout=args.layout)
    print(f"wrote {args.dst} ({layout})")
    return EXIT_OK
