"""Shared test helpers: generated images and datasets, NVIDIA-layout checkpoints, a loopback mirror,
and running the real `gpunet` command in a subprocess."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gpunet
from gpunet.weights import save_nvidia_checkpoint, save_safetensors_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"

# The released models a per-model test runs by default (the smallest and the headline one, the two that
# ../shared's check.py covers); the other five run with `-m slow` (`make test-all`).
DEFAULT_MODELS = ("gpunet_0", "gpunet_d1")


def models_default_and_slow(default: Sequence[str] = DEFAULT_MODELS) -> list[object]:
    """Every released model as a pytest parameter, those outside `default` marked slow."""
    return [name if name in default else pytest.param(name, marks=pytest.mark.slow) for name in gpunet.list_models()]


def calibrate_bn(model: torch.nn.Module, size: int, seed: int = 0) -> torch.nn.Module:
    """Random affine BatchNorm parameters and running statistics measured on 8 random images, then eval mode.

    A freshly initialised GPUNet's activations fade layer by layer (its logits hardly depend on the
    input), so comparing two versions of it could pass whatever they compute; with statistics
    measured on data each layer's output keeps unit scale and the logits differ between images.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
        model.train()
        model(torch.randn(8, 3, size, size, generator=g))
    return model.eval()


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref|, in float64 on the CPU (the golden check's measure; any devices)."""
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((got - ref).abs().max() / ref.abs().max())


def within_fp32_rounding(got: torch.Tensor, plain: torch.Tensor, truth: torch.Tensor) -> bool:
    """`got` (a faster fp32 path) is as close to `truth` (the plain model in float64) as the plain fp32 model
    `plain` is, up to 2x and 1e-6: it differs from `plain` only by the order in which fp32 sums are rounded.

    Summation order alone moves a deep GPUNet's logits by ~1e-5 relative (D1 with a live signal: fused vs
    unfused fp32 2.6e-5, either vs float64 1.5-1.8e-5), so "equal to the plain model within 1e-5" cannot
    hold for any change of kernel; closeness to the exact result can.
    """
    return rel_err(got, truth) <= 2 * rel_err(plain, truth) + 1e-6


# A tiny non-distilled GPUNet in NVIDIA's JSON format (32 px, cheap on CPU).
TINY_ARCH = [
    {"layer_type": "data", "img_resolution": 32, "distill": False},
    {"layer_type": "head", "num_in_channels": 3, "num_out_channels": 8, "act": "relu"},
    {"layer_type": "fused_irb", "num_in_channels": 8, "num_out_channels": 8, "stride": 1, "expansion": 2,
     "kernel_size": 3, "act": "swish", "use_se": False, "stage": 1},
    {"layer_type": "irb", "num_in_channels": 8, "num_out_channels": 16, "stride": 2, "expansion": 3,
     "kernel_size": 3, "act": "relu", "use_se": True, "stage": 2},
    {"layer_type": "tail", "num_in_channels": 16, "num_out_channels": 32, "num_classes": 1000},
]


def write_tiny_arch(path: Path, num_classes: int = 1000) -> Path:
    arch = [dict(e) for e in TINY_ARCH]
    arch[-1]["num_classes"] = num_classes
    path.write_text(json.dumps(arch, indent=2))
    return path


def save_tiny_classifier(folder: Path, seed: int) -> Path:
    """TINY_ARCH with fixed random weights as FOLDER/tiny.safetensors; its classifier is scaled up so the
    class probabilities spread out and depend clearly on the input (what serving tests compare)."""
    torch.manual_seed(seed)
    model = gpunet.create_model(write_tiny_arch(folder / "tiny.json"))
    with torch.no_grad():
        model.classifier.weight.mul_(5000)
    save_safetensors_checkpoint(model, folder / "tiny.safetensors")
    return folder / "tiny.safetensors"


def run_cli(args: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The real command line: `python -m gpunet ARGS` in a fresh process."""
    full_env = dict(os.environ)
    full_env.pop("GPUNET_NGC_MIRROR", None)
    full_env.update({"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpunet", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


# ---------------------------------------------------------------------------- checkpoints

def biased_model(name_or_json: str | os.PathLike[str], order: Sequence[int], num_classes: int | None = None,
                 seed: int = 0) -> torch.nn.Module:
    """A model whose logits ignore the input: classifier weight 0, bias ranking `order` first (in that order)."""
    torch.manual_seed(seed)
    model = gpunet.create_model(name_or_json, num_classes=num_classes)
    with torch.no_grad():
        model.classifier.weight.zero_()
        bias = torch.linspace(-1.0, 0.0, model.num_classes)  # the others: distinct, below the chosen ones
        for rank, k in enumerate(order):
            bias[k] = 10.0 - rank
        model.classifier.bias.copy_(bias)
    return model


def expected_bias(model: torch.nn.Module) -> torch.Tensor:
    return model.classifier.bias.detach().clone()


def save_ngc_zip(model: torch.nn.Module, zip_path: Path, member: str) -> Path:
    """NVIDIA's layout (timm CheckpointSaver dict) inside an NGC-style zip."""
    pth = zip_path.with_suffix(".pth.tar")
    save_nvidia_checkpoint(model, pth, layout="timm")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(pth, arcname=member)
    pth.unlink()
    return zip_path


def save_zoo_mirror(model: torch.nn.Module, name: str, folder: Path) -> Path:
    """Put `model` into `folder` exactly as the NGC zip of zoo model `name` would be named."""
    cfg = gpunet.get_pretrained_config(name)
    folder.mkdir(parents=True, exist_ok=True)
    return save_ngc_zip(model, folder / cfg.filename, f"{cfg.nvidia_key}.pth.tar")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def loopback_server(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 (random port) for the duration of the block; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------- images

def rgb_array(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))[:h, :w]


def odd_mode_images(folder: Path, size: tuple[int, int] = (40, 30)) -> dict[str, Path]:
    """One file per awkward PIL mode, plus a truncated JPEG and a text file named .png."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    rgb = Image.fromarray(rgb_array(w, h, 1))
    files: dict[str, Path] = {}

    def save(key: str, im: Image.Image, name: str, **kw: object) -> None:
        files[key] = folder / name
        im.save(files[key], **kw)

    save("RGB", rgb, "rgb.jpg", quality=90)
    save("L", rgb.convert("L"), "gray.png")
    la = rgb.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize(size))
    save("LA", la, "gray_alpha.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(size))
    save("RGBA", rgba, "rgba.png")
    p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("P", p, "palette_transparent.png", transparency=0)
    save("CMYK", rgb.convert("CMYK"), "cmyk.jpg", quality=90)
    i16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    save("I;16", i16, "gray16.png")
    i32 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.int32) * 1000 - 5000)
    save("I", i32, "gray32.tif")
    good = io.BytesIO()
    rgb.save(good, "JPEG", quality=90)
    files["corrupt"] = folder / "truncated.jpg"
    files["corrupt"].write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    files["not_image"] = folder / "notes.png"
    files["not_image"].write_text("this is not an image\n")
    return files


def make_image_folder(root: Path, class_counts: dict[str, int], size: tuple[int, int] = (36, 28),
                      seed: int = 0) -> dict[str, list[Path]]:
    """root/<class>/<i>.png|.jpg with random patterns; returns the files per class."""
    out: dict[str, list[Path]] = {}
    n = seed
    for cls, count in class_counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        out[cls] = []
        for i in range(count):
            n += 1
            im = Image.fromarray(rgb_array(*size, n))
            path = root / cls / (f"img{i:02d}.png" if i % 2 else f"img{i:02d}.jpg")
            im.save(path)
            out[cls].append(path)
    return out
