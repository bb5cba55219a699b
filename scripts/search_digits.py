#!/usr/bin/env python
"""Architecture search on CPU in minutes: GPUNets for sklearn's handwritten digits under a latency budget.

Writes the digits as an ImageFolder (the same writer as scripts/train_digits.py), then runs
`gpunet search` on the `tiny` space (32-64 px, narrow, shallow) with latency measured on this
CPU (eager fp32, batch 1, one thread), two Ray workers training candidates in parallel, and
prints the Pareto front and the latency predictor's measured quality.

    .venv/bin/pip install -e '.[search,dev]'
    .venv/bin/python scripts/search_digits.py --out /tmp/digits_search --plot docs/img/search_digits.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_digits import write_digits  # noqa: E402  (the dataset writer of the training example)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="output/digits_search", help="work folder (dataset and search output)")
    p.add_argument("--budget-ms", type=float, default=1.5)
    p.add_argument("--trials", type=int, default=14)
    p.add_argument("--epochs-per-trial", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="docs/img/search_digits.png", help="copy the plot here ('' for none)")
    a = p.parse_args(argv)

    from gpunet.search import SearchConfig, search

    data = os.path.join(a.out, "data")
    if not os.path.isdir(os.path.join(data, "val")):
        n_train, n_val = write_digits(data, seed=0)
        print(f"wrote sklearn digits as ImageFolder: {n_train} train / {n_val} val images (32 px) in {data}")
    result = search(SearchConfig(
        data=data, output=os.path.join(a.out, "search"), budget_ms=a.budget_ms, trials=a.trials,
        epochs_per_trial=a.epochs_per_trial, device="cpu", batch_size=1, space="tiny", population=6,
        workers=a.workers, seed=a.seed, threads=1, calib_archs=8, holdout_archs=10, train_batch_size=64))
    s = result.summary
    print(f"predictor on {s['predictor']['n']} held-out architectures: Spearman rho {s['predictor']['spearman']:.3f}, "
          f"MAPE {s['predictor']['mape']:.1f} %")
    if s["best"]:
        b = s["best"]
        print(f"best within {a.budget_ms:g} ms: {b['key']} top-1 {b['accuracy']:.2f} % at {b['measured_ms']:.3f} ms "
              f"-> {os.path.join(result.output, b['json'])}")
    if a.plot:
        os.makedirs(os.path.dirname(os.path.abspath(a.plot)), exist_ok=True)
        shutil.copy(os.path.join(result.output, "search_plot.png"), a.plot)
        print(f"plot: {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
