"""Training: NVIDIA's recipes on current PyTorch/timm, distillation, fine-tuning, multi-process, exact resume.

    gpunet train DATA --model gpunet_0 --recipe gpunet_0 [overrides]
    torchrun --nproc-per-node 8 -m gpunet train DATA --recipe gpunet_d1 --teacher-checkpoint b5ns.pth
    gpunet.train.train("DATA", model="my.json", epochs=10, batch_size=64)      # Python API

DATA holds ImageFolder splits (`train/`, `val/`). Settings carry timm's names and meanings.

Modules: `config` (TrainConfig: every setting, its default, help and checks; resolve_config),
`recipes` (NVIDIA's recipes as data, lr scaling), `data` (reproducible per-sample
augmentation), `components` (data, teacher, model, optimizer, loss built from a config),
`trainer` (Trainer: the loop, evaluation, checkpoints, resume), `checkpoint` (checkpoint and
summary.csv I/O, RNG state), `progress` (result, signals, progress output), `distributed`
(torchrun, CPU SyncBatchNorm, samplers), `distill` (teacher, KD loss). The command line is
`gpunet.cli.train`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from gpunet._deprecation import moved
from gpunet._lazy import lazy_attributes
from gpunet.errors import RecipeError, TrainError
from gpunet.train.config import TrainConfig, config_yaml, resolve_config
from gpunet.train.recipes import RECIPES, Recipe, get_recipe, scaled_lr

if TYPE_CHECKING:  # torch-heavy: loaded on first use, so `gpunet train --help` stays fast
    from gpunet.train.progress import TrainingInterrupted, TrainResult
    from gpunet.train.trainer import Trainer

_LAZY = {"Trainer": "gpunet.train.trainer", "TrainResult": "gpunet.train.progress",
         "TrainingInterrupted": "gpunet.train.progress"}

__all__ = [
    "RECIPES", "Recipe", "RecipeError", "TrainConfig", "TrainError", "TrainResult", "Trainer", "TrainingInterrupted",
    "config_for_run", "config_yaml", "get_recipe", "resolve_config", "scaled_lr", "train",
]


def config_for_run(recipe: str | Recipe | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The settings of a run: defaults <- the resumed run's (when `overrides` name `resume`) <- recipe <- overrides."""
    from gpunet.train.checkpoint import resume_settings

    overrides = overrides or {}
    return resolve_config(recipe, overrides, base=resume_settings(overrides.get("resume")))


def train(data_dir: str | os.PathLike[str] | None = None, *, recipe: str | None = None,
          **overrides: Any) -> TrainResult:
    """Train (or resume) in this process; under torchrun, one process of a distributed run.

    Keyword arguments are the settings' names (`TrainConfig` fields, the CLI flags' dests:
    `model=`, `epochs=`, `batch_size=`, `lr=`, `teacher=`, `resume=`, ...); `recipe=` starts from
    one of NVIDIA's recipes. Raises `TrainingInterrupted` after saving a recovery checkpoint on
    SIGTERM/SIGINT, and a `GPUNetError` (`RecipeError`, `TrainError`, ...) for a bad setting or input.
    """
    from gpunet.train.trainer import Trainer

    if data_dir is not None:
        overrides["data_dir"] = os.fspath(data_dir)
    return Trainer(config_for_run(recipe, overrides)).run()


# Old names of the flat `gpunet.train` module, now in its parts (or the command line's).
__getattr__ = lazy_attributes(__name__, _LAZY, fallback=moved(__name__, {
    "add_train_arguments": "gpunet.cli.train", "run_from_args": "gpunet.cli.train", "main": "gpunet.cli.train",
    "EXIT_OK": "gpunet.cli.common", "EXIT_USAGE": "gpunet.cli.common",
    "DEFAULTS": "gpunet.train.config",
    "CHECKPOINT_VERSION": "gpunet.train.checkpoint", "LAST": "gpunet.train.checkpoint",
    "BEST": "gpunet.train.checkpoint", "RECOVERY": "gpunet.train.checkpoint",
    "SUMMARY_COLUMNS": "gpunet.train.checkpoint", "read_training_checkpoint": "gpunet.train.checkpoint",
    "architecture_with_classes": "gpunet.train.checkpoint",
    "SeededImageFolder": "gpunet.train.data", "forked_rng": "gpunet.train.data", "load_rgb": "gpunet.train.data",
    "DistributedError": "gpunet.errors",
}))
