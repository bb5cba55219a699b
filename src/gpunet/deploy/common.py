"""What every exporter shares: the report, the model copy that is exported, batch and size checks, the parity check.

Every exported file takes one input `images` (N, 3, R, R) float32, normalised like
`gpunet.eval_transform(model)` produces, and gives one output `logits` (N, num_classes)
float32. Models are copied before fusing (the caller's model is never modified), and every
format is checked against PyTorch float32 on the same seeded random input before it replaces
the output file (`check_parity`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gpunet._io import destination_problem
from gpunet.deploy.optimize import fuse as fuse_model
from gpunet.errors import ExportError
from gpunet.transforms import preprocess_config

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
FP32_RTOL = 1e-4  # max |exported - torch| allowed, relative to max |logit|
FP16_RTOL = 5e-2
CHECK_BATCHES_DYNAMIC = (1, 3)
MIN_IMG_SIZE = 32  # GPUNets downsample by 32


@dataclass
class ExportReport:
    """What an export wrote and how closely it matches PyTorch."""

    path: str
    format: str = "onnx"
    max_abs_diff: float | None = None  # vs the PyTorch float32 model on the same random input; None: unchecked
    tolerance: float | None = None
    batch_sizes: tuple[int, ...] = ()  # batch sizes the check ran
    opset: int | None = None
    size_bytes: int = 0
    img_size: int = 0
    batch: int | str = "dynamic"
    fp16: bool = False
    fused: bool = True
    exporter: str = ""
    extra_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


def check_export_path(path: str | os.PathLike[str], *, folder: bool = False,
                      error: type[ExportError] = ExportError) -> None:
    """`error` naming `path` when it cannot be written: exporters check it before tracing or converting anything."""
    if problem := destination_problem(path, folder=folder):
        raise error(f"{os.fspath(path)}: {problem}")


def export_img_size(model: nn.Module, img_size: int | None) -> int:
    """`img_size`, checked (32 px or more), or the resolution of the model's preprocessing."""
    if img_size is not None:
        if int(img_size) < MIN_IMG_SIZE:
            raise ExportError(f"img_size {img_size} is too small: GPUNets downsample by 32 (use 32 px or more)")
        return int(img_size)
    return int(preprocess_config(model)["input_size"][-1])


def parse_batch(batch: int | str) -> int | None:
    """'dynamic' -> None; N (an int or its text) -> N; anything else is an ExportError."""
    if isinstance(batch, str):
        if batch.strip().lower() == "dynamic":
            return None
        try:
            batch = int(batch)
        except ValueError:
            raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def check_batches(fixed_batch: int | None) -> tuple[int, ...]:
    """The batch sizes a parity check runs: 1 and 3 for a dynamic batch axis, else the fixed one."""
    return CHECK_BATCHES_DYNAMIC if fixed_batch is None else (fixed_batch,)


def default_rtol(fp16: bool, rtol: float | None = None) -> float:
    return rtol if rtol is not None else FP16_RTOL if fp16 else FP32_RTOL


def deploy_copy(model: nn.Module, fuse: bool) -> nn.Module:
    """A float32 CPU eval-mode copy (fused if asked); the caller's model is untouched."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"expected a torch.nn.Module (a GPUNet), got {type(model).__name__}")
    net = copy.deepcopy(model).float().cpu().eval()
    return fuse_model(net) if fuse else net


class HalfPrecision(nn.Module):
    """float32 in -> float16 compute -> float32 out, so clients keep feeding float32. Converts `model` in place."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress prints and deprecation chatter (errors still raise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*training mode.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def check_parity(run: Callable[[np.ndarray], np.ndarray], path: str, engine: str, reference: nn.Module,
                 img_size: int, batches: Sequence[int], rtol: float) -> tuple[float, float]:
    """(max |`run` - PyTorch|, tolerance) over `batches` (the same seeded random inputs); ExportError over it.

    The tolerance is `rtol` x max |logit| of the reference (the smallest over the batches).
    """
    gen = torch.Generator().manual_seed(0)
    worst, tol = 0.0, float("inf")
    for b in batches:
        x = torch.randn(b, 3, img_size, img_size, generator=gen)
        with torch.no_grad():
            expected = reference(x).float().numpy()
        got = np.asarray(run(x.numpy()))
        if got.shape != expected.shape:
            raise ExportError(f"{path}: {engine} gave shape {got.shape} for batch {b}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
        tol = min(tol, rtol * max(float(np.abs(expected).max()), 1e-6))
    if not np.isfinite(worst) or worst > tol:
        raise ExportError(f"{path}: {engine} disagrees with PyTorch: max |diff| {worst:.3g} > tolerance {tol:.3g} "
                          f"({rtol:g} x max |logit|) on batch sizes {list(batches)}; nothing was written")
    return worst, tol
