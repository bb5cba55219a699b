"""A training run's settings: one typed, validated `TrainConfig`, and how recipes and overrides resolve into it.

Every setting is a field of `TrainConfig` and is declared once, here: its name (timm's
`train.py` flag dest), type, default (timm's), help text, command-line group and flags, and
its allowed values. The `gpunet train` parser is generated from these fields, and the
`--print-config` YAML and a run's `args.yaml` list them in this order.

    cfg = resolve_config("gpunet_d1", {"epochs": 3})   # defaults <- recipe <- overrides
    cfg.epochs, cfg["epochs"]                           # attributes; also a read-only mapping

Resolution order: defaults <- `base` (a resumed run's settings) <- recipe <- overrides.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import Field, asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from gpunet._names import did_you_mean
from gpunet.errors import RecipeError
from gpunet.train.recipes import RECIPES, Recipe, get_recipe, scaled_lr

# command-line groups, in the order `gpunet train --help` lists them (None: the top-level options)
DATA, MODEL, OPTIM = "data", "model", "optimizer and schedule"
AUGMENT, DISTILL, RUNTIME = "augmentation and regularisation", "distillation", "runtime"
DEFAULT_OUTPUT = os.path.join(".", "output", "train")
NOT_IN_YAML = ("debug_step_delay",)  # test-only knobs, left out of --print-config and args.yaml

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v: Any, low_open: float, high: float) -> bool:
    """Two numbers low < a <= b <= high (a range such as random-resized-crop's scale)."""
    return (isinstance(v, tuple) and len(v) == 2 and all(_number(x) for x in v)
            and low_open < v[0] <= v[1] <= high)


# names timm has always known, accepted without importing timm (and torch): the default and the recipes' ones
_WELL_KNOWN_OPTIMIZERS = frozenset({"sgd", "momentum", "nesterov", "rmsprop", "rmsproptf", "adam", "adamw", "lamb"})


def _timm_optimizer(name: Any) -> bool:
    """A name timm's optimizer factory knows (its last `_` part: `lookahead_adamw` is adamw with lookahead)."""
    if not isinstance(name, str):
        return False
    base = name.lower().split("_")[-1]
    if base in _WELL_KNOWN_OPTIMIZERS:
        return True
    try:
        from timm.optim import list_optimizers
    except ImportError:  # timm < 1.0.12 has no registry to ask; its factory reports an unknown name itself
        return True
    return base in list_optimizers()


def _timm_auto_augment(policy: Any) -> bool:
    """None, or a policy string timm's auto-augment parser accepts (rand-m9-mstd0.5, augmix-m5, original, ...)."""
    if policy is None:
        return True
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=policy)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError):
        return False
    return True


# range checks a field can name in its metadata: check -> (passes, what was expected). None passes every
# check but positive_int, count, probability and the pairs: it is the "not set" of the optional settings
_CHECKS: dict[str, tuple[Any, str]] = {
    "positive_int": (lambda v: _int(v) and v > 0, "a positive integer"),
    "positive_int_or_none": (lambda v: v is None or (_int(v) and v > 0), "a positive integer"),
    "count": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "fraction": (lambda v: v is None or (_number(v) and 0.0 <= v < 1.0), "a value in [0, 1)"),
    "probability": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    "crop": (lambda v: v is None or (_number(v) and 0.0 < v <= 1.0), "a fraction in (0, 1]"),
    "positive": (lambda v: v is None or (_number(v) and v > 0), "a positive number"),
    "non_negative": (lambda v: v is None or (_number(v) and v >= 0), "a number >= 0"),
    "scale_range": (lambda v: _pair(v, 0.0, 1.0), "two numbers 0 < min <= max <= 1"),
    "ratio_range": (lambda v: _pair(v, 0.0, math.inf), "two numbers 0 < min <= max"),
    "betas": (lambda v: v is None or (isinstance(v, tuple) and len(v) in (2, 3)
                                      and all(_number(b) and 0.0 <= b < 1.0 for b in v)),
              "two (or three) numbers in [0, 1)"),
    "mean": (lambda v: v is None or (isinstance(v, tuple) and len(v) == 3 and all(map(_number, v))),
             "three numbers (R, G, B)"),
    "std": (lambda v: v is None or (isinstance(v, tuple) and len(v) == 3 and all(_number(x) and x > 0 for x in v)),
            "three positive numbers (R, G, B)"),
    "optimizer": (_timm_optimizer, "an optimizer name timm knows (timm.optim.list_optimizers(), e.g. sgd, "
                                   "rmsproptf, adamw, lamb, lookahead_adamw)"),
    "auto_augment": (_timm_auto_augment, "a timm auto-augment policy such as rand-m9-mstd0.5, augmix-m5 or "
                                         "original ('none' to disable)"),
}


def _setting(default: Any, help: str | None, group: str | None, *, flags: Sequence[str] = (),
             metavar: str | None = None, choices: Sequence[Any] | None = None, check: str | None = None,
             parser_choices: Sequence[str] | None = None, hidden: bool = False) -> Any:
    """A `TrainConfig` field: its default, and its help, group, flags and checks as field metadata.

    `help` may say `{default}`, `{choices}` or `{recipe}` (the value all recipes share); `choices`
    are checked on the config, `parser_choices` by the command line; `hidden` keeps a flag out of
    `--help`.
    """
    meta = {"help": help, "group": group, "flags": tuple(flags), "metavar": metavar, "check": check,
            "choices": tuple(choices) if choices is not None else None, "hidden": hidden,
            "parser_choices": tuple(parser_choices) if parser_choices is not None else None}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig(Mapping[str, Any]):
    """Every setting of a training run (names and defaults are timm's train.py's), validated on creation.

    Frozen: derive variants with `dataclasses.replace`. Also a read-only mapping of setting
    name -> value (`cfg["epochs"]`, `dict(cfg)`), like the dict it replaces.
    """

    # data
    data_dir: str | None = _setting(None, "dataset root with ImageFolder splits (train/, val/)", None,
                                    flags=("data_dir",), metavar="DATA_DIR")
    train_split: str = _setting("train", "training split folder (default {default})", DATA)
    val_split: str = _setting("val", "validation split folder (default {default}; '' for none)", DATA)
    num_classes: int | None = _setting(None, "classes (default: the number of class folders)", DATA,
                                       check="positive_int_or_none")
    img_size: int | None = _setting(None, "student input size (default: the model's)", DATA,
                                    check="positive_int_or_none")
    crop_pct: float | None = _setting(None, "eval center-crop fraction (default: the model's)", DATA, check="crop")
    interpolation: str = _setting("bicubic", "eval resize interpolation: {choices} (default {default})", DATA,
                                  choices=("bicubic", "bilinear", "nearest"))
    mean: tuple[float, float, float] | None = _setting(None, "normalisation mean", DATA, metavar="M", check="mean")
    std: tuple[float, float, float] | None = _setting(None, "normalisation std", DATA, metavar="S", check="std")
    workers: int = _setting(4, "data loading processes per training process (default {default})", DATA,
                            flags=("-j", "--workers"), check="count")
    pin_mem: bool = _setting(False, "pinned host memory for CUDA transfers", DATA)
    # model
    model: str | None = _setting(None, "zoo name, NVIDIA-format architecture JSON or gpunet .safetensors", MODEL,
                                 flags=("--model", "-m"))
    pretrained: bool = _setting(False, "start from NVIDIA's NGC weights", MODEL)
    initial_checkpoint: str | None = _setting(
        None, "start from these weights (any gpunet-readable checkpoint); another class count keeps the backbone "
              "and starts a new classifier", MODEL, metavar="PATH")
    drop: float | None = _setting(None, "classifier dropout (NVIDIA: 0.2)", MODEL, check="fraction")
    drop_path: float | None = _setting(None, "max drop-path rate, by position (default: NVIDIA's builder: 0.2 "
                                             "non-distilled, 0 distilled)", MODEL, check="fraction")
    freeze_backbone: bool = _setting(False, "train only the classifier (linear probing)", MODEL)
    grad_checkpointing: bool = _setting(False, "recompute each block's activations in the backward pass instead "
                                               "of storing them: less memory, more compute, the same result", MODEL)
    # optimizer and schedule
    batch_size: int = _setting(128, "batch size per process (default {default})", OPTIM,
                               flags=("-b", "--batch-size"), check="positive_int")
    validation_batch_size: int | None = _setting(None, "eval batch size (default: --batch-size)", OPTIM,
                                                 flags=("-vb", "--validation-batch-size"),
                                                 check="positive_int_or_none")
    opt: str = _setting("sgd", "timm optimizer name (default {default}; recipes {recipe})", OPTIM, check="optimizer")
    opt_eps: float | None = _setting(None, "optimizer epsilon", OPTIM, check="positive")
    opt_betas: tuple[float, ...] | None = _setting(None, "optimizer betas", OPTIM, check="betas")
    momentum: float = _setting(0.9, "optimizer momentum (default {default})", OPTIM, check="non_negative")
    weight_decay: float = _setting(2e-5, "weight decay (default {default})", OPTIM, check="non_negative")
    clip_grad: float | None = _setting(None, "clip gradient norm", OPTIM, check="positive")
    lr: float | None = _setting(None, "learning rate, used as is (default: lr-base scaled by batch)", OPTIM,
                                check="positive")
    lr_base: float = _setting(0.1, "lr for a global batch of --lr-base-size (default {default})", OPTIM,
                              check="positive")
    lr_base_size: int = _setting(256, "global batch size of --lr-base (default {default})", OPTIM,
                                 check="positive_int")
    lr_base_scale: str = _setting("", "'linear' or 'sqrt' (default: sqrt for ada*/lamb, else linear)", OPTIM,
                                  choices=("", "linear", "sqrt"))
    sched: str = _setting("cosine", "scheduler: {choices} (default {default})", OPTIM,
                          choices=("step", "cosine", "tanh", "poly", "plateau", "multistep"))
    epochs: int = _setting(300, "epochs (default {default})", OPTIM, check="positive_int")
    decay_epochs: float = _setting(90.0, "step scheduler period in epochs", OPTIM, check="positive")
    decay_rate: float = _setting(0.1, "step scheduler decay rate", OPTIM, flags=("--decay-rate", "--dr"),
                                 check="non_negative")
    warmup_lr: float = _setting(1e-5, "warm-up start lr", OPTIM, check="non_negative")
    warmup_epochs: int = _setting(5, "warm-up epochs", OPTIM, check="count")
    min_lr: float = _setting(0.0, "lower lr bound (cosine etc.)", OPTIM, check="non_negative")
    cooldown_epochs: int = _setting(0, "epochs at min lr after the schedule", OPTIM, check="count")
    # augmentation and regularisation
    no_aug: bool = _setting(False, "no training augmentation (resize + center crop)", AUGMENT)
    scale: tuple[float, float] = _setting((0.08, 1.0), "random-resized-crop scale range", AUGMENT,
                                          check="scale_range")
    ratio: tuple[float, float] = _setting((3 / 4, 4 / 3), "random-resized-crop aspect range", AUGMENT,
                                          check="ratio_range")
    hflip: float = _setting(0.5, "horizontal flip probability", AUGMENT, check="probability")
    vflip: float = _setting(0.0, "vertical flip probability", AUGMENT, check="probability")
    color_jitter: float = _setting(0.4, "colour jitter (default {default})", AUGMENT, check="non_negative")
    aa: str | None = _setting(None, "auto-augment policy, e.g. rand-m9-mstd0.5 ('none' to disable)", AUGMENT,
                              check="auto_augment")
    train_interpolation: str = _setting("random", "training resize interpolation: {choices} (default {default})",
                                        AUGMENT, choices=("random", "bicubic", "bilinear", "nearest", "box",
                                                          "hamming", "lanczos"))
    reprob: float = _setting(0.0, "random erasing probability", AUGMENT, check="fraction")
    remode: str = _setting("pixel", "random erasing mode ({choices})", AUGMENT, choices=("pixel", "rand", "const"))
    recount: int = _setting(1, "random erasing count", AUGMENT, check="positive_int")
    mixup: float = _setting(0.0, "mixup alpha (0 off)", AUGMENT, check="non_negative")
    cutmix: float = _setting(0.0, "cutmix alpha (0 off)", AUGMENT, check="non_negative")
    mixup_prob: float = _setting(1.0, "probability of mixup/cutmix per batch", AUGMENT, check="probability")
    mixup_switch_prob: float = _setting(0.5, "probability of cutmix instead of mixup", AUGMENT, check="probability")
    mixup_mode: str = _setting("batch", "batch, pair or elem", AUGMENT, choices=("batch", "pair", "elem"))
    smoothing: float = _setting(0.1, "label smoothing (default {default})", AUGMENT, check="fraction")
    model_ema: bool = _setting(False, "keep an exponential moving average of the weights", AUGMENT)
    model_ema_decay: float = _setting(0.9998, "EMA decay (recipes {recipe})", AUGMENT, check="fraction")
    model_ema_warmup: bool = _setting(False, "EMA decay warm-up (useful for short runs)", AUGMENT)
    # distillation
    teacher: str | None = _setting(None, "teacher: a timm model name, a GPUNet name or JSON ('none' disables)",
                                   DISTILL)
    teacher_checkpoint: str | None = _setting(None, "timm checkpoint of the teacher", DISTILL, metavar="PATH")
    teacher_weights: str | None = _setting(None, "weights of a GPUNet teacher", DISTILL, metavar="PATH")
    teacher_img_size: int | None = _setting(None, "teacher input size (batches load at this size)", DISTILL,
                                            check="positive_int_or_none")
    teacher_pretrained: bool = _setting(False, "download the teacher's weights (timm hub / NGC)", DISTILL)
    teacher_random_weights: bool = _setting(False, "allow an untrained teacher (smoke tests only: meaningless)",
                                            DISTILL)
    kd_weight: float = _setting(1.0, "weight of the distillation loss (default {default}, NVIDIA)", DISTILL,
                                check="non_negative")
    kd_temperature: float = _setting(1.0, "distillation temperature (default {default}, NVIDIA)", DISTILL,
                                     check="positive")
    test_teacher: bool = _setting(False, "report the teacher's validation accuracy first", DISTILL)
    # runtime
    device: str = _setting("auto", "{default} (default), cpu, cuda or cuda:N", RUNTIME)
    amp: bool = _setting(False, "mixed precision: fp16 + GradScaler (or bf16) on CUDA, bf16 on CPU", RUNTIME)
    amp_dtype: str = _setting("float16", "{default} (default) or bfloat16 on CUDA", RUNTIME,
                              choices=("float16", "bfloat16"))
    channels_last: bool = _setting(False, "channels_last memory format", RUNTIME)
    compile: bool = _setting(False, "torch.compile the model", RUNTIME)
    cudnn_benchmark: bool = _setting(True, "cuDNN autotuning on CUDA during the run: the fastest convolution "
                                           "algorithms for its fixed input sizes (default on)", RUNTIME)
    sync_bn: bool = _setting(False, "synchronised BatchNorm across processes", RUNTIME)
    dist_bn: str = _setting("reduce", "without --sync-bn: '{default}' (default) or 'broadcast' BN stats each epoch,"
                                      " '' for neither", RUNTIME, choices=("reduce", "broadcast", ""))
    seed: int = _setting(42, "random seed (default {default})", RUNTIME)
    log_interval: int = _setting(50, "steps between log lines (default {default})", RUNTIME, check="positive_int")
    output: str | None = _setting(None, f"output base folder (default {DEFAULT_OUTPUT})", RUNTIME)
    experiment: str | None = _setting(None, "run folder name under --output (default: date-model-size)", RUNTIME)
    resume: str | None = _setting(None, "continue a run from its last/recovery checkpoint (settings come from the "
                                        "checkpoint; flags given override them)", RUNTIME, metavar="PATH")
    no_resume_opt: bool = _setting(False, "with --resume: fresh optimizer and scheduler state", RUNTIME)
    eval_metric: str = _setting("top1", "{default} (default), top5 or loss: picks model_best", RUNTIME,
                                choices=("top1", "top5", "loss"))
    debug_step_delay: float = _setting(0.0, "seconds to sleep after each step (tests: time to send a signal)",
                                       RUNTIME, hidden=True)
    # which recipe the settings started from (set by resolve_config, not an override)
    recipe: str | None = _setting(None, "NVIDIA's published recipe for a model (any flag overrides it)", None,
                                  parser_choices=tuple(RECIPES))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _normalise(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # frozen: normalising on creation is the one write
            _check(f, value)

    # read-only mapping of setting name -> value
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists): what YAML and a checkpoint's `args` hold."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def scaled_lr(self, world_size: int = 1) -> float:
        """The learning rate this run uses on `world_size` processes (see `recipes.scaled_lr`)."""
        return scaled_lr(self, world_size)


_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(TrainConfig)}
SETTINGS = tuple(name for name in _FIELDS if name != "recipe")  # what overrides (flags, keywords) may set


def config_fields() -> tuple[Field[Any], ...]:
    """The settings' fields in order, with their metadata (help, group, flags, checks)."""
    return tuple(_FIELDS.values())


def _normalise(f: Field[Any], value: Any) -> Any:
    """Sequences -> tuples, paths -> str, 'none' -> None for aa/teacher."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    if f.name in ("aa", "teacher") and isinstance(value, str) and value.lower() in ("", "none"):
        return None
    return value


def _check(f: Field[Any], value: Any) -> None:
    """The field's allowed values (`choices`) and range (`check`); a RecipeError names the setting."""
    choices = f.metadata["choices"]
    if choices is not None and value not in choices:
        raise RecipeError(f"{f.name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    check = f.metadata["check"]
    if check is not None:
        passes, expected = _CHECKS[check]
        if not passes(value):
            raise RecipeError(f"{f.name}: expected {expected}, got {value!r}")


def help_text(f: Field[Any]) -> str | None:
    """A field's help with its `{default}`, `{choices}` and `{recipe}` filled in (None when hidden)."""
    text = f.metadata["help"]
    if f.metadata["hidden"] or text is None:
        return None
    if "{default}" in text:
        text = text.replace("{default}", _show(f.default))
    if "{choices}" in text:
        text = text.replace("{choices}", ", ".join(map(_show, f.metadata["choices"])))
    if "{recipe}" in text:
        shared = {getattr(r, f.name) for r in RECIPES.values()}
        text = text.replace("{recipe}", _show(shared.pop()) if len(shared) == 1 else "vary")
    return text


def _show(value: Any) -> str:
    """A default as help text writes it: 2e-5, 0.9, 1, cosine."""
    if isinstance(value, float):
        text = format(value, "g")
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}e{int(exponent)}" if exponent else text
    return str(value)


def resolve_config(recipe: str | Recipe | None = None, overrides: Mapping[str, Any] | None = None, *,
                   base: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults (or `base`, e.g. a resumed run's settings) <- recipe <- overrides (None values ignored).

    Raises RecipeError for an unknown recipe or setting and for an invalid value.
    """
    values: dict[str, Any] = {k: v for k, v in (base or {}).items() if k in _FIELDS}
    if recipe is not None:
        r = get_recipe(recipe) if isinstance(recipe, str) else recipe
        values.update(r.to_config())
        values["recipe"] = r.name
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in SETTINGS:
            raise RecipeError(f"unknown setting {key!r}.{did_you_mean(key, SETTINGS)}")
        values[key] = value
    return TrainConfig(**values)


def config_yaml(cfg: TrainConfig, world_size: int = 1) -> str:
    """The resolved settings as YAML (`--print-config`, `args.yaml`), plus the lr and process count they give."""
    import yaml

    d = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_YAML}
    d["resolved_lr"] = cfg.scaled_lr(world_size)
    d["world_size"] = world_size
    return yaml.safe_dump(d, sort_keys=False)


DEFAULTS: Mapping[str, Any] = MappingProxyType(TrainConfig().to_dict())  # every setting's default, read-only
