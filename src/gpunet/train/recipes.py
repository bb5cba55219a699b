"""NVIDIA's GPUNet training recipes, as data, and the resolution of a run's configuration.

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

`resolve_config(recipe, overrides)`: defaults (timm's) <- recipe <- overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from gpunet._names import did_you_mean
from gpunet.errors import RecipeError

NVIDIA_GPUS = 8  # NVIDIA's runs: 8 GPUs, `--batch-size` per GPU

# Every training setting, with timm's train.py defaults (names are timm's flag dests).
DEFAULTS: dict[str, Any] = {
    # data
    "data_dir": None, "train_split": "train", "val_split": "val", "num_classes": None,
    "img_size": None, "crop_pct": None, "interpolation": "bicubic", "mean": None, "std": None,
    "workers": 4, "pin_mem": False,
    # model
    "model": None, "pretrained": False, "initial_checkpoint": None, "drop": None, "drop_path": None,
    "freeze_backbone": False,
    # optimizer / schedule
    "batch_size": 128, "validation_batch_size": None, "opt": "sgd", "opt_eps": None, "opt_betas": None,
    "momentum": 0.9, "weight_decay": 2e-5, "clip_grad": None, "lr": None, "lr_base": 0.1,
    "lr_base_size": 256, "lr_base_scale": "", "sched": "cosine", "epochs": 300, "decay_epochs": 90.0,
    "decay_rate": 0.1, "warmup_lr": 1e-5, "warmup_epochs": 5, "min_lr": 0.0, "cooldown_epochs": 0,
    # augmentation / regularisation
    "no_aug": False, "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3], "hflip": 0.5, "vflip": 0.0,
    "color_jitter": 0.4, "aa": None, "train_interpolation": "random", "reprob": 0.0, "remode": "pixel",
    "recount": 1, "mixup": 0.0, "cutmix": 0.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
    "mixup_mode": "batch", "smoothing": 0.1,
    # EMA
    "model_ema": False, "model_ema_decay": 0.9998, "model_ema_warmup": False,
    # distillation
    "teacher": None, "teacher_checkpoint": None, "teacher_weights": None, "teacher_img_size": None,
    "teacher_pretrained": False, "teacher_random_weights": False, "kd_weight": 1.0, "kd_temperature": 1.0,
    "test_teacher": False,
    # runtime
    "device": "auto", "amp": False, "amp_dtype": "float16", "channels_last": False, "compile": False,
    "sync_bn": False, "dist_bn": "reduce", "seed": 42, "log_interval": 50, "output": None,
    "experiment": None, "resume": None, "no_resume_opt": False, "eval_metric": "top1",
    "print_config": False, "debug_step_delay": 0.0,
}



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
        return NVIDIA_GPUS * self.batch_size

    def to_config(self) -> dict[str, Any]:
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

_CHOICES: dict[str, tuple[Any, ...]] = {
    "sched": ("step", "cosine", "tanh", "poly", "plateau", "multistep"),
    "dist_bn": ("reduce", "broadcast", ""),
    "amp_dtype": ("float16", "bfloat16"),
    "lr_base_scale": ("", "linear", "sqrt"),
    "eval_metric": ("top1", "top5", "loss"),
    "remode": ("pixel", "rand", "const"),
    "mixup_mode": ("batch", "pair", "elem"),
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}.{did_you_mean(name, RECIPES)} Known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve_config(recipe: str | Recipe | None = None, overrides: Mapping[str, Any] | None = None, *,
                   base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults (or `base`, e.g. a resumed run's settings) <- recipe <- overrides (None values ignored)."""
    cfg = dict(DEFAULTS)
    if base:
        cfg.update({k: v for k, v in base.items() if k in DEFAULTS})
    if recipe is not None:
        r = get_recipe(recipe) if isinstance(recipe, str) else recipe
        cfg.update(r.to_config())
        cfg["recipe"] = r.name
    else:
        cfg.setdefault("recipe", (base or {}).get("recipe"))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in DEFAULTS:
            raise RecipeError(f"unknown setting {key!r}.{did_you_mean(key, DEFAULTS)}")
        cfg[key] = list(value) if isinstance(value, tuple) else value
    if isinstance(cfg.get("aa"), str) and cfg["aa"].lower() in ("", "none"):
        cfg["aa"] = None
    if isinstance(cfg.get("teacher"), str) and cfg["teacher"].lower() in ("", "none"):
        cfg["teacher"] = None
    _validate(cfg)
    return cfg


def _validate(cfg: Mapping[str, Any]) -> None:
    for key, choices in _CHOICES.items():
        if cfg.get(key) not in choices:
            raise RecipeError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {cfg.get(key)!r}")
    for key in ("batch_size", "epochs", "lr_base_size"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise RecipeError(f"{key}: expected a positive integer, got {cfg[key]!r}")
    for key in ("drop", "drop_path", "reprob", "smoothing"):
        v = cfg.get(key)
        if v is not None and not 0.0 <= v < 1.0:
            raise RecipeError(f"{key}: expected a value in [0, 1), got {v!r}")
    if cfg["kd_temperature"] <= 0:
        raise RecipeError(f"kd_temperature: expected a positive number, got {cfg['kd_temperature']!r}")


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


def recipe_fields() -> list[str]:
    return [f.name for f in fields(Recipe) if f.name != "name"]
