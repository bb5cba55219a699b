"""`gpunet search` (TRANSITIONAL: arguments and runner still live in gpunet.search)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Search GPUNet architectures (NSGA-II, candidates trained as Ray tasks) for the "
    "best accuracy on DIR under a latency budget measured on this device. Writes "
    "candidates.jsonl, front.csv, front/*.json, search_plot.png and a summary."
)


def register(sub: Any) -> None:
    from gpunet.search import add_search_arguments

    p = sub.add_parser("search", help="architecture search: GPUNets on the latency/accuracy Pareto front",
                       description=DESCRIPTION)
    add_search_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.search import run_search

    return int(run_search(args))
