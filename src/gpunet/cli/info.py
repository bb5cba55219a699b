"""`gpunet info` (one model's layers, params, MACs, pretrained config) and `gpunet list` (the released models)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gpunet.cli.common import DEFAULT_MODEL, EXIT_OK, CLIError, check_options


def register(sub: Any) -> None:
    i = sub.add_parser("info", help="layers, parameters, MACs and pretrained config of a model")
    i.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL|JSON")
    i.add_argument("--img-size", type=int, help="resolution for output shapes and MACs (default: the model's)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run_info)


def register_list(sub: Any) -> None:
    ls = sub.add_parser("list", help="the released models with resolution, params, MACs, top-1, latency")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)


def run_info(args: argparse.Namespace) -> int:
    from gpunet.info import describe, describe_text
    from gpunet.records import file_kind

    check_options(args)
    kind = None if args.model.endswith((".json", ".safetensors")) else file_kind(args.model)
    if kind is not None:
        raise CLIError(f"{args.model} is {kind}; `gpunet info` describes a zoo name (`gpunet list`), an "
                       "NVIDIA-format architecture JSON or a gpunet .safetensors file")
    info = describe(args.model, img_size=args.img_size)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
    else:
        print(describe_text(info))
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    from gpunet.info import list_rows, list_table

    if args.json:
        json.dump(list_rows(), sys.stdout, indent=2)
        print()
    else:
        print(list_table())
    return EXIT_OK
