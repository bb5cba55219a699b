"""Training: NVIDIA's recipes on current PyTorch/timm, distillation, fine-tuning, multi-process, exact resume.

    gpunet train DATA --model gpunet_0 --recipe gpunet_0 [overrides]
    torchrun --nproc-per-node 8 -m gpunet train DATA --recipe gpunet_d1 --teacher-checkpoint b5ns.pth
    gpunet.train.train("DATA", model="my.json", epochs=10, batch_size=64)      # Python API

DATA holds ImageFolder splits (`train/`, `val/`). Flags carry timm's names and meanings.
Outputs (rank 0 only, written atomically) go to OUTPUT/EXPERIMENT: args.yaml, summary.csv,
architecture.json, last.pth.tar, model_best.pth.tar and, on SIGTERM/SIGINT, recovery.pth.tar.
Checkpoints have timm's layout with NVIDIA's key names (`state_dict`, `state_dict_ema`, ...),
so NVIDIA's code and `gpunet.create_model(..., weights=)` load them, plus a `gpunet` entry with
what an exact resume needs (scheduler, scaler, step, RNG states).

Exact resume: the data order depends only on (seed, epoch) (a seeded distributed sampler),
each sample's augmentation only on (seed, epoch, index) (forked, seeded RNGs), and a
recovery checkpoint is taken at a step boundary with the step inside the epoch; `--resume`
skips the batches already done. On CPU an interrupted and resumed run ends bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gpunet._io import atomic_write, atomic_write_bytes
from gpunet.distributed import (
    DistributedError,
    ResumableDistributedSampler,
    ShardSampler,
    all_reduce_sum,
    convert_cpu_sync_batchnorm,
    init_distributed,
)
from gpunet.errors import TrainError
from gpunet.recipes import DEFAULTS, RECIPES, RecipeError, resolve_config, scaled_lr

log = logging.getLogger("gpunet.train")

CHECKPOINT_VERSION = 2  # timm's CheckpointSaver version (epoch = last completed epoch, 0-based)
EXIT_OK, EXIT_USAGE = 0, 2
LAST, BEST, RECOVERY = "last.pth.tar", "model_best.pth.tar", "recovery.pth.tar"



class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT: a recovery checkpoint was saved (`path`) and training stopped."""

    def __init__(self, signum: int, path: str | None) -> None:
        super().__init__(f"interrupted by signal {signum}; recovery checkpoint: {path}")
        self.signum, self.path = signum, path


@dataclass
class TrainResult:
    output_dir: str
    epochs_run: int
    best_metric: float | None
    best_epoch: int | None
    last: dict[str, float] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------- data

def load_rgb(path: str) -> Any:
    from PIL import Image

    from gpunet.transforms import to_rgb

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    return to_rgb(img)


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch(CPU) RNGs for a block and restore them afterwards."""
    py_state, np_state, t_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(t_state)


class SeededImageFolder(Dataset):
    """ImageFolder samples whose random transform is a function of (seed, epoch, index) only."""

    def __init__(self, root: str, transform: Any, seed: int = 0) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(root, loader=load_rgb)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.classes = self.folder.classes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.folder.samples[index]
        img = self.folder.loader(path)
        with forked_rng(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2 ** 63)):
            x = self.transform(img)
        return x, target


# ---------------------------------------------------------------------------- checkpoints

def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors, lists and numbers (loadable with weights_only=True)."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu(v) for v in obj)
    return obj


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by this module (weights_only: no code can run)."""
    if not os.path.isfile(path):
        raise TrainError(f"--resume {path}: file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise TrainError(f"--resume {path}: not a readable training checkpoint ({str(exc).splitlines()[0][:200]})"
                         ) from None
    if not isinstance(ckpt, dict) or "gpunet" not in ckpt or "state_dict" not in ckpt:
        raise TrainError(f"--resume {path}: not a gpunet training checkpoint (no 'gpunet' resume state); to start "
                         "from weights only use --initial-checkpoint")
    return ckpt


def architecture_with_classes(arch: Any, num_classes: int) -> Any:
    """`arch` with its tail's num_classes set (so the saved JSON rebuilds the trained model)."""
    from dataclasses import replace

    from gpunet.arch import Architecture

    if arch.num_classes == num_classes:
        return arch
    return Architecture(arch.img_resolution, arch.distill, arch.layers[:-1] + (replace(arch.tail,
                                                                                        num_classes=num_classes),))


# ---------------------------------------------------------------------------- the trainer

class _StopFlag:
    """SIGTERM/SIGINT -> stop at the next step boundary (a second signal stops at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handle)

    def uninstall(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"gpunet train: received signal {signum}: saving a recovery checkpoint at the next step boundary",
              file=sys.stderr, flush=True)


class Trainer:
    """One training run (one process of it under torchrun), from a resolved configuration."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)
        self.info = init_distributed(self.cfg["device"])
        self.stop = _StopFlag()
        self.resume_ckpt: dict[str, Any] | None = None
        if self.cfg.get("resume"):
            self.resume_ckpt = read_training_checkpoint(self.cfg["resume"])
        self._resume_rng: dict[str, Any] | None = None
        self.setup()

    # ------------------------------------------------------------------ setup
    def _print(self, *args: Any, **kwargs: Any) -> None:
        if self.info.is_main:
            print(*args, **kwargs, flush=True)

    def setup(self) -> None:  # noqa: C901 - a linear sequence of setup steps
        cfg, info = self.cfg, self.info
        seed = int(cfg["seed"])
        _seed_all(seed + info.rank)
        from gpunet.zoo import create_model, get_pretrained_config, resolve_architecture

        # --- model and data settings
        if self.resume_ckpt is not None:
            from gpunet.arch import loads_json

            arch = loads_json(self.resume_ckpt["gpunet"]["architecture"], source=f"{cfg['resume']} (architecture)")
            zoo_name = self.resume_ckpt["gpunet"].get("model_name")
        else:
            if not cfg.get("model"):
                raise TrainError("no model: pass --model NAME|JSON (or --recipe NAME)")
            arch, zoo_name = resolve_architecture(cfg["model"])
        self.zoo_name = zoo_name
        pcfg = get_pretrained_config(zoo_name) if zoo_name else None
        self.img_size = int(cfg["img_size"] or (pcfg.input_size[-1] if pcfg else arch.img_resolution))
        self.crop_pct = float(cfg["crop_pct"] or (pcfg.crop_pct if pcfg else 1.0))
        mean = tuple(cfg["mean"] or (pcfg.mean if pcfg else (0.485, 0.456, 0.406)))
        std = tuple(cfg["std"] or (pcfg.std if pcfg else (0.229, 0.224, 0.225)))

        data_dir = cfg.get("data_dir")
        if not data_dir:
            raise TrainError("no dataset: pass DATA_DIR (a folder with train/ and val/ ImageFolder splits)")
        train_dir = os.path.join(data_dir, cfg["train_split"])
        if not os.path.isdir(train_dir):
            raise TrainError(f"{train_dir}: training split not found (DATA_DIR/{cfg['train_split']}/CLASS/IMAGE; "
                             "see --train-split)")
        val_dir = os.path.join(data_dir, cfg["val_split"]) if cfg["val_split"] else None
        if val_dir and not os.path.isdir(val_dir):
            self._print(f"gpunet train: no validation split at {val_dir}: training without evaluation")
            val_dir = None

        self.teacher: nn.Module | None = None
        self.teacher_size: int | None = None
        self.teacher_crop_pct = 1.0
        load_size = self.img_size  # the teacher's size when distilling

        from timm.data import create_transform

        from gpunet.transforms import eval_transform

        self.train_set = SeededImageFolder(train_dir, None, seed)
        if not self.train_set.classes:
            raise TrainError(f"{train_dir}: no class folders")
        num_classes = int(cfg["num_classes"] or len(self.train_set.classes))
        if self.resume_ckpt is not None:
            num_classes = arch.num_classes
        if num_classes < len(self.train_set.classes):
            raise TrainError(f"--num-classes {num_classes} but {train_dir} has {len(self.train_set.classes)} classes")
        self.num_classes = num_classes

        if cfg.get("teacher"):  # built for the student's class count
            from gpunet.distill import build_teacher, teacher_data_config

            self.teacher = build_teacher(cfg["teacher"], num_classes, checkpoint=cfg["teacher_checkpoint"],
                                         weights=cfg["teacher_weights"], pretrained=bool(cfg["teacher_pretrained"]),
                                         random_weights=bool(cfg["teacher_random_weights"]))
            tcfg = teacher_data_config(self.teacher, cfg["teacher_img_size"])
            self.teacher_size, self.teacher_crop_pct = tcfg["img_size"], tcfg["crop_pct"]
            load_size = self.teacher_size
            self.teacher.to(info.device)
            if cfg["channels_last"]:
                self.teacher.to(memory_format=torch.channels_last)
        self.load_size = load_size

        self.train_set.transform = create_transform(
            load_size, is_training=True, no_aug=bool(cfg["no_aug"]), scale=tuple(cfg["scale"]),
            ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"], vflip=cfg["vflip"], color_jitter=cfg["color_jitter"],
            auto_augment=cfg["aa"], interpolation=cfg["train_interpolation"], mean=mean, std=std,
            re_prob=cfg["reprob"], re_mode=cfg["remode"], re_count=cfg["recount"])
        self.val_set = None
        if val_dir:
            self.val_set = SeededImageFolder(val_dir, eval_transform(arch, img_size=self.img_size,
                                                                     crop_pct=self.crop_pct), seed)
            if self.val_set.classes != self.train_set.classes[:len(self.val_set.classes)]:
                self._print(f"gpunet train: WARNING: {val_dir} classes differ from {train_dir}'s")

        bs = int(cfg["batch_size"])
        self.sampler = ResumableDistributedSampler(self.train_set, info.world_size, info.rank, seed)
        self.steps_per_epoch = len(self.sampler) // bs
        if self.steps_per_epoch == 0:
            raise TrainError(f"{len(self.train_set)} training images are fewer than one batch of {bs} per process "
                             f"x {info.world_size} processes: lower --batch-size")
        self.loader_generator = torch.Generator().manual_seed(seed)
        workers = int(cfg["workers"])
        self.train_loader = DataLoader(self.train_set, batch_size=bs, sampler=self.sampler, num_workers=workers,
                                       pin_memory=bool(cfg["pin_mem"]), drop_last=True,
                                       generator=self.loader_generator)
        self.val_loader = None
        if self.val_set is not None:
            self.val_loader = DataLoader(self.val_set, batch_size=int(cfg["validation_batch_size"] or bs),
                                         sampler=ShardSampler(len(self.val_set), info.rank, info.world_size),
                                         num_workers=workers, pin_memory=bool(cfg["pin_mem"]),
                                         generator=torch.Generator().manual_seed(seed))

        # --- model
        from gpunet.model import DEFAULT_DROP_RATE

        drop = DEFAULT_DROP_RATE if cfg["drop"] is None else float(cfg["drop"])
        model: nn.Module
        if self.resume_ckpt is not None:
            from gpunet.model import GPUNet

            model = GPUNet(arch, num_classes, drop_rate=drop, drop_path_rate=cfg["drop_path"])
        else:
            model = create_model(cfg["model"], pretrained=bool(cfg["pretrained"]),
                                 weights=cfg["initial_checkpoint"], num_classes=num_classes, drop_rate=drop,
                                 drop_path_rate=cfg["drop_path"], progress=info.is_main)
        self.arch = architecture_with_classes(arch, num_classes)
        if cfg["freeze_backbone"]:
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("classifier."))
        model.to(info.device)
        if cfg["channels_last"]:
            model.to(memory_format=torch.channels_last)
        if cfg["sync_bn"] and info.distributed:
            if info.device.type == "cuda":
                from timm.layers import convert_sync_batchnorm

                model = convert_sync_batchnorm(model)
            else:
                model = convert_cpu_sync_batchnorm(model)
        self.net = model  # the unwrapped model: saved, evaluated, EMA'd

        # --- optimiser, schedule, AMP, EMA
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        self.lr = scaled_lr(cfg, info.world_size)
        opt_kwargs: dict[str, Any] = {}
        if cfg["opt_eps"] is not None:
            opt_kwargs["eps"] = cfg["opt_eps"]
        if cfg["opt_betas"] is not None:
            opt_kwargs["betas"] = tuple(cfg["opt_betas"])
        self.optimizer = create_optimizer_v2(model, opt=cfg["opt"], lr=self.lr, weight_decay=cfg["weight_decay"],
                                             momentum=cfg["momentum"], **opt_kwargs)
        self.scheduler, self.num_epochs = create_scheduler_v2(
            self.optimizer, sched=cfg["sched"], num_epochs=int(cfg["epochs"]), decay_epochs=cfg["decay_epochs"],
            decay_rate=cfg["decay_rate"], min_lr=cfg["min_lr"], warmup_lr=cfg["warmup_lr"],
            warmup_epochs=int(cfg["warmup_epochs"]), cooldown_epochs=int(cfg["cooldown_epochs"]),
            plateau_mode="min" if cfg["eval_metric"] == "loss" else "max",
            updates_per_epoch=self.steps_per_epoch)
        self.amp_dtype: torch.dtype | None = None
        if cfg["amp"]:
            self.amp_dtype = torch.bfloat16 if (info.device.type == "cpu" or cfg["amp_dtype"] == "bfloat16") \
                else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.model: nn.Module = model
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        self.ema = None
        if cfg["model_ema"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=cfg["model_ema_decay"], use_warmup=bool(cfg["model_ema_warmup"]))
        if cfg["compile"]:
            self.model = torch.compile(self.model)  # type: ignore[assignment]

        # --- loss, mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup = None
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            from timm.data import Mixup

            if bs % 2:
                raise TrainError("mixup/cutmix need an even --batch-size")
            self.mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], prob=cfg["mixup_prob"],
                               switch_prob=cfg["mixup_switch_prob"], mode=cfg["mixup_mode"],
                               label_smoothing=cfg["smoothing"], num_classes=num_classes)
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg["smoothing"]:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=cfg["smoothing"])
        else:
            self.criterion = nn.CrossEntropyLoss()

        # --- state
        self.start_epoch, self.skip_steps, self.global_step = 0, 0, 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.partial = {"loss_sum": 0.0, "samples": 0.0}
        self.summary_rows: list[dict[str, Any]] = []
        self.output_dir = self._output_dir()
        if self.resume_ckpt is not None:
            self._load_resume(self.resume_ckpt)

    def _output_dir(self) -> str:
        cfg = self.cfg
        if cfg.get("resume") and not cfg.get("output") and not cfg.get("experiment"):
            return os.path.dirname(os.path.abspath(cfg["resume"]))
        name = cfg.get("experiment")
        if not name:
            model = os.path.splitext(os.path.basename(str(cfg.get("model") or "gpunet")))[0]
            name = "-".join([time.strftime("%Y%m%d-%H%M%S"), model, str(self.img_size)])
        return os.path.join(cfg.get("output") or os.path.join(".", "output", "train"), name)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int, next_epoch: int, step_in_epoch: int, metric: float | None) -> dict[str, Any]:
        from gpunet.weights import to_nvidia

        rng = _rng_state()
        if self.info.distributed:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, _cpu(rng))
            rngs = gathered
        else:
            rngs = [rng]
        ckpt: dict[str, Any] = {
            "epoch": epoch,
            "arch": self.zoo_name or "gpunet",
            "state_dict": _cpu(to_nvidia(self.net.state_dict(), self.arch)),
            "optimizer": _cpu(self.optimizer.state_dict()),
            "version": CHECKPOINT_VERSION,
            "args": _plain(self.cfg),
            "metric": metric,
        }
        if self.scaler is not None:
            ckpt["amp_scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            ckpt["state_dict_ema"] = _cpu(to_nvidia(self.ema.module.state_dict(), self.arch))
        ckpt["gpunet"] = {
            "architecture": json.dumps(self.arch.to_json()),
            "model_name": self.zoo_name,
            "num_classes": self.num_classes,
            "scheduler": _plain(self.scheduler.state_dict()),
            "next_epoch": next_epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "partial_epoch": dict(self.partial),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "world_size": self.info.world_size,
            "rng": rngs,
            "lr": self.lr,
        }
        return ckpt

    def _save(self, ckpt: dict[str, Any], name: str) -> str:
        path = os.path.join(self.output_dir, name)
        if self.info.is_main:
            atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
        return path

    def _load_resume(self, ckpt: dict[str, Any]) -> None:
        from gpunet.weights import from_nvidia

        g = ckpt["gpunet"]
        sd, unknown = from_nvidia(ckpt["state_dict"], self.arch)
        if unknown:
            raise TrainError(f"--resume {self.cfg['resume']}: unexpected tensors {unknown[:5]}")
        self.net.load_state_dict(sd)
        if self.ema is not None and "state_dict_ema" in ckpt:
            ema_sd, _ = from_nvidia(ckpt["state_dict_ema"], self.arch)
            self.ema.module.load_state_dict(ema_sd)
        if not self.cfg["no_resume_opt"]:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(g["scheduler"])
            if self.scaler is not None and "amp_scaler" in ckpt:
                self.scaler.load_state_dict(ckpt["amp_scaler"])
        self.start_epoch, self.skip_steps = int(g["next_epoch"]), int(g["step_in_epoch"])
        self.global_step = int(g["global_step"])
        self.partial = {k: float(v) for k, v in g.get("partial_epoch", {}).items()} or self.partial
        self.best_metric, self.best_epoch = g.get("best_metric"), g.get("best_epoch")
        if self.skip_steps > self.steps_per_epoch:
            raise TrainError(f"--resume: the checkpoint stopped at step {self.skip_steps} of an epoch but this run "
                             f"has only {self.steps_per_epoch} steps per epoch (changed dataset or batch size?)")
        rngs = g.get("rng") or []
        if len(rngs) == self.info.world_size:
            self._resume_rng = rngs[self.info.rank]
        else:
            self._print(f"gpunet train: resuming with {self.info.world_size} processes instead of "
                        f"{len(rngs)}: RNG states re-seeded (the run is not bit-identical)")
            self._resume_rng = None
            _seed_all(int(self.cfg["seed"]) + self.info.rank + self.global_step)
        self.summary_rows = [r for r in _read_summary(os.path.join(self.output_dir, "summary.csv"))
                             if int(r["epoch"]) <= self.start_epoch]
        self._print(f"gpunet train: resumed from {self.cfg['resume']} at epoch {self.start_epoch + 1}, "
                    f"step {self.skip_steps}/{self.steps_per_epoch} (global step {self.global_step})")

    # ------------------------------------------------------------------ loops
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.info.device, non_blocking=True)
        y = y.to(self.info.device, non_blocking=True)
        if self.cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _should_stop(self) -> bool:
        flag = self.stop.signum is not None
        if self.info.distributed:
            t = torch.tensor([self.stop.signum or 0], dtype=torch.int64, device=self.info.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if t.item() and self.stop.signum is None:
                self.stop.signum = int(t.item())
            flag = bool(t.item())
        return flag

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg["freeze_backbone"]:  # linear probing: frozen BatchNorm statistics too
            for name, m in self.net.named_children():
                if name != "classifier":
                    m.eval()

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        from gpunet.distill import kd_loss, resize_for_student

        cfg, info = self.cfg, self.info
        self._set_train_mode()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        skip = self.skip_steps
        self.sampler.skip = skip * int(cfg["batch_size"])
        self.skip_steps = 0
        loss_sum = torch.tensor(self.partial["loss_sum"], dtype=torch.float64)
        samples = self.partial["samples"]
        n_steps = self.steps_per_epoch
        started, timed_samples = time.perf_counter(), 0
        bar = _progress(total=n_steps, initial=skip, desc=f"epoch {epoch + 1}/{self.num_epochs}",
                        enabled=info.is_main)
        delay = float(cfg.get("debug_step_delay") or 0.0)
        step = skip
        for step, (x, y) in enumerate(self.train_loader, start=skip):
            if step >= n_steps:
                break
            x, y = self._to_device(x, y)
            target = y
            if self.mixup is not None:
                x, target = self.mixup(x, y)
            with self._autocast():
                out = self.model(resize_for_student(x, self.img_size))
                loss = self.criterion(out, target)
                if self.teacher is not None:
                    with torch.no_grad():
                        t_out = self.teacher(x)
                    loss = loss + cfg["kd_weight"] * kd_loss(out, t_out, cfg["kd_temperature"])
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if cfg["clip_grad"]:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.net.parameters(), cfg["clip_grad"])
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if cfg["clip_grad"]:
                    nn.utils.clip_grad_norm_(self.net.parameters(), cfg["clip_grad"])
                self.optimizer.step()
            self.global_step += 1
            if self.ema is not None:
                self.ema.update(self.net, step=self.global_step)
            self.scheduler.step_update(num_updates=self.global_step)
            loss_sum += loss.detach().double().cpu() * x.shape[0]
            samples += x.shape[0]
            timed_samples += x.shape[0]
            self.partial = {"loss_sum": float(loss_sum), "samples": samples}
            bar.update(1)
            if info.is_main and (step + 1) % max(1, int(cfg["log_interval"])) == 0 or step + 1 == n_steps:
                self._print(f"train: epoch {epoch + 1}/{self.num_epochs} batch {step + 1}/{n_steps} "
                            f"step {self.global_step} loss {loss.item():.4f} lr {self._lr():.4g}")
            if delay:
                time.sleep(delay)
            if self._should_stop():
                bar.close()
                ckpt = self._checkpoint(epoch - 1, epoch, step + 1, None)
                path = self._save(ckpt, RECOVERY)
                self._print(f"gpunet train: saved recovery checkpoint {path} (epoch {epoch + 1}, batch {step + 1}/"
                            f"{n_steps}, step {self.global_step}); continue with --resume {path}")
                raise TrainingInterrupted(self.stop.signum or signal.SIGTERM, path)
        bar.close()
        elapsed = time.perf_counter() - started
        total_loss, total_samples, total_timed = all_reduce_sum([float(loss_sum), samples, timed_samples], info)
        self.partial = {"loss_sum": 0.0, "samples": 0.0}
        return {"train_loss": total_loss / max(total_samples, 1.0),
                "img_per_sec": total_timed / elapsed if elapsed > 0 else 0.0}

    def _lr(self) -> float:
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        return sum(lrs) / len(lrs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, size: int | None = None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        loss_sum = c1 = c5 = n = 0.0
        for x, y in loader:
            x, y = self._to_device(x, y)
            if size is not None:
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False) \
                    if x.shape[-1] != size else x
            with self._autocast():
                out = model(x)
            out = out.float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            k = min(5, out.shape[1])
            top = out.topk(k, dim=1).indices
            hit = top == y[:, None]
            c1 += float(hit[:, 0].sum())
            c5 += float(hit.any(dim=1).sum())
            n += x.shape[0]
        loss_sum, c1, c5, n = all_reduce_sum([loss_sum, c1, c5, n], self.info)
        model.train(was_training)
        n = max(n, 1.0)
        return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}

    def test_teacher(self) -> dict[str, float] | None:
        if self.teacher is None or self.val_set is None:
            return None
        from gpunet.transforms import eval_transform

        tf = eval_transform(self.arch, img_size=self.teacher_size, crop_pct=self.teacher_crop_pct)
        ds = SeededImageFolder(self.val_set.folder.root, tf)
        loader = DataLoader(ds, batch_size=int(self.cfg["validation_batch_size"] or self.cfg["batch_size"]),
                            sampler=ShardSampler(len(ds), self.info.rank, self.info.world_size),
                            num_workers=int(self.cfg["workers"]), generator=torch.Generator().manual_seed(0))
        m = self.evaluate(self.teacher, loader)
        self._print(f"teacher {self.cfg['teacher']} @ {self.teacher_size}px: top-1 {m['top1']:.2f}  "
                    f"top-5 {m['top5']:.2f}  loss {m['loss']:.4f}")
        return m

    def _metric(self, m: Mapping[str, float]) -> float:
        key = self.cfg["eval_metric"]
        return -m["loss"] if key == "loss" else m[key]

    def run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        if info.is_main:
            os.makedirs(self.output_dir, exist_ok=True)
            atomic_write_bytes(os.path.join(self.output_dir, "args.yaml"), config_yaml(cfg, info.world_size).encode())
            self.arch.save(os.path.join(self.output_dir, "architecture.json"))
        n_params = sum(p.numel() for p in self.net.parameters())
        n_train = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        self._print(f"gpunet train: {cfg.get('model') or self.zoo_name} ({n_params / 1e6:.2f}M params, "
                    f"{n_train / 1e6:.2f}M trainable), {self.num_classes} classes, {len(self.train_set)} train / "
                    f"{len(self.val_set) if self.val_set else 0} val images, {self.img_size}px"
                    + (f", teacher {cfg['teacher']} @ {self.teacher_size}px" if self.teacher is not None else "")
                    + f"; {info.world_size} process(es) on {info.device}, batch {cfg['batch_size']}/process, "
                    f"lr {self.lr:.4g}, {self.num_epochs} epochs -> {self.output_dir}")
        if cfg["test_teacher"]:
            self.test_teacher()
        self.stop.install()
        try:
            if self.resume_ckpt is not None:
                self.scheduler.step(self.start_epoch)  # timm's resume: lr of the resumed epoch
                if self.skip_steps:
                    self.scheduler.step_update(num_updates=self.global_step)
                if self._resume_rng is not None:
                    _set_rng_state(self._resume_rng)
            last: dict[str, float] = {}
            for epoch in range(self.start_epoch, self.num_epochs):
                train_m = self.train_one_epoch(epoch)
                if info.distributed and not cfg["sync_bn"] and cfg["dist_bn"] in ("reduce", "broadcast"):
                    from timm.utils import distribute_bn

                    distribute_bn(self.net, info.world_size, cfg["dist_bn"] == "reduce")
                    if self.ema is not None:
                        distribute_bn(self.ema.module, info.world_size, cfg["dist_bn"] == "reduce")
                row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_m["train_loss"]}
                metric = None
                if self.val_loader is not None:
                    ev = self.evaluate(self.net, self.val_loader)
                    row.update(eval_loss=ev["loss"], eval_top1=ev["top1"], eval_top5=ev["top5"])
                    metric = self._metric(ev)
                    if self.ema is not None:
                        ev_ema = self.evaluate(self.ema.module, self.val_loader)
                        row.update(ema_eval_loss=ev_ema["loss"], ema_top1=ev_ema["top1"], ema_top5=ev_ema["top5"])
                        metric = self._metric(ev_ema)  # timm: the EMA's metric decides the best checkpoint
                row.update(lr=self._lr(), img_per_sec=train_m["img_per_sec"])
                self.scheduler.step(epoch + 1, metric)
                is_best = metric is not None and (self.best_metric is None or metric > self.best_metric)
                if is_best:
                    self.best_metric, self.best_epoch = metric, epoch + 1
                self.summary_rows.append(row)
                ckpt = self._checkpoint(epoch, epoch + 1, 0, metric)
                if info.is_main:
                    _write_summary(os.path.join(self.output_dir, "summary.csv"), self.summary_rows)
                    self._save(ckpt, LAST)
                    if is_best:
                        self._save(ckpt, BEST)
                    stale = os.path.join(self.output_dir, RECOVERY)
                    if os.path.exists(stale):
                        os.unlink(stale)
                self._print(_epoch_line(row, self.num_epochs, is_best))
                last = {k: float(v) for k, v in row.items() if k != "epoch"}
                if self._should_stop():
                    path = self._save(ckpt, RECOVERY)
                    raise TrainingInterrupted(self.stop.signum or signal.SIGTERM, path)
            if info.is_main and self.best_metric is not None:
                self._print(f"gpunet train: done; best {cfg['eval_metric']} {abs(self.best_metric):.4f} at epoch "
                            f"{self.best_epoch} -> {os.path.join(self.output_dir, BEST)}")
            return TrainResult(self.output_dir, self.num_epochs - self.start_epoch, self.best_metric, self.best_epoch,
                               last, list(self.summary_rows))
        finally:
            self.stop.uninstall()


# ---------------------------------------------------------------------------- helpers

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


SUMMARY_COLUMNS = ("epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "ema_eval_loss", "ema_top1",
                   "ema_top5", "lr", "img_per_sec")


def _write_summary(path: str, rows: list[dict[str, Any]]) -> None:
    cols = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def _read_summary(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v not in (None, "")}
                for r in csv.DictReader(f)]


def _epoch_line(row: Mapping[str, Any], epochs: int, best: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if "eval_top1" in row:
        parts += [f"eval_loss {row['eval_loss']:.4f}", f"top1 {row['eval_top1']:.2f}", f"top5 {row['eval_top5']:.2f}"]
    if "ema_top1" in row:
        parts += [f"ema_top1 {row['ema_top1']:.2f}"]
    parts += [f"lr {row['lr']:.4g}", f"{row['img_per_sec']:.1f} img/s"]
    return "  ".join(parts) + ("  *best*" if best else "")


def config_yaml(cfg: Mapping[str, Any], world_size: int = 1) -> str:
    import yaml

    d = _plain({k: v for k, v in cfg.items() if k not in ("print_config", "debug_step_delay")})
    d["resolved_lr"] = scaled_lr(cfg, world_size)
    d["world_size"] = world_size
    return yaml.safe_dump(d, sort_keys=False)


# ---------------------------------------------------------------------------- Python API

def train(data_dir: str | os.PathLike[str] | None = None, *, recipe: str | None = None,
          **overrides: Any) -> TrainResult:
    """Train (or resume) in this process; under torchrun, one process of a distributed run.

    Keyword arguments are the CLI flags' names (`model=`, `epochs=`, `batch_size=`, `lr=`,
    `teacher=`, `resume=`, ...); `recipe=` starts from one of NVIDIA's recipes.
    Raises `TrainingInterrupted` after saving a recovery checkpoint on SIGTERM/SIGINT.
    """
    if data_dir is not None:
        overrides["data_dir"] = os.fspath(data_dir)
    base = _resume_base(overrides.get("resume"))
    cfg = resolve_config(recipe, overrides, base=base)
    if not cfg.get("data_dir"):
        raise TrainError("no dataset: pass DATA_DIR")
    return Trainer(cfg).run()


def _resume_base(resume: Any) -> dict[str, Any] | None:
    """The settings a resumed run starts from: the checkpoint's, less the one-off ones."""
    if not resume:
        return None
    args = dict(read_training_checkpoint(str(resume)).get("args") or {})
    for key in ("resume", "print_config", "debug_step_delay", "pretrained", "initial_checkpoint"):
        args.pop(key, None)
    return args


# ---------------------------------------------------------------------------- CLI

_BOOL = argparse.BooleanOptionalAction


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """timm's train.py flags (names and meanings), plus distillation, fine-tuning and recipe flags.

    Every default is None: unset flags take the recipe's value, else timm's default (see
    `gpunet.recipes.DEFAULTS`).
    """
    a = parser.add_argument
    a("data_dir", nargs="?", metavar="DATA_DIR", help="dataset root with ImageFolder splits (train/, val/)")
    a("--recipe", choices=list(RECIPES), help="NVIDIA's published recipe for a model (any flag overrides it)")
    a("--print-config", action="store_true", default=None, help="print the resolved settings as YAML and exit")
    g = parser.add_argument_group("data")
    g.add_argument("--train-split", help="training split folder (default train)")
    g.add_argument("--val-split", help="validation split folder (default val; '' for none)")
    g.add_argument("--num-classes", type=int, help="classes (default: the number of class folders)")
    g.add_argument("--img-size", type=int, help="student input size (default: the model's)")
    g.add_argument("--crop-pct", type=float, help="eval center-crop fraction (default: the model's)")
    g.add_argument("--interpolation", help="eval resize interpolation (default bicubic)")
    g.add_argument("--mean", type=float, nargs=3, metavar="M", help="normalisation mean")
    g.add_argument("--std", type=float, nargs=3, metavar="S", help="normalisation std")
    g.add_argument("-j", "--workers", type=int, help="data loading processes per training process (default 4)")
    g.add_argument("--pin-mem", action=_BOOL, help="pinned host memory for CUDA transfers")
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", help="zoo name, NVIDIA-format architecture JSON or gpunet .safetensors")
    g.add_argument("--pretrained", action=_BOOL, help="start from NVIDIA's NGC weights")
    g.add_argument("--initial-checkpoint", metavar="PATH", help="start from these weights (any gpunet-readable "
                   "checkpoint); another class count keeps the backbone and starts a new classifier")
    g.add_argument("--drop", type=float, help="classifier dropout (NVIDIA: 0.2)")
    g.add_argument("--drop-path", type=float, help="max drop-path rate, by position (default: NVIDIA's builder: "
                   "0.2 non-distilled, 0 distilled)")
    g.add_argument("--freeze-backbone", action=_BOOL, help="train only the classifier (linear probing)")
    g = parser.add_argument_group("optimizer and schedule")
    g.add_argument("-b", "--batch-size", type=int, help="batch size per process (default 128)")
    g.add_argument("-vb", "--validation-batch-size", type=int, help="eval batch size (default: --batch-size)")
    g.add_argument("--opt", help="timm optimizer name (default sgd; recipes rmsproptf)")
    g.add_argument("--opt-eps", type=float, help="optimizer epsilon")
    g.add_argument("--opt-betas", type=float, nargs="+", help="optimizer betas")
    g.add_argument("--momentum", type=float, help="optimizer momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 2e-5)")
    g.add_argument("--clip-grad", type=float, help="clip gradient norm")
    g.add_argument("--lr", type=float, help="learning rate, used as is (default: lr-base scaled by batch)")
    g.add_argument("--lr-base", type=float, help="lr for a global batch of --lr-base-size (default 0.1)")
    g.add_argument("--lr-base-size", type=int, help="global batch size of --lr-base (default 256)")
    g.add_argument("--lr-base-scale", help="'linear' or 'sqrt' (default: sqrt for ada*/lamb, else linear)")
    g.add_argument("--sched", help="scheduler: step, cosine, tanh, poly, plateau, multistep (default cosine)")
    g.add_argument("--epochs", type=int, help="epochs (default 300)")
    g.add_argument("--decay-epochs", type=float, help="step scheduler period in epochs")
    g.add_argument("--decay-rate", "--dr", type=float, help="step scheduler decay rate")
    g.add_argument("--warmup-lr", type=float, help="warm-up start lr")
    g.add_argument("--warmup-epochs", type=int, help="warm-up epochs")
    g.add_argument("--min-lr", type=float, help="lower lr bound (cosine etc.)")
    g.add_argument("--cooldown-epochs", type=int, help="epochs at min lr after the schedule")
    g = parser.add_argument_group("augmentation and regularisation")
    g.add_argument("--no-aug", action=_BOOL, help="no training augmentation (resize + center crop)")
    g.add_argument("--scale", type=float, nargs=2, help="random-resized-crop scale range")
    g.add_argument("--ratio", type=float, nargs=2, help="random-resized-crop aspect range")
    g.add_argument("--hflip", type=float, help="horizontal flip probability")
    g.add_argument("--vflip", type=float, help="vertical flip probability")
    g.add_argument("--color-jitter", type=float, help="colour jitter (default 0.4)")
    g.add_argument("--aa", help="auto-augment policy, e.g. rand-m9-mstd0.5 ('none' to disable)")
    g.add_argument("--train-interpolation", help="training resize interpolation (default random)")
    g.add_argument("--reprob", type=float, help="random erasing probability")
    g.add_argument("--remode", help="random erasing mode (pixel, rand, const)")
    g.add_argument("--recount", type=int, help="random erasing count")
    g.add_argument("--mixup", type=float, help="mixup alpha (0 off)")
    g.add_argument("--cutmix", type=float, help="cutmix alpha (0 off)")
    g.add_argument("--mixup-prob", type=float, help="probability of mixup/cutmix per batch")
    g.add_argument("--mixup-switch-prob", type=float, help="probability of cutmix instead of mixup")
    g.add_argument("--mixup-mode", help="batch, pair or elem")
    g.add_argument("--smoothing", type=float, help="label smoothing (default 0.1)")
    g.add_argument("--model-ema", action=_BOOL, help="keep an exponential moving average of the weights")
    g.add_argument("--model-ema-decay", type=float, help="EMA decay (recipes 0.9999)")
    g.add_argument("--model-ema-warmup", action=_BOOL, help="EMA decay warm-up (useful for short runs)")
    g = parser.add_argument_group("distillation")
    g.add_argument("--teacher", help="teacher: a timm model name, a GPUNet name or JSON ('none' disables)")
    g.add_argument("--teacher-checkpoint", metavar="PATH", help="timm checkpoint of the teacher")
    g.add_argument("--teacher-weights", metavar="PATH", help="weights of a GPUNet teacher")
    g.add_argument("--teacher-img-size", type=int, help="teacher input size (batches load at this size)")
    g.add_argument("--teacher-pretrained", action=_BOOL, help="download the teacher's weights (timm hub / NGC)")
    g.add_argument("--teacher-random-weights", action=_BOOL,
                   help="allow an untrained teacher (smoke tests only: meaningless)")
    g.add_argument("--kd-weight", type=float, help="weight of the distillation loss (default 1, NVIDIA)")
    g.add_argument("--kd-temperature", type=float, help="distillation temperature (default 1, NVIDIA)")
    g.add_argument("--test-teacher", action=_BOOL, help="report the teacher's validation accuracy first")
    g = parser.add_argument_group("runtime")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--amp", action=_BOOL, help="mixed precision: fp16 + GradScaler (or bf16) on CUDA, bf16 on CPU")
    g.add_argument("--amp-dtype", help="float16 (default) or bfloat16 on CUDA")
    g.add_argument("--channels-last", action=_BOOL, help="channels_last memory format")
    g.add_argument("--compile", action=_BOOL, help="torch.compile the model")
    g.add_argument("--sync-bn", action=_BOOL, help="synchronised BatchNorm across processes")
    g.add_argument("--dist-bn", help="without --sync-bn: 'reduce' (default) or 'broadcast' BN stats each epoch, ''"
                   " for neither")
    g.add_argument("--seed", type=int, help="random seed (default 42)")
    g.add_argument("--log-interval", type=int, help="steps between log lines (default 50)")
    g.add_argument("--output", help="output base folder (default ./output/train)")
    g.add_argument("--experiment", help="run folder name under --output (default: date-model-size)")
    g.add_argument("--resume", metavar="PATH", help="continue a run from its last/recovery checkpoint (settings "
                   "come from the checkpoint; flags given override them)")
    g.add_argument("--no-resume-opt", action=_BOOL, help="with --resume: fresh optimizer and scheduler state")
    g.add_argument("--eval-metric", help="top1 (default), top5 or loss: picks model_best")
    g.add_argument("--debug-step-delay", type=float, help=argparse.SUPPRESS)


def run_from_args(args: argparse.Namespace) -> int:
    """Run `gpunet train` from parsed arguments; returns the exit status (128+signal when interrupted)."""
    overrides = {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    recipe = getattr(args, "recipe", None)
    try:
        base = _resume_base(overrides.get("resume"))
        cfg = resolve_config(recipe, overrides, base=base)
        if cfg["print_config"]:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if int(os.environ.get("RANK", "0")) == 0:
                sys.stdout.write(config_yaml(cfg, world))
            return EXIT_OK
        if not cfg.get("data_dir"):
            raise TrainError("no dataset: pass DATA_DIR (a folder with train/ and val/ ImageFolder splits)")
        Trainer(cfg).run()
    except TrainingInterrupted as exc:
        return 128 + int(exc.signum)
    except (TrainError, RecipeError, DistributedError) as exc:
        print(f"gpunet train: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as exc:
        from gpunet.arch import ArchitectureError
        from gpunet.distill import TeacherError
        from gpunet.hub import DownloadError
        from gpunet.weights import WeightsError

        if isinstance(exc, (ArchitectureError, WeightsError, DownloadError, TeacherError)):
            print(f"gpunet train: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USAGE
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpunet train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
