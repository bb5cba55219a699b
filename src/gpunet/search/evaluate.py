"""Candidate evaluation: one candidate trained and scored as a Ray task (`evaluate_candidate`), and the Ray pool."""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, cast

from gpunet.device import cpu_threads
from gpunet.errors import SearchError
from gpunet.search.config import SearchConfig

# short-budget training defaults (each overridable with --train-opt KEY=VALUE)
TRAIN_DEFAULTS: dict[str, Any] = {
    "opt": "adamw", "lr": 2e-3, "weight_decay": 0.05, "sched": "cosine", "warmup_epochs": 0, "min_lr": 1e-5,
    "drop_path": 0.0, "hflip": 0.0, "color_jitter": 0.0, "scale": [0.7, 1.0], "smoothing": 0.1,
}


def evaluate_candidate(arch_json: list[dict[str, Any]], key: str, data_dir: str, out_dir: str, *, epochs: int,
                       batch_size: int, seed: int, device: str, train_opts: dict[str, Any]) -> dict[str, Any]:
    """Train one candidate for `epochs` on `data_dir`/train and score it on `data_dir`/val (top-1 %).

    On CPU it trains with one thread (parallel trials share the cores); the caller's count is restored.
    """
    from gpunet.train import train

    trial_dir = os.path.join(out_dir, "trials", key)
    shutil.rmtree(trial_dir, ignore_errors=True)  # a run killed mid-way restarts from scratch
    os.makedirs(trial_dir, exist_ok=True)
    with open(os.path.join(out_dir, "trials.log"), "a", encoding="utf-8") as f:
        f.write(f"start {key} pid={os.getpid()}\n")
    path = os.path.join(trial_dir, "arch.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(arch_json, f, indent=1)
    opts = {**TRAIN_DEFAULTS, **train_opts}
    started = time.time()
    with cpu_threads(1 if device == "cpu" else None):
        result = train(data_dir, model=path, epochs=epochs, batch_size=batch_size,
                       img_size=arch_json[0]["img_resolution"], output=os.path.join(out_dir, "trials"),
                       experiment=key, seed=seed, workers=0, device=device, log_interval=1_000_000, **opts)
    last = result.last
    return {"accuracy": float(last.get("eval_top1", 0.0)), "top5": float(last.get("eval_top5", 0.0)),
            "val_loss": float(last.get("eval_loss", float("nan"))), "train_seconds": round(time.time() - started, 2),
            "epochs": result.epochs_run}


def start_ray(cfg: SearchConfig) -> tuple[Any, Any]:
    """(the ray module, `evaluate_candidate` as a Ray task) on a local instance of `cfg.workers` CPUs
    (or the cluster at `cfg.address`)."""
    try:
        import ray
    except ImportError:
        raise SearchError("gpunet search needs Ray: pip install 'gpunet[search]'") from None
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False,
                              "configure_logging": False}
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        import torch

        gpus = torch.cuda.device_count() if cfg.device.startswith("cuda") else 0
        ray.init(address="local", num_cpus=cfg.workers, num_gpus=gpus, **kwargs)
    gpu = 1 if cfg.device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=1)(cast(Any, evaluate_candidate))
    return ray, remote
