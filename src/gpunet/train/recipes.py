"""NVIDIA's GPUNet training recipes, as data, and timm's learning-rate scaling rule.

NVIDIA trained every GPUNet with its fork of timm 0.5.4 (`train.py`) on 8 GPUs. The
recipes below are those hyper-parameters *as they were effectively run*: the fork ignores
`--drop` and `--drop-connect` (the builder hard-codes classifier Dropout(0.2) and, on the
non-distilled path, drop path 0.2 by position), and timm 0.5.4 defaults fill in what the
published command lines leave out (warm-up 3 epochs, label smoothing 0.1, random train
interpolation, colour jitter 0.4).

Learning rate: NVIDIA's `--lr` was used as-is for its global batch of 8 GPUs x per-GPU
batch. A recipe therefore stores it as `lr_base` at `lr_base_size = 8 x batch_size`; the
run's lr is `lr_base * global_batch / lr_base_size` (timm's `--lr-base-size` rule), which
gives exactly NVIDIA's lr on 8 GPUs and a proportionally smaller one on fewer. An explicit
`--lr` is used unchanged.

A recipe sets some of a run's settings (`gpunet.train.config.TrainConfig`);
`gpunet.train.config.resolve_config` applies it over the defaults, under the overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gpunet._names import did_you_mean
from gpunet.errors import RecipeError

NVIDIA_GPUS = 8  # NVIDIA's runs: 8 GPUs, `--batch-size` per GPU


@dataclass(frozen=True)
class Recipe:
    """One model's published training recipe (per-GPU batch; lr for NVIDIA's 8-GPU global batch)."""

    name: str
    model: str
    img_size: int
    crop_pct: float
    batch_size: int  # per GPU
    lr_base: float  # NVIDIA's --lr, for the global batch lr_base_size
    drop_path: float  # as NVIDIA's builder applies it (0.2 by position on family A, none on family B)
    teacher: str | None = None
    teacher_img_size: int | None = None
    opt: str = "rmsproptf"
    opt_eps: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-5
    sched: str = "step"
    epochs: int = 450
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    warmup_lr: float = 1e-6
    warmup_epochs: int = 3  # timm 0.5.4 default
    model_ema: bool = True
    model_ema_decay: float = 0.9999
    aa: str = "rand-m9-mstd0.5"
    reprob: float = 0.2
    remode: str = "pixel"
    amp: bool = True
    drop: float = 0.2  # classifier Dropout(0.2) hard-coded in NVIDIA's builder (--drop 0.3 was ignored)
    smoothing: float = 0.1  # timm 0.5.4 default
    train_interpolation: str = "random"  # timm 0.5.4 default
    color_jitter: float = 0.4
    interpolation: str = "bicubic"

    @property
    def lr_base_size(self) -> int:
        """NVIDIA's global batch: 8 GPUs x the per-GPU batch."""
        return NVIDIA_GPUS * self.batch_size

    def to_config(self) -> dict[str, Any]:
        """The settings this recipe sets (TrainConfig field names), lr_base_size included."""
        d = asdict(self)
        d.pop("name")
        d["lr_base_size"] = self.lr_base_size
        return d


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("gpunet_0", "gpunet_0", 320, 1.0, 192, 0.06, 0.2),
    Recipe("gpunet_1", "gpunet_1", 288, 1.0, 192, 0.06, 0.2),
    Recipe("gpunet_2", "gpunet_2", 384, 1.0, 192, 0.06, 0.2),
    Recipe("gpunet_p0", "gpunet_p0", 224, 0.875, 256, 0.08, 0.2, "tf_efficientnet_b2", 260),
    Recipe("gpunet_p1", "gpunet_p1", 224, 0.875, 256, 0.08, 0.2, "tf_efficientnet_b2", 260),
    Recipe("gpunet_d1", "gpunet_d1", 456, 1.0, 192, 0.06, 0.0, "tf_efficientnet_b5_ns", 456),
    Recipe("gpunet_d2", "gpunet_d2", 528, 1.0, 128, 0.06, 0.0, "tf_efficientnet_b6_ns", 528),
)}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; a RecipeError (with the closest name) when there is none."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}.{did_you_mean(name, RECIPES)} Known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def scaled_lr(cfg: Mapping[str, Any], world_size: int = 1) -> float:
    """timm's rule: an explicit lr as-is, else lr_base * (global batch / lr_base_size) (sqrt for ada*/lamb)."""
    if cfg.get("lr") is not None:
        return float(cfg["lr"])
    ratio = cfg["batch_size"] * world_size / cfg["lr_base_size"]
    scale = cfg.get("lr_base_scale") or ("sqrt" if any(o in cfg["opt"].lower() for o in ("ada", "lamb"))
                                         else "linear")
    if scale == "sqrt":
        ratio = ratio ** 0.5
    return float(cfg["lr_base"]) * ratio

