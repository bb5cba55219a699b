"""The parts of a training run, each built from the settings: inputs, data, teacher, model, optimisation, loss.

`Trainer` calls these in a fixed order (the global RNG they draw from makes the order part of
a run's result). Each returns plain objects; none keeps state of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from gpunet.arch import Architecture
from gpunet.device import amp_dtype
from gpunet.errors import TrainError
from gpunet.train.config import DEFAULTS, TrainConfig
from gpunet.train.data import SeededImageFolder
from gpunet.train.distill import FrozenTeacher, build_teacher, teacher_data_config
from gpunet.train.distributed import DistInfo, ResumableDistributedSampler, ShardSampler, convert_cpu_sync_batchnorm
from gpunet.train.recipes import scaled_lr

NO_DATA = "no dataset: pass DATA_DIR (a folder with train/ and val/ ImageFolder splits)"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """The student's input: size, eval crop and normalisation (the settings', else the model's)."""

    img_size: int
    crop_pct: float
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class Teacher:
    """A frozen teacher on the run's device and the size and crop it sees its inputs at."""

    module: FrozenTeacher
    img_size: int
    crop_pct: float


@dataclass
class Loaders:
    """The training sampler and loader (full batches only) and the validation loader (None: no split)."""

    sampler: ResumableDistributedSampler
    train: DataLoader
    val: DataLoader | None
    steps_per_epoch: int


@dataclass
class Optimization:
    """Optimizer, scheduler and mixed precision: what steps the weights."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm scheduler
    num_epochs: int
    lr: float
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None


def model_source(cfg: TrainConfig, resume_ckpt: dict[str, Any] | None) -> tuple[Architecture, str | None]:
    """(architecture, zoo name): a resumed run's from its checkpoint, else from `--model`."""
    if resume_ckpt is not None:
        from gpunet.arch import loads_json

        arch = loads_json(resume_ckpt["gpunet"]["architecture"], source=f"{cfg.resume} (architecture)")
        return arch, resume_ckpt["gpunet"].get("model_name")
    if not cfg.model:
        raise TrainError("no model: pass --model NAME|JSON (or --recipe NAME)")
    from gpunet.zoo import resolve_architecture

    return resolve_architecture(cfg.model)


def input_spec(cfg: TrainConfig, arch: Architecture, zoo_name: str | None) -> InputSpec:
    """Each input setting not given: the zoo model's pretrained config, else the architecture's size and ImageNet's."""
    from gpunet.zoo import get_pretrained_config

    pcfg = get_pretrained_config(zoo_name) if zoo_name else None
    return InputSpec(img_size=int(cfg.img_size or (pcfg.input_size[-1] if pcfg else arch.img_resolution)),
                     crop_pct=float(cfg.crop_pct or (pcfg.crop_pct if pcfg else 1.0)),
                     mean=tuple(cfg.mean or (pcfg.mean if pcfg else IMAGENET_MEAN)),
                     std=tuple(cfg.std or (pcfg.std if pcfg else IMAGENET_STD)))


def split_dirs(cfg: TrainConfig, data_dir: str, say: Callable[[str], None]) -> tuple[str, str | None]:
    """(train folder, validation folder or None) under `data_dir`; a missing validation split is said and skipped."""
    train_dir = os.path.join(data_dir, cfg.train_split)
    if not os.path.isdir(train_dir):
        raise TrainError(f"{train_dir}: training split not found (DATA_DIR/{cfg.train_split}/CLASS/IMAGE; "
                         "see --train-split)")
    val_dir = os.path.join(data_dir, cfg.val_split) if cfg.val_split else None
    if val_dir and not os.path.isdir(val_dir):
        if cfg.val_split != DEFAULTS["val_split"]:  # a split the user named must exist; the default may not
            raise TrainError(f"{val_dir}: validation split not found (--val-split {cfg.val_split}); name an existing "
                             "folder, or pass --val-split '' to train without evaluation")
        say(f"gpunet train: no validation split at {val_dir}: training without evaluation")
        val_dir = None
    return train_dir, val_dir


def class_count(cfg: TrainConfig, classes: list[str], train_dir: str, resumed_arch: Architecture | None) -> int:
    """The classifier's size: a resumed run's, else --num-classes, else the class folders'; never fewer."""
    if not classes:
        raise TrainError(f"{train_dir}: no class folders")
    n = int(cfg.num_classes or len(classes))
    if resumed_arch is not None:
        n = resumed_arch.num_classes
    if n < len(classes):
        raise TrainError(f"--num-classes {n} but {train_dir} has {len(classes)} classes")
    return n


def build_distill_teacher(cfg: TrainConfig, num_classes: int, device: torch.device) -> Teacher | None:
    """The frozen `--teacher`, built for the student's class count, on `device` (None without one)."""
    if not cfg.teacher:
        return None
    module = build_teacher(cfg.teacher, num_classes, checkpoint=cfg.teacher_checkpoint, weights=cfg.teacher_weights,
                           pretrained=cfg.teacher_pretrained, random_weights=cfg.teacher_random_weights)
    tcfg = teacher_data_config(module, cfg.teacher_img_size)
    module.to(device)
    if cfg.channels_last:
        module.to(memory_format=torch.channels_last)
    return Teacher(module, tcfg["img_size"], tcfg["crop_pct"])


def train_transform(cfg: TrainConfig, size: int, spec: InputSpec) -> Any:
    """timm's training transform at `size` (the teacher's when distilling) with the augmentation settings."""
    from timm.data import create_transform

    return create_transform(
        size, is_training=True, no_aug=cfg.no_aug, scale=cfg.scale, ratio=cfg.ratio, hflip=cfg.hflip,
        vflip=cfg.vflip, color_jitter=cfg.color_jitter, auto_augment=cfg.aa, interpolation=cfg.train_interpolation,
        mean=spec.mean, std=spec.std, re_prob=cfg.reprob, re_mode=cfg.remode, re_count=cfg.recount)


def build_loaders(cfg: TrainConfig, train_set: SeededImageFolder, val_set: SeededImageFolder | None,
                  info: DistInfo) -> Loaders:
    """This process's shard of the data: a seeded, resumable training order and an exact validation shard."""
    bs = cfg.batch_size
    sampler = ResumableDistributedSampler(train_set, info.world_size, info.rank, cfg.seed)
    steps = len(sampler) // bs
    if steps == 0:
        raise TrainError(f"{len(train_set)} training images are fewer than one batch of {bs} per process "
                         f"x {info.world_size} processes: lower --batch-size")
    train = DataLoader(train_set, batch_size=bs, sampler=sampler, num_workers=cfg.workers, pin_memory=cfg.pin_mem,
                       drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
    val = None
    if val_set is not None:
        val = eval_loader(cfg, val_set, info, seed=cfg.seed, pin_memory=cfg.pin_mem)
    return Loaders(sampler, train, val, steps)


def eval_loader(cfg: TrainConfig, dataset: SeededImageFolder, info: DistInfo, *, seed: int,
                pin_memory: bool = False) -> DataLoader:
    """Evaluation batches of this process's shard (rank::world, no padding)."""
    return DataLoader(dataset, batch_size=cfg.validation_batch_size or cfg.batch_size,
                      sampler=ShardSampler(len(dataset), info.rank, info.world_size), num_workers=cfg.workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))


def build_model(cfg: TrainConfig, arch: Architecture, num_classes: int, info: DistInfo, resuming: bool) -> nn.Module:
    """The student on its device: a resumed run's architecture (weights come later), else `--model` with its
    initial weights; classifier-only gradients with --freeze-backbone; synchronised BN with --sync-bn."""
    from gpunet.model import DEFAULT_DROP_RATE

    drop = DEFAULT_DROP_RATE if cfg.drop is None else float(cfg.drop)
    model: nn.Module
    if resuming:
        from gpunet.model import GPUNet

        model = GPUNet(arch, num_classes, drop_rate=drop, drop_path_rate=cfg.drop_path)
    else:
        from gpunet.zoo import create_model

        assert cfg.model is not None  # model_source checked it
        model = create_model(cfg.model, pretrained=cfg.pretrained, weights=cfg.initial_checkpoint,
                             num_classes=num_classes, drop_rate=drop, drop_path_rate=cfg.drop_path,
                             progress=info.is_main)
    if cfg.freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)  # type: ignore[operator]
    model.to(info.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and info.distributed:
        if info.device.type == "cuda":
            from timm.layers import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
        else:
            model = convert_cpu_sync_batchnorm(model)
    return model


def build_optimization(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, info: DistInfo) -> Optimization:
    """timm's optimizer and scheduler at the scaled lr, and AMP (fp16 with a GradScaler, or bf16)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    lr = scaled_lr(cfg, info.world_size)
    opt_kwargs: dict[str, Any] = {}
    if cfg.opt_eps is not None:
        opt_kwargs["eps"] = cfg.opt_eps
    if cfg.opt_betas is not None:
        opt_kwargs["betas"] = tuple(cfg.opt_betas)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, **opt_kwargs)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, decay_epochs=cfg.decay_epochs,
        decay_rate=cfg.decay_rate, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs,
        cooldown_epochs=cfg.cooldown_epochs, plateau_mode="min" if cfg.eval_metric == "loss" else "max",
        updates_per_epoch=steps_per_epoch)
    dtype = None
    if cfg.amp:
        dtype = amp_dtype(info.device, torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return Optimization(optimizer, scheduler, num_epochs, lr, dtype, scaler)


def wrap_model(cfg: TrainConfig, net: nn.Module, info: DistInfo) -> nn.Module:
    """What the training step calls: `net` under DistributedDataParallel across processes, compiled on request."""
    model = net
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def build_ema(cfg: TrainConfig, net: nn.Module) -> Any:
    """timm's ModelEmaV3 of `net` with --model-ema (None without)."""
    if not cfg.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(net, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup)


def build_loss(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, Any]:
    """(criterion, mixup or None): soft-target CE under mixup/cutmix, else label smoothing, else plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if cfg.mixup > 0 or cfg.cutmix > 0:
        from timm.data import Mixup

        if cfg.batch_size % 2:
            raise TrainError("mixup/cutmix need an even --batch-size")
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        return SoftTargetCrossEntropy(), mixup
    if cfg.smoothing:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing), None
    return nn.CrossEntropyLoss(), None
