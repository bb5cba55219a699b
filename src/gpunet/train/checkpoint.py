"""Training checkpoints and run files: RNG state, reading a checkpoint back, summary.csv.

A checkpoint has timm's layout with NVIDIA's key names (`state_dict`, `state_dict_ema`,
`optimizer`, `epoch`, `args`, ...), so NVIDIA's code and `gpunet.create_model(..., weights=)`
load it, plus a `gpunet` entry with what an exact resume needs (scheduler, scaler, step, RNG
states). Everything in it is tensors, lists and plain numbers: it loads with weights_only=True.
Its `label_names` entry lists the class names of the outputs (the class folders, in output order).

Checkpoints are serialised in memory and then written atomically, so a full disk is an OSError
naming the file (torch.save writing to a file reports it as an opaque RuntimeError) and the
previous file stays as it was.
"""

from __future__ import annotations

import csv
import io
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gpunet._checks import naming_errors
from gpunet._io import atomic_write, atomic_write_bytes
from gpunet.errors import TrainError
from gpunet.records import LABEL_NAMES

CHECKPOINT_VERSION = 2  # timm's CheckpointSaver version (epoch = last completed epoch, 0-based)
LAST, BEST, RECOVERY = "last.pth.tar", "model_best.pth.tar", "recovery.pth.tar"
SUMMARY_COLUMNS = ("epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "ema_eval_loss", "ema_top1",
                   "ema_top5", "lr", "img_per_sec")
RUN_FILES = ("args.yaml", "summary.csv", "architecture.json", LAST, BEST, RECOVERY)  # what a run writes
# settings of a run that a resumed run does not inherit (without --output/--experiment it writes beside its
# checkpoint, so resuming a copied run never writes into the original's folder)
ONE_OFF_SETTINGS = ("resume", "debug_step_delay", "pretrained", "initial_checkpoint", "output", "experiment")


# ---------------------------------------------------------------------------- RNG state

def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- checkpoint values

def plain(value: Any) -> Any:
    """Mappings, lists, strings and numbers as they are; anything else as its str (weights_only-loadable)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def to_cpu(obj: Any) -> Any:
    """Tensors (also inside dicts, lists, tuples) detached, copied to CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint written by `gpunet train` (weights_only: no code can run); TrainError otherwise."""
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


def save_checkpoint(ckpt: Mapping[str, Any], path: str) -> None:
    """`torch.save(ckpt)` to `path` atomically; a write failure is the OSError of the write (ENOSPC, EACCES)."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())

    with naming_errors(path):
        atomic_write(path, write)


def resume_settings(resume: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The settings a resumed run starts from: the checkpoint's, less the one-off ones (None: no resume)."""
    if not resume:
        return None
    args = dict(read_training_checkpoint(os.fspath(resume)).get("args") or {})
    for key in ONE_OFF_SETTINGS:
        args.pop(key, None)
    return args


def architecture_with_classes(arch: Any, num_classes: int) -> Any:
    """`arch` with its tail's num_classes set (so the saved JSON rebuilds the trained model)."""
    from dataclasses import replace

    from gpunet.arch import Architecture

    if arch.num_classes == num_classes:
        return arch
    return Architecture(arch.img_resolution, arch.distill, arch.layers[:-1] + (replace(arch.tail,
                                                                                        num_classes=num_classes),))


# ---------------------------------------------------------------------------- the run folder

def check_run_folder(folder: str, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds another run's files (unless resuming or `overwrite`)."""
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
    if found and not resuming and not overwrite:
        last = os.path.join(folder, LAST)
        raise TrainError(f"{folder} already holds a training run ({', '.join(found)}); continue it with --resume "
                         f"{last}, start over with --overwrite (its files are replaced), or choose another "
                         "--experiment")


def remove_run_files(folder: str) -> None:
    """Delete a previous run's files from `folder` (`--overwrite`), so nothing of it mixes with the new run."""
    for name in RUN_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.unlink(path)


def run_label_names(resume_ckpt: Mapping[str, Any] | None, folders: Sequence[str], num_classes: int) -> list[str]:
    """The class names of a run's outputs: a resumed run's recorded ones, else those of the class folders
    (`gpunet.labels.training_label_names`); a resumed run from before names were recorded keeps the sorted
    folder order it was trained with."""
    from gpunet.labels import training_label_names

    if resume_ckpt is not None:
        names = resume_ckpt.get(LABEL_NAMES)
        if isinstance(names, list) and len(names) == num_classes:
            return [str(n) for n in names]
        return sorted(folders) + [f"class_{i}" for i in range(len(folders), num_classes)]
    return training_label_names(folders, num_classes)


# ---------------------------------------------------------------------------- summary.csv

def write_summary(path: str, rows: list[dict[str, Any]]) -> None:
    """One row per epoch, the columns any row has (in SUMMARY_COLUMNS order); written atomically."""
    cols = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    with naming_errors(path):
        atomic_write_bytes(path, buf.getvalue().encode())


def read_summary(path: str) -> list[dict[str, Any]]:
    """The rows `write_summary` wrote ([] when there is no file)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v not in (None, "")}
                for r in csv.DictReader(f)]
