#!/usr/bin/env python
"""A real learning check: train a small GPUNet from scratch on handwritten digits, on CPU, in minutes.

scikit-learn ships the UCI handwritten digits (1797 images, 8x8, 10 classes). This script
writes them out as an ImageFolder (train/ 80 %, val/ 20 %, stratified, fixed seed; upscaled
to 32 px RGB), writes a small family-A (non-distilled) GPUNet architecture JSON, trains it
with `gpunet.train.train` (the same code as `gpunet train`), and prints the final numbers;
the target is >= 95 % validation top-1. It also saves a training-curve plot.

    .venv/bin/pip install scikit-learn matplotlib     # (the `dev` extra)
    .venv/bin/python scripts/train_digits.py --out /tmp/digits --plot docs/img/digits_curve.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

# A small family-A GPUNet: every non-distilled block kind, SE in the deeper stages, 32 px input.
DIGITS_ARCH = [
    {"layer_type": "data", "img_resolution": 32, "distill": False},
    {"layer_type": "head", "num_in_channels": 3, "num_out_channels": 16, "act": "swish"},
    {"layer_type": "conv", "num_in_channels": 16, "num_out_channels": 16, "stride": 1, "kernel_size": 3,
     "act": "relu", "stage": 1},
    {"layer_type": "fused_irb", "num_in_channels": 16, "num_out_channels": 32, "stride": 2, "expansion": 4,
     "kernel_size": 3, "act": "swish", "use_se": False, "stage": 2},
    {"layer_type": "fused_irb", "num_in_channels": 32, "num_out_channels": 32, "stride": 1, "expansion": 4,
     "kernel_size": 3, "act": "swish", "use_se": False, "stage": 2},
    {"layer_type": "irb", "num_in_channels": 32, "num_out_channels": 64, "stride": 2, "expansion": 4,
     "kernel_size": 3, "act": "swish", "use_se": True, "stage": 3},
    {"layer_type": "irb", "num_in_channels": 64, "num_out_channels": 64, "stride": 1, "expansion": 4,
     "kernel_size": 5, "act": "relu", "use_se": True, "stage": 3},
    {"layer_type": "tail", "num_in_channels": 64, "num_out_channels": 256, "num_classes": 10},
]


def write_digits(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> tuple[int, int]:
    """sklearn's digits -> root/train/<digit>/*.png and root/val/<digit>/*.png (grayscale as RGB)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)  # 0..16 -> 0..255
    idx_train, idx_val = train_test_split(np.arange(len(images)), test_size=val_fraction, random_state=seed,
                                          stratify=digits.target)
    for split, idx in (("train", idx_train), ("val", idx_val)):
        for i in idx:
            d = os.path.join(root, split, str(int(digits.target[i])))
            os.makedirs(d, exist_ok=True)
            img = Image.fromarray(images[i], "L").resize((size, size), Image.BICUBIC).convert("RGB")
            img.save(os.path.join(d, f"{i:04d}.png"))
    return len(idx_train), len(idx_val)


def plot_curve(summary_csv: str, path: str) -> None:
    """Loss and top-1 per epoch from a run's summary.csv, drawn on a Figure (no pyplot, no global backend)."""
    from matplotlib.figure import Figure

    with open(summary_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [float(r["train_loss"]) for r in rows], label="train loss")
    ax1.plot(ep, [float(r["eval_loss"]) for r in rows], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax2.plot(ep, [float(r["eval_top1"]) for r in rows], label="val top-1")
    if "ema_top1" in rows[0]:
        ax2.plot(ep, [float(r["ema_top1"]) for r in rows], label="val top-1 (EMA)")
    ax2.axhline(95, color="gray", ls="--", lw=1, label="95 % target")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 100)
    ax2.legend(loc="lower right")
    fig.suptitle("GPUNet (family A, small) from scratch on sklearn digits, CPU")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="output/digits", help="work folder (dataset, architecture, run)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--plot", default="docs/img/digits_curve.png", help="training-curve PNG ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    from gpunet.train import train

    data = os.path.join(a.out, "data")
    if not os.path.isdir(os.path.join(data, "val")):
        n_train, n_val = write_digits(data, seed=a.seed)
        print(f"wrote sklearn digits as ImageFolder: {n_train} train / {n_val} val images (32 px) in {data}")
    arch_path = os.path.join(a.out, "digits_gpunet.json")
    with open(arch_path, "w") as f:
        json.dump(DIGITS_ARCH, f, indent=2)

    started = time.time()
    result = train(data, model=arch_path, img_size=32, epochs=a.epochs, batch_size=a.batch_size, workers=a.workers,
                   device="cpu", seed=a.seed, opt="adamw", lr=2e-3, weight_decay=0.05, sched="cosine",
                   warmup_epochs=2, warmup_lr=1e-4, min_lr=1e-5,
                   # digits are not mirror-symmetric: mild crops and RandAugment, no flips or colour jitter
                   hflip=0.0, color_jitter=0.0, scale=[0.7, 1.0], ratio=[0.9, 1.1], aa="rand-m5-mstd0.5",
                   reprob=0.1, smoothing=0.1, drop=0.1, drop_path=0.05, model_ema=True, model_ema_decay=0.998,
                   model_ema_warmup=True, log_interval=10_000, output=a.out, experiment="run")
    minutes = (time.time() - started) / 60
    last = result.last
    best = result.best_metric or 0.0
    print()
    print(f"trained {result.epochs_run} epochs in {minutes:.1f} min on CPU -> {result.output_dir}")
    print(f"final: val top-1 {last['eval_top1']:.2f} %  top-5 {last['eval_top5']:.2f} %  loss {last['eval_loss']:.4f}"
          f"  | EMA top-1 {last.get('ema_top1', float('nan')):.2f} %")
    print(f"best (EMA) val top-1 {best:.2f} % at epoch {result.best_epoch}")
    if a.plot:
        plot_curve(os.path.join(result.output_dir, "summary.csv"), a.plot)
        print(f"training curve: {a.plot}")
    ok = max(last["eval_top1"], last.get("ema_top1", 0.0)) >= 95.0
    print("PASS: >= 95 % validation top-1" if ok else "FAIL: below 95 % validation top-1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
