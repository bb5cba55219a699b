"""What a search is asked to do (`SearchConfig`) and what it returns (`SearchResult`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

LATENCY_BACKENDS = ("eager", "onnxruntime", "tensorrt")  # how the search measures latency


@dataclass
class SearchConfig:
    """One architecture search (the options of `gpunet search`); `log` is the stream progress goes to (stdout)."""

    data: str
    output: str
    budget_ms: float
    trials: int = 16
    epochs_per_trial: int = 2
    device: str = "cpu"
    backend: str = "eager"
    precision: str = "fp32"
    batch_size: int = 1
    train_batch_size: int = 64
    space: str = "nvidia"
    population: int = 8
    margin: float = 0.1
    seed: int = 0
    workers: int = 2
    address: str | None = None
    lut: str | None = None
    threads: int = 1
    calib_archs: int = 8
    holdout_archs: int = 8
    reference_models: str = "all"
    train_opts: dict[str, Any] = field(default_factory=dict)
    log: Any = None

    def echo(self, msg: str) -> None:
        print(msg, file=self.log or sys.stdout, flush=True)

    def settings(self) -> dict[str, Any]:
        """The settings a resumed search must share with the one on disk (state.json)."""
        return {"budget_ms": self.budget_ms, "device": self.device, "backend": self.backend,
                "precision": self.precision, "batch_size": self.batch_size, "seed": self.seed,
                "epochs_per_trial": self.epochs_per_trial, "population": self.population, "threads": self.threads}


@dataclass
class SearchResult:
    """The output folder, every trained candidate, the Pareto front (front.csv rows) and summary.json."""

    output: str
    candidates: list[dict[str, Any]]
    front: list[dict[str, Any]]
    summary: dict[str, Any]
