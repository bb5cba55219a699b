"""Tiny datasets, architectures and subprocess runners for the training tests (CPU, seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

# A few-layer family-A (non-distilled) GPUNet: every block kind, SE, both activations.
TINY_A: list[dict[str, Any]] = [
    {"layer_type": "data", "img_resolution": 32, "distill": False},
    {"layer_type": "head", "num_in_channels": 3, "num_out_channels": 8},
    {"layer_type": "conv", "num_in_channels": 8, "num_out_channels": 8, "stride": 1, "kernel_size": 3,
     "act": "relu", "stage": 1},
    {"layer_type": "fused_irb", "num_in_channels": 8, "num_out_channels": 16, "stride": 2, "expansion": 2,
     "kernel_size": 3, "act": "swish", "use_se": False, "stage": 2},
    {"layer_type": "irb", "num_in_channels": 16, "num_out_channels": 16, "stride": 1, "expansion": 2,
     "kernel_size": 3, "act": "relu", "use_se": True, "stage": 2},
    {"layer_type": "irb", "num_in_channels": 16, "num_out_channels": 24, "stride": 2, "expansion": 2,
     "kernel_size": 3, "act": "swish", "use_se": False, "stage": 3},
    {"layer_type": "tail", "num_in_channels": 24, "num_out_channels": 32, "num_classes": 1000},
]

# A slightly wider family-B (distilled path) net, used as a teacher.
TINY_B: list[dict[str, Any]] = [
    {"layer_type": "data", "img_resolution": 48, "distill": True},
    {"layer_type": "head", "num_in_channels": 3, "num_out_channels": 8},
    {"layer_type": "irb", "num_in_channels": 8, "num_out_channels": 16, "stride": 2, "expansion": 2,
     "kernel_size": 3, "groups": 1, "stage": 1},
    {"layer_type": "irb", "num_in_channels": 16, "num_out_channels": 16, "stride": 1, "expansion": 2,
     "kernel_size": 3, "groups": 1, "stage": 1},
    {"layer_type": "tail", "num_in_channels": 16, "num_out_channels": 32, "num_classes": 1000},
]

COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30)]


def write_arch(path: Path, layers: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(layers))
    return path


def make_dataset(root: Path, classes: int = 2, train_per_class: int = 8, val_per_class: int = 2,
                 size: int = 36, seed: int = 0) -> Path:
    """ImageFolder train/ and val/: noisy images of one colour per class (learnable, varied sizes)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = size + int(rng.integers(0, 8)), size + int(rng.integers(0, 8))
                base = np.array(COLORS[c % len(COLORS)], dtype=np.float32)
                img = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def env(threads: int = 1) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = str(threads)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run_train(args: list[str], cwd: Path, timeout: float = 240, torchrun: int = 0) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={torchrun}", "-m", "gpunet", "train", *args]
    else:
        cmd = [PYTHON, "-m", "gpunet", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def load_ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
