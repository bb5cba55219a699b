"""`gpunet search`: the options, a `SearchConfig` from them, and the search (gpunet.search)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from gpunet.bench.config import PRECISIONS
from gpunet.cli.common import EXIT_OK

if TYPE_CHECKING:
    from gpunet.search import SearchConfig

DESCRIPTION = (
    "Search GPUNet architectures (NSGA-II, candidates trained as Ray tasks) for the "
    "best accuracy on DIR under a latency budget measured on this device. Writes "
    "candidates.jsonl, front.csv, front/*.json, search_plot.png and a summary."
)


def register(sub: Any) -> None:
    help_ = "architecture search: GPUNets on the latency/accuracy Pareto front"
    add_search_arguments(sub.add_parser("search", help=help_, description=DESCRIPTION)).set_defaults(func=run_search)


def _train_opt(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip().replace("-", "_"), yaml.safe_load(v)


def add_search_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `gpunet search` (one per `SearchConfig` field)."""
    from gpunet.search.config import LATENCY_BACKENDS as BACKENDS
    from gpunet.search.space import PRESETS

    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder dataset with train/ and val/")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (resumes a search found there)")
    p.add_argument("--budget-ms", type=float, required=True, help="latency budget in milliseconds")
    p.add_argument("--device", default="cpu", help="cpu or cuda (latency and training)")
    p.add_argument("--backend", choices=BACKENDS, default="eager", help="latency backend (default eager)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    p.add_argument("--batch-size", type=int, default=1, help="batch size the latency is measured at (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for latency measurements (default 1)")
    p.add_argument("--trials", type=int, default=16, help="candidates to train (default 16)")
    p.add_argument("--epochs-per-trial", type=int, default=2, help="training epochs per candidate (default 2)")
    p.add_argument("--train-batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--train-opt", type=_train_opt, action="append", default=[], metavar="KEY=VALUE",
                   help="a `gpunet train` setting for every candidate, e.g. lr=0.001 (repeatable)")
    p.add_argument("--space", default="nvidia",
                   help=f"search space: a preset ({', '.join(PRESETS)}) or a space JSON/YAML file (default nvidia)")
    p.add_argument("--population", type=int, default=8, help="NSGA-II population / generation size (default 8)")
    p.add_argument("--margin", type=float, default=0.1,
                   help="prune candidates predicted over budget * (1 + margin) before training (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="Ray CPUs of the local instance = parallel trials")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local instance")
    p.add_argument("--lut", metavar="PATH", help="layer latency table to use and extend (default OUT/latency_lut.json)")
    p.add_argument("--calib-archs", type=int, default=8, help="whole models the predictor correction is fitted on")
    p.add_argument("--holdout-archs", type=int, default=8, help="held-out models the predictor is scored on")
    p.add_argument("--reference-models", default="all",
                   help="released GPUNets to measure for the plot: all, none, or a comma list")
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The parsed options as a `gpunet.search.SearchConfig`."""
    from gpunet.search import SearchConfig

    return SearchConfig(data=args.data, output=args.output, budget_ms=args.budget_ms, trials=args.trials,
                        epochs_per_trial=args.epochs_per_trial, device=args.device, backend=args.backend,
                        precision=args.precision, batch_size=args.batch_size, train_batch_size=args.train_batch_size,
                        space=args.space, population=args.population, margin=args.margin, seed=args.seed,
                        workers=args.workers, address=args.address, lut=args.lut, threads=args.threads,
                        calib_archs=args.calib_archs, holdout_archs=args.holdout_archs,
                        reference_models=args.reference_models, train_opts=dict(args.train_opt))


def run_search(args: argparse.Namespace) -> int:
    """Run the search; its setup errors (data, folder, space, latency) reach the user as one line, exit 2."""
    from gpunet.search import search

    search(config_from_args(args))
    return EXIT_OK
