"""Training speed of `gpunet train` (images/s) on generated batches: the step itself, no data loading.

    python scripts/train_speed.py --models gpunet_0,gpunet_d1 --device cuda --amp fp16 --channels-last \\
        --batch-size 64 --steps 20 --output train.json
    torchrun --nproc-per-node 1 scripts/train_speed.py ...     # under DistributedDataParallel (NCCL on CUDA)

For each model it builds `gpunet.train.Trainer` from the same settings `gpunet train` takes (on a
tiny generated image folder, which the trainer needs to start), then runs `Trainer.train_one_epoch`
-- the training loop of `gpunet train`: AMP with GradScaler or bf16, channels_last, torch.compile,
EMA, the lr schedule, the per-step loss bookkeeping -- over batches of random images that already
sit on the device, so no decoding or augmentation limits the rate. One epoch of `--warmup` steps
(compilation, cuDNN autotuning, allocator growth) is run first and not counted; the images/s of
the following epoch of `--steps` steps is reported (the trainer's own `img_per_sec`, timed from
the first to the last step; each step ends with the loss copied to the host, so all GPU work is
inside the time).

Under torchrun (`torchrun --nproc-per-node N scripts/train_speed.py ...`) the trainer itself
creates the process group (NCCL on CUDA, gloo on CPU) and puts the model under
DistributedDataParallel, for one process too: the record says `ddp: true`. cuDNN autotuning is
on unless `--no-cudnn-benchmark` (the trainer's own `cudnn_benchmark` setting). Each record keeps
the warm-up epoch's and the timed epoch's mean loss: both finite and the second lower (the same
two batches are seen again and again) is the "finite, falling loss" check.
Results: one JSON record per model, appended to `--output` (written atomically, rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gpunet.device import cudnn_autotune

AMP = {"none": None, "fp16": "float16", "bf16": "bfloat16"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gpunet_0,gpunet_d1", help="comma-separated zoo names or architecture JSONs")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--batch-size", type=int, default=64, help="per process (default 64)")
    p.add_argument("--img-size", type=int, default=None, help="default: each model's resolution")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--amp", choices=tuple(AMP), default="fp16", help="mixed precision (default fp16 + GradScaler)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (gpunet train --compile)")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false")
    p.add_argument("--output", default=None, help="JSON file to append the records to")
    return p.parse_args(argv)


def make_folder(root: Path, images: int) -> Path:
    """An ImageFolder of `images` tiny PNGs in 2 classes: what the trainer needs to start (never read here)."""
    rng = np.random.default_rng(0)
    for i in range(images):
        d = root / "train" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


class DeviceBatches:
    """`steps` batches of random images and labels, made once on the device (two distinct, alternating)."""

    def __init__(self, batch: int, size: int, device: torch.device, num_classes: int, steps: int) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)
        self.batches = [(torch.randn(batch, 3, size, size, generator=g).to(device),
                         torch.randint(0, num_classes, (batch,), generator=g).to(device)) for _ in range(2)]
        self.steps = steps

    def __iter__(self) -> Any:
        return (self.batches[i % 2] for i in range(self.steps))


def build_trainer(model: str, args: argparse.Namespace, data: Path, out: Path) -> Any:
    """A `Trainer` with `gpunet train`'s settings for this measurement (no validation, no EMA, no augmentation)."""
    from gpunet.train import Trainer, config_for_run

    settings = {"data_dir": str(data), "model": model, "device": args.device, "batch_size": args.batch_size,
                "img_size": args.img_size, "num_classes": 1000, "amp": AMP[args.amp] is not None,
                "amp_dtype": AMP[args.amp] or "float16", "channels_last": args.channels_last,
                "compile": args.compile, "cudnn_benchmark": args.cudnn_benchmark, "workers": 0, "val_split": "",
                "epochs": 2, "warmup_epochs": 0,
                "log_interval": 10 ** 9, "output": str(out), "experiment": "speed", "aa": "none"}
    return Trainer(config_for_run(None, {k: v for k, v in settings.items() if v is not None}))


def measure(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """One model's record: images/s of `args.steps` training steps after `args.warmup` untimed ones."""
    with tempfile.TemporaryDirectory(prefix="gpunet-train-speed-") as tmp:
        data = make_folder(Path(tmp) / "data", args.batch_size * max(1, int(os.environ.get("WORLD_SIZE", "1"))))
        trainer = build_trainer(model, args, data, Path(tmp) / "out")
        world = trainer.info.world_size
        device = trainer.info.device
        batches = DeviceBatches(args.batch_size, trainer.img_size, device, trainer.num_classes,
                                max(args.warmup, args.steps))
        started = time.perf_counter()
        rates = []
        with cudnn_autotune(args.cudnn_benchmark):  # what Trainer.run does around its epochs
            for epoch, steps in enumerate((max(args.warmup, 1), args.steps)):
                batches.steps = trainer.steps_per_epoch = steps
                trainer.train_loader = batches
                rates.append(trainer.train_one_epoch(epoch))
        return {"model": model, "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "torch": torch.__version__, "batch_size": args.batch_size, "img_size": trainer.img_size,
                "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
                "ddp": trainer.info.distributed, "world_size": world,
                "cudnn_benchmark": args.cudnn_benchmark and device.type == "cuda",
                "warmup_steps": max(args.warmup, 1), "steps": args.steps,
                "images_per_s": rates[1]["img_per_sec"] * world, "images_per_s_per_process": rates[1]["img_per_sec"],
                "train_loss": rates[1]["train_loss"], "warmup_loss": rates[0]["train_loss"],
                "loss_finite_and_falling": bool(math.isfinite(rates[1]["train_loss"])
                                                and rates[1]["train_loss"] < rates[0]["train_loss"]),
                "wall_s": round(time.perf_counter() - started, 2)}


def append_records(path: str, records: list[dict[str, Any]]) -> None:
    """Add `records` to the JSON list in `path` (created if missing), atomically."""
    from gpunet._io import atomic_write_bytes

    old = json.loads(Path(path).read_text()) if os.path.exists(path) else []
    atomic_write_bytes(path, (json.dumps(old + records, indent=2) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    records = []
    try:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            rec = measure(model, args)
            records.append(rec)
            if rank == 0:
                print(f"{rec['model']}: {rec['images_per_s']:.1f} img/s (batch {rec['batch_size']}x"
                      f"{rec['world_size']}, {rec['img_size']} px, amp {rec['amp']}, channels_last "
                      f"{rec['channels_last']}, compile {rec['compile']}, ddp {rec['ddp']}; loss "
                      f"{rec['warmup_loss']:.3f} -> {rec['train_loss']:.3f})", flush=True)
                if args.output:
                    append_records(args.output, [rec])
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
