"""`Trainer`: one training run (one process of it under torchrun), from a `TrainConfig`.

Outputs (rank 0 only, written atomically) go to OUTPUT/EXPERIMENT: args.yaml, summary.csv,
architecture.json, last.pth.tar, model_best.pth.tar and, on SIGTERM/SIGINT, recovery.pth.tar.
A folder that already holds a run is refused unless the run resumes (`--resume`) or starts over
(`overwrite=True`, `--overwrite`, which removes the previous run's files first), so runs never
interleave and `model_best` only ever holds the best epoch of one run. Checkpoints record the
class names (`label_names`: the class folders in output order) next to the architecture.

Results (epoch lines, the best checkpoint, the teacher's accuracy) go to stdout; notes,
warnings and step progress to stderr.

Exact resume: the data order depends only on (seed, epoch) (a seeded distributed sampler),
each sample's augmentation only on (seed, epoch, index) (forked, seeded RNGs), and a
recovery checkpoint is taken at a step boundary with the step inside the epoch; `--resume`
skips the batches already done. On CPU an interrupted and resumed run ends bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from gpunet._checks import naming_errors
from gpunet._io import atomic_write_bytes
from gpunet.arch import Architecture
from gpunet.device import autocast, cudnn_autotune
from gpunet.errors import TrainError
from gpunet.metrics import correct_topk
from gpunet.train import components as C
from gpunet.train.checkpoint import (
    BEST,
    CHECKPOINT_VERSION,
    LAST,
    RECOVERY,
    architecture_with_classes,
    check_run_folder,
    plain,
    read_summary,
    read_training_checkpoint,
    remove_run_files,
    rng_state,
    run_label_names,
    save_checkpoint,
    seed_all,
    set_rng_state,
    to_cpu,
    write_summary,
)
from gpunet.train.config import DEFAULT_OUTPUT, TrainConfig, config_yaml, resolve_config
from gpunet.train.data import SeededImageFolder
from gpunet.train.distill import kd_loss, resize_for_student
from gpunet.train.distributed import all_reduce_sum, any_process_flag, init_distributed
from gpunet.train.progress import StopFlag, TrainingInterrupted, TrainResult, epoch_line, progress_bar


class Trainer:
    """One training run (one process of it under torchrun): `Trainer(cfg).run()`.

    Building it sets up everything (data, teacher, model, optimizer, EMA, loss) and, with
    `cfg.resume`, restores the checkpoint's state; `run()` trains the remaining epochs.
    """

    def __init__(self, cfg: TrainConfig | Mapping[str, Any], *, overwrite: bool = False) -> None:
        self.cfg = cfg if isinstance(cfg, TrainConfig) else resolve_config(base=cfg)
        self.overwrite = overwrite
        if not self.cfg.data_dir:
            raise TrainError(C.NO_DATA)
        self.data_dir = self.cfg.data_dir
        self.info = init_distributed(self.cfg.device)
        self.stop = StopFlag()
        self.resume_ckpt = read_training_checkpoint(self.cfg.resume) if self.cfg.resume else None
        self._resume_rng: dict[str, Any] | None = None
        self.setup()

    def _say(self, message: str) -> None:
        """A result line on stdout from the main process only."""
        if self.info.is_main:
            print(message, flush=True)

    def _note(self, message: str) -> None:
        """A note, warning or progress line on stderr from the main process only."""
        if self.info.is_main:
            print(message, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build the run's parts in a fixed order: they draw from the global RNG, seeded here per process."""
        cfg, info = self.cfg, self.info
        seed_all(cfg.seed + info.rank)
        arch, self.zoo_name = C.model_source(cfg, self.resume_ckpt)
        spec = C.input_spec(cfg, arch, self.zoo_name)
        self.img_size, self.crop_pct = spec.img_size, spec.crop_pct
        self.output_dir = self._output_dir()
        check_run_folder(self.output_dir, resuming=self.resume_ckpt is not None, overwrite=self.overwrite)
        self._setup_data(arch, spec)
        self.net = C.build_model(cfg, arch, self.num_classes, info, resuming=self.resume_ckpt is not None)
        self.arch = architecture_with_classes(arch, self.num_classes)  # the unwrapped model: saved, evaluated
        opt = C.build_optimization(cfg, self.net, self.steps_per_epoch, info)
        self.optimizer, self.scheduler, self.num_epochs, self.lr = opt.optimizer, opt.scheduler, opt.num_epochs, opt.lr
        self.amp_dtype, self.scaler = opt.amp_dtype, opt.scaler
        self.model = C.wrap_model(cfg, self.net, info)  # after DDP's broadcast: every EMA starts from rank 0's
        self.ema = C.build_ema(cfg, self.net)
        self.criterion, self.mixup = C.build_loss(cfg, self.num_classes)
        self.start_epoch, self.skip_steps, self.global_step = 0, 0, 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.partial = {"loss_sum": 0.0, "samples": 0.0}  # a resumed epoch's loss so far
        self.summary_rows: list[dict[str, Any]] = []
        if self.resume_ckpt is not None:
            self._load_resume(self.resume_ckpt)

    def _setup_data(self, arch: Architecture, spec: C.InputSpec) -> None:
        """Datasets, the teacher (its size sets the training batches' size) and the loaders."""
        from gpunet.transforms import eval_transform

        cfg = self.cfg
        train_dir, val_dir = C.split_dirs(cfg, self.data_dir, self._note)
        self.train_set = SeededImageFolder(train_dir, None, cfg.seed)
        resumed_arch = arch if self.resume_ckpt is not None else None
        self.num_classes = C.class_count(cfg, self.train_set.classes, train_dir, resumed_arch)
        self.label_names = run_label_names(self.resume_ckpt, self.train_set.classes, self.num_classes)
        self.train_set.number_by(self.label_names)
        teacher = C.build_distill_teacher(cfg, self.num_classes, self.info.device)
        self.teacher = teacher.module if teacher else None
        self.teacher_size = teacher.img_size if teacher else None
        self.teacher_crop_pct = teacher.crop_pct if teacher else 1.0
        self.load_size = self.teacher_size or self.img_size
        self.train_set.transform = C.train_transform(cfg, self.load_size, spec)
        self.val_set = None
        if val_dir:
            tf = eval_transform(arch, img_size=spec.img_size, crop_pct=spec.crop_pct)
            self.val_set = SeededImageFolder(val_dir, tf, cfg.seed, self.label_names)
        loaders = C.build_loaders(cfg, self.train_set, self.val_set, self.info)
        self.sampler, self.train_loader, self.val_loader = loaders.sampler, loaders.train, loaders.val
        self.steps_per_epoch = loaders.steps_per_epoch

    def _output_dir(self) -> str:
        """OUTPUT/EXPERIMENT; a resumed run without either keeps writing beside its checkpoint."""
        cfg = self.cfg
        if cfg.resume and not cfg.output and not cfg.experiment:
            return os.path.dirname(os.path.abspath(cfg.resume))
        name = cfg.experiment
        if not name:
            model = os.path.splitext(os.path.basename(str(cfg.model or "gpunet")))[0]
            name = "-".join([time.strftime("%Y%m%d-%H%M%S"), model, str(self.img_size)])
        return os.path.join(cfg.output or DEFAULT_OUTPUT, name)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int, next_epoch: int, step_in_epoch: int, metric: float | None) -> dict[str, Any]:
        """timm's checkpoint layout with NVIDIA's key names, plus the `gpunet` resume state (every rank's RNG)."""
        from gpunet.weights import to_nvidia

        rng = rng_state()
        rngs: list[Any] = [rng]
        if self.info.distributed:
            rngs = [None] * self.info.world_size
            dist.all_gather_object(rngs, to_cpu(rng))
        ckpt: dict[str, Any] = {
            "epoch": epoch,
            "arch": self.zoo_name or "gpunet",
            "label_names": list(self.label_names),
            "state_dict": to_cpu(to_nvidia(self.net.state_dict(), self.arch)),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "version": CHECKPOINT_VERSION,
            "args": plain(self.cfg.to_dict()),
            "metric": metric,
        }
        if self.scaler is not None:
            ckpt["amp_scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            ckpt["state_dict_ema"] = to_cpu(to_nvidia(self.ema.module.state_dict(), self.arch))
        ckpt["gpunet"] = {
            "architecture": json.dumps(self.arch.to_json()), "model_name": self.zoo_name,
            "num_classes": self.num_classes, "scheduler": plain(self.scheduler.state_dict()),
            "next_epoch": next_epoch, "step_in_epoch": step_in_epoch, "global_step": self.global_step,
            "partial_epoch": dict(self.partial), "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "world_size": self.info.world_size, "rng": rngs, "lr": self.lr,
        }
        return ckpt

    def _save(self, ckpt: dict[str, Any], name: str) -> str:
        """Write `ckpt` as OUTPUT_DIR/name (main process only); its path."""
        path = os.path.join(self.output_dir, name)
        if self.info.is_main:
            save_checkpoint(ckpt, path)
        return path

    def _load_resume(self, ckpt: dict[str, Any]) -> None:
        """Weights, optimizer, scheduler and scaler, then where the run stopped and its RNG state."""
        from gpunet.weights import from_nvidia

        sd, unknown = from_nvidia(ckpt["state_dict"], self.arch)
        if unknown:
            raise TrainError(f"--resume {self.cfg.resume}: unexpected tensors {unknown[:5]}")
        self.net.load_state_dict(sd)
        if self.ema is not None and "state_dict_ema" in ckpt:
            self.ema.module.load_state_dict(from_nvidia(ckpt["state_dict_ema"], self.arch)[0])
        if not self.cfg.no_resume_opt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["gpunet"]["scheduler"])
            if self.scaler is not None and "amp_scaler" in ckpt:
                self.scaler.load_state_dict(ckpt["amp_scaler"])
        self._load_progress(ckpt["gpunet"])

    def _load_progress(self, g: dict[str, Any]) -> None:
        """Epoch, step, partial epoch loss, best metric, RNG state and summary rows of the resumed run."""
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
            self._note(f"gpunet train: resuming with {self.info.world_size} processes instead of "
                      f"{len(rngs)}: RNG states re-seeded (the run is not bit-identical)")
            self._resume_rng = None
            seed_all(self.cfg.seed + self.info.rank + self.global_step)
        self.summary_rows = [r for r in read_summary(os.path.join(self.output_dir, "summary.csv"))
                             if int(r["epoch"]) <= self.start_epoch]
        self._note(f"gpunet train: resumed from {self.cfg.resume} at epoch {self.start_epoch + 1}, "
                  f"step {self.skip_steps}/{self.steps_per_epoch} (global step {self.global_step})")

    # ------------------------------------------------------------------ training
    def _autocast(self) -> Any:
        return autocast(self.info.device, self.amp_dtype or False)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.info.device, non_blocking=True)
        y = y.to(self.info.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _should_stop(self) -> bool:
        """A signal reached this process or any other (a host-side all-reduce): all stop at the same step."""
        signum = any_process_flag(self.stop.signum or 0, self.info)
        if signum and self.stop.signum is None:
            self.stop.signum = signum
        return bool(signum)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_backbone:  # linear probing: frozen BatchNorm statistics too
            for name, m in self.net.named_children():
                if name != "classifier":
                    m.eval()

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch (mixup, AMP, distillation, clipping, EMA, lr update); its loss."""
        cfg = self.cfg
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)
        with self._autocast():
            out = self.model(resize_for_student(x, self.img_size))
            loss = self.criterion(out, target)
            if self.teacher is not None:
                with torch.no_grad():
                    t_out = self.teacher(x)
                loss = loss + cfg.kd_weight * kd_loss(out, t_out, cfg.kd_temperature)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad)
            self.optimizer.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)
        self.scheduler.step_update(num_updates=self.global_step)
        return loss

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train epoch `epoch` (0-based) from where a resumed run stopped; its mean loss and images/s.

        The loss is summed on the device and read back only for log lines and at the end of the
        epoch (or a recovery checkpoint), so steps queue up on the GPU without waiting for each other.
        """
        cfg, info, n_steps = self.cfg, self.info, self.steps_per_epoch
        self._set_train_mode()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        skip, self.skip_steps = self.skip_steps, 0
        self.sampler.skip = skip * cfg.batch_size
        loss_sum = torch.tensor(self.partial["loss_sum"], dtype=torch.float64, device=info.device)
        samples = self.partial["samples"]
        started, timed_samples = time.perf_counter(), 0
        bar = progress_bar(n_steps, skip, f"epoch {epoch + 1}/{self.num_epochs}", info.is_main)
        for step, (x, y) in enumerate(self.train_loader, start=skip):
            if step >= n_steps:
                break
            x, y = self._to_device(x, y)
            loss = self._train_step(x, y)
            loss_sum += loss.detach().double() * x.shape[0]
            samples += x.shape[0]
            timed_samples += x.shape[0]
            bar.update(1)
            if info.is_main and (step + 1) % max(1, cfg.log_interval) == 0 or step + 1 == n_steps:
                self._note(f"train: epoch {epoch + 1}/{self.num_epochs} batch {step + 1}/{n_steps} "
                          f"step {self.global_step} loss {loss.item():.4f} lr {self._lr():.4g}")
            if cfg.debug_step_delay:
                time.sleep(cfg.debug_step_delay)
            if self._should_stop():
                bar.close()
                self.partial = {"loss_sum": float(loss_sum), "samples": samples}
                self._interrupt_mid_epoch(epoch, step + 1)
        bar.close()
        epoch_loss = float(loss_sum)  # waits for the epoch's last step: the time below includes it
        elapsed = time.perf_counter() - started
        total_loss, total_samples, total_timed = all_reduce_sum([epoch_loss, samples, timed_samples], info)
        self.partial = {"loss_sum": 0.0, "samples": 0.0}
        return {"train_loss": total_loss / max(total_samples, 1.0),
                "img_per_sec": total_timed / elapsed if elapsed > 0 else 0.0}

    def _interrupt_mid_epoch(self, epoch: int, steps_done: int) -> None:
        """Save a recovery checkpoint (with `self.partial`, the epoch's loss so far) at this step boundary and
        raise TrainingInterrupted."""
        path = self._save(self._checkpoint(epoch - 1, epoch, steps_done, None), RECOVERY)
        self._note(f"gpunet train: saved recovery checkpoint {path} (epoch {epoch + 1}, batch {steps_done}/"
                  f"{self.steps_per_epoch}, step {self.global_step}); continue with --resume {path}")
        raise TrainingInterrupted(self.stop.signum or signal.SIGTERM, path)

    def _lr(self) -> float:
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        return sum(lrs) / len(lrs)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, size: int | None = None) -> dict[str, float]:
        """Loss, top-1 and top-5 (%) of `model` over every process's shard of `loader` (at `size` if given)."""
        was_training = model.training
        model.eval()
        loss_sum = c1 = c5 = n = 0.0
        for x, y in loader:
            x, y = self._to_device(x, y)
            if size is not None and x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            with self._autocast():
                out = model(x)
            out = out.float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            top1, top5 = correct_topk(out, y, (1, 5))
            c1, c5, n = c1 + top1, c5 + top5, n + x.shape[0]
        loss_sum, c1, c5, n = all_reduce_sum([loss_sum, c1, c5, n], self.info)
        model.train(was_training)
        n = max(n, 1.0)
        return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}

    def test_teacher(self) -> dict[str, float] | None:
        """The teacher's validation accuracy at its own size and crop (None without a teacher or a split)."""
        if self.teacher is None or self.val_set is None:
            return None
        from gpunet.transforms import eval_transform

        tf = eval_transform(self.arch, img_size=self.teacher_size, crop_pct=self.teacher_crop_pct)
        ds = SeededImageFolder(self.val_set.folder.root, tf, label_names=self.label_names)
        m = self.evaluate(self.teacher, C.eval_loader(self.cfg, ds, self.info, seed=0))
        self._say(f"teacher {self.cfg.teacher} @ {self.teacher_size}px: top-1 {m['top1']:.2f}  "
                  f"top-5 {m['top5']:.2f}  loss {m['loss']:.4f}")
        return m

    def _metric(self, m: Mapping[str, float]) -> float:
        """The number --eval-metric ranks checkpoints by (higher is better: loss is negated)."""
        key = self.cfg.eval_metric
        return -m["loss"] if key == "loss" else m[key]

    def _validate_epoch(self, row: dict[str, Any]) -> float | None:
        """Evaluate the model (and its EMA) into `row`; the metric that picks model_best (the EMA's if any)."""
        if self.val_loader is None:
            return None
        ev = self.evaluate(self.net, self.val_loader)
        row.update(eval_loss=ev["loss"], eval_top1=ev["top1"], eval_top5=ev["top5"])
        metric = self._metric(ev)
        if self.ema is not None:
            ev_ema = self.evaluate(self.ema.module, self.val_loader)
            row.update(ema_eval_loss=ev_ema["loss"], ema_top1=ev_ema["top1"], ema_top5=ev_ema["top5"])
            metric = self._metric(ev_ema)  # timm: the EMA's metric decides the best checkpoint
        return metric

    # ------------------------------------------------------------------ the run
    def _start(self) -> None:
        """Write args.yaml and architecture.json and say what is about to be trained."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            if self.overwrite and self.resume_ckpt is None:
                remove_run_files(self.output_dir)
            with naming_errors(self.output_dir):
                os.makedirs(self.output_dir, exist_ok=True)
                atomic_write_bytes(os.path.join(self.output_dir, "args.yaml"),
                                   config_yaml(cfg, info.world_size).encode())
                self.arch.save(os.path.join(self.output_dir, "architecture.json"))
        n_params = sum(p.numel() for p in self.net.parameters())
        n_train = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        self._note(f"gpunet train: {cfg.model or self.zoo_name} ({n_params / 1e6:.2f}M params, "
                  f"{n_train / 1e6:.2f}M trainable), {self.num_classes} classes, {len(self.train_set)} train / "
                  f"{len(self.val_set) if self.val_set else 0} val images, {self.img_size}px"
                  + (f", teacher {cfg.teacher} @ {self.teacher_size}px" if self.teacher is not None else "")
                  + f"; {info.world_size} process(es) on {info.device}{self._parallel_note()}, "
                  f"batch {cfg.batch_size}/process, "
                  f"lr {self.lr:.4g}, {self.num_epochs} epochs -> {self.output_dir}")

    def _parallel_note(self) -> str:
        """How the processes work together, for the start line: ' (DDP over nccl)' under torchrun, else ''."""
        return f" (DDP over {dist.get_backend()})" if self.info.distributed else ""

    def _restore_position(self) -> None:
        """A resumed run: the scheduler at the resumed epoch and step, the RNGs as they were."""
        if self.resume_ckpt is None:
            return
        self.scheduler.step(self.start_epoch)  # timm's resume: lr of the resumed epoch
        if self.skip_steps:
            self.scheduler.step_update(num_updates=self.global_step)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        """Train, reduce BN statistics, validate, step the schedule, write summary and checkpoints; the row."""
        cfg, info = self.cfg, self.info
        train_m = self.train_one_epoch(epoch)
        if info.distributed and not cfg.sync_bn and cfg.dist_bn in ("reduce", "broadcast"):
            from timm.utils import distribute_bn

            distribute_bn(self.net, info.world_size, cfg.dist_bn == "reduce")
            if self.ema is not None:
                distribute_bn(self.ema.module, info.world_size, cfg.dist_bn == "reduce")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_m["train_loss"]}
        metric = self._validate_epoch(row)
        row.update(lr=self._lr(), img_per_sec=train_m["img_per_sec"])
        self.scheduler.step(epoch + 1, metric)
        is_best = metric is not None and (self.best_metric is None or metric > self.best_metric)
        if is_best:
            self.best_metric, self.best_epoch = metric, epoch + 1
        self.summary_rows.append(row)
        ckpt = self._checkpoint(epoch, epoch + 1, 0, metric)
        if info.is_main:
            write_summary(os.path.join(self.output_dir, "summary.csv"), self.summary_rows)
            self._save(ckpt, LAST)
            if is_best:
                self._save(ckpt, BEST)
            stale = os.path.join(self.output_dir, RECOVERY)
            if os.path.exists(stale):
                os.unlink(stale)
        self._say(epoch_line(row, self.num_epochs, is_best))
        if self._should_stop():
            raise TrainingInterrupted(self.stop.signum or signal.SIGTERM, self._save(ckpt, RECOVERY))
        return {k: float(v) for k, v in row.items() if k != "epoch"}

    def run(self) -> TrainResult:
        """Train the remaining epochs; TrainingInterrupted (after a recovery checkpoint) on SIGTERM/SIGINT."""
        self._start()
        if self.cfg.test_teacher:
            self.test_teacher()
        self.stop.install()
        try:
            with cudnn_autotune(self.cfg.cudnn_benchmark):  # process-wide: restored afterwards
                return self._train_epochs()
        finally:
            self.stop.uninstall()

    def _train_epochs(self) -> TrainResult:
        """The epochs from where the run stands to the last, and the result."""
        self._restore_position()
        last: dict[str, float] = {}
        for epoch in range(self.start_epoch, self.num_epochs):
            last = self._run_epoch(epoch)
        if self.info.is_main and self.best_metric is not None:
            self._say(f"gpunet train: done; best {self.cfg.eval_metric} {abs(self.best_metric):.4f} at epoch "
                      f"{self.best_epoch} -> {os.path.join(self.output_dir, BEST)}")
        return TrainResult(self.output_dir, self.num_epochs - self.start_epoch, self.best_metric,
                           self.best_epoch, last, list(self.summary_rows))
