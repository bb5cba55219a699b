"""How a training run reports and ends: its result, stopping on SIGTERM/SIGINT, progress bar and epoch lines."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainResult:
    """What `train()` / `Trainer.run()` return: where the run wrote, how far it went, its numbers per epoch."""

    output_dir: str
    epochs_run: int
    best_metric: float | None
    best_epoch: int | None
    last: dict[str, float] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT: a recovery checkpoint was saved (`path`) and training stopped."""

    def __init__(self, signum: int, path: str | None) -> None:
        super().__init__(f"interrupted by signal {signum}; recovery checkpoint: {path}")
        self.signum, self.path = signum, path


class StopFlag:
    """SIGTERM/SIGINT -> stop at the next step boundary (a second signal stops at once).

    The handlers are installed for the run only (main thread only) and the previous ones restored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
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


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on an interactive terminal when `enabled`, else one that draws nothing."""
    if not enabled or not sys.stderr.isatty():
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def epoch_line(row: Mapping[str, Any], epochs: int, best: bool) -> str:
    """The one line an epoch prints: losses, accuracies, lr, speed, and whether it is the best so far."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if "eval_top1" in row:
        parts += [f"eval_loss {row['eval_loss']:.4f}", f"top1 {row['eval_top1']:.2f}", f"top5 {row['eval_top5']:.2f}"]
    if "ema_top1" in row:
        parts += [f"ema_top1 {row['ema_top1']:.2f}"]
    parts += [f"lr {row['lr']:.4g}", f"{row['img_per_sec']:.1f} img/s"]
    return "  ".join(parts) + ("  *best*" if best else "")
