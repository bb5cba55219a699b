"""Device selection, mixed precision and device synchronisation: the one implementation every layer uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from gpunet.errors import SettingError

DEVICE_HELP = "auto (cuda if available), cpu, cuda or cuda:N"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> compute dtype


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) -> cuda when available, else cpu; an unavailable or unknown device is a SettingError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingError(f"device {str(device)!r}: expected {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda"):
        raise SettingError(f"device {str(device)!r}: expected {DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device 'cuda' requested but PyTorch sees no CUDA GPU (torch.cuda.is_available() is "
                               f"False; torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def amp_dtype(device: torch.device, prefer: torch.dtype = torch.float16) -> torch.dtype:
    """The autocast dtype for `device`: `prefer` (fp16 or bf16) on CUDA, bf16 on CPU (no fast fp16 CPU kernels)."""
    return prefer if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, amp: bool | torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on `device`: `amp=True` picks `amp_dtype(device)`, a dtype is used as given; False: no-op."""
    if amp is False or amp is None:
        return contextlib.nullcontext()
    dtype = amp if isinstance(amp, torch.dtype) else amp_dtype(device)
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` intra-op CPU threads (None: leave as is); the previous count is restored."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise SettingError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """`torch.backends.cudnn.benchmark = enabled` for the block only (the previous value is restored).

    cuDNN then times its convolution algorithms for each new input shape and keeps the fastest:
    slower first calls, faster steady state. Process-wide state, hence a scoped switch.
    """
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
