"""The machine a benchmark ran on: a description for the results header, and the matmul peak it is scored against."""

from __future__ import annotations

import importlib
import os
import platform
import statistics
from collections.abc import Callable
from typing import Any

import torch

from gpunet.timing import sample_times, time_call

PEAK_SIZE = 2048


def measure_peak(device: torch.device, dtype: torch.dtype, *, size: int = PEAK_SIZE,
                 repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of a size^3 matrix multiply on `device`/`dtype` (median over repeats).

    On CPU also the same GEMM as a oneDNN 1x1 convolution (the library the network's
    convolutions run on, not the BLAS behind matmul); `peak` is the faster of the two.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    x = a.t().contiguous().reshape(1, size, size // 32, 32).contiguous(memory_format=torch.channels_last)
    w = b.t().contiguous().reshape(size, size, 1, 1)
    candidates: dict[str, Callable[[], Any]] = {"matmul": lambda: torch.matmul(a, b)}
    if device.type == "cpu":
        candidates["onednn_gemm"] = lambda: torch.nn.functional.conv2d(x, w)
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    with torch.inference_mode():
        for fn in candidates.values():
            sample_times(fn, warmup=2, repeats=0, device=device)
        for _ in range(repeats):  # interleaved, so a noisy neighbour hits both alike
            for k, fn in candidates.items():
                samples[k].append(time_call(fn, device))
    flops = 2.0 * size ** 3
    out = {f"{k}_gflops": flops / statistics.median(v) / 1e9 for k, v in samples.items()}
    out["peak_gflops"] = max(out.values())
    return out


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    """CPU, platform, library versions and (on CUDA) the GPU, for the results header."""
    info: dict[str, Any] = {
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "threads": threads,
        "device": str(device), "onednn": torch.backends.mkldnn.is_available(),
    }
    for package in ("onnxruntime", "openvino"):
        try:
            info[package] = importlib.import_module(package).__version__
        except ImportError:
            info[package] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
