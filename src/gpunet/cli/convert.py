"""`gpunet convert SRC DST`: a checkpoint to .safetensors (ours) or to NVIDIA's layout."""

from __future__ import annotations

import argparse
from typing import Any

from gpunet.cli.common import EXIT_OK, check_output


def register(sub: Any) -> None:
    c = sub.add_parser("convert", help="convert a checkpoint (to .safetensors, or to NVIDIA's layout)",
                       description="DST ending in .safetensors: gpunet's format (architecture in the metadata); "
                                   "anything else: NVIDIA's layout, loadable by NVIDIA's code. The architecture "
                                   "comes from --model, else from what SRC records (gpunet .safetensors, `gpunet "
                                   "train` checkpoints), else from the shapes of a released model's tensors.")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    c.add_argument("--model", "-m", help="architecture (zoo name or JSON); default: recorded in SRC or inferred "
                                         "for released models")
    c.add_argument("--layout", choices=("timm", "raw_state_dict"), help="NVIDIA layout (default: the model's)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet._checks import naming_errors
    from gpunet.conversion import convert

    check_output(args.dst, "DST", inputs=(args.src,))
    with naming_errors(args.dst):
        layout = convert(args.src, args.dst, model=args.model, layout=args.layout)
    print(f"wrote {args.dst} ({layout})")
    return EXIT_OK
