"""What a benchmark run measures: `BenchmarkConfig`, the backend and precision names, validated once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpunet.errors import BenchmarkError

BACKENDS = ("eager", "fused", "padded", "fused-microbatch", "compile", "cudagraph", "padded-cudagraph",
            "compile-cudagraph", "auto", "triton-dw", "triton-dw-cudagraph", "onnxruntime", "onnxruntime-int8",
            "openvino", "openvino-int8", "tensorrt")
DEFAULT_BACKENDS = "eager,fused,compile,onnxruntime,openvino"
PER_BATCH_BACKENDS = ("tensorrt", "openvino", "openvino-int8")  # built for one input shape
COMPILED_BACKENDS = ("compile", "compile-cudagraph", "auto")  # may call torch.compile
PRECISIONS = ("fp32", "bf16", "fp16")  # names; `gpunet.device.PRECISIONS` maps them to dtypes


def split_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """'a, b,,c' or ['a', 'b'] -> ('a', 'b', 'c'): the comma-separated lists of the command line, or a sequence."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(t.strip() for t in items if t.strip())


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark run: which models on which backends, batch sizes and precisions, and how to time them.

    `models` are zoo names (or "all"); `peers` are timm models as "timm:NAME" (random weights).
    Comma-separated strings are accepted wherever a list is, as on the command line.
    `threads` sets torch's (and the runtimes') CPU threads for the run only; `settle_ms` is the
    CPU pause before each timed call (see `gpunet.bench.benchmark`). `calibration_dir` holds
    images for the int8 backends (default: synthetic ones, fine for speed only). `cudnn_benchmark`
    turns cuDNN's autotuning on for a CUDA run (restored afterwards).
    """

    models: tuple[str, ...] = ("gpunet_d1",)
    peers: tuple[str, ...] = ()
    backends: tuple[str, ...] = tuple(DEFAULT_BACKENDS.split(","))
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    precisions: tuple[str, ...] = ("fp32",)
    img_size: int | None = None
    device: str = "auto"
    threads: int | None = None
    warmup: int = 5
    repeats: int = 20
    settle_ms: float = 50.0
    calibration_dir: str | None = None
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        for name in ("models", "peers", "backends", "precisions"):
            object.__setattr__(self, name, split_list(getattr(self, name)))
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        for b in self.backends:
            if b not in BACKENDS:
                raise BenchmarkError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise BenchmarkError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        if self.repeats < 1 or self.warmup < 0:
            raise BenchmarkError("--repeats must be >= 1 and --warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise BenchmarkError("--threads must be >= 1")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise BenchmarkError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.img_size is not None and self.img_size < 1:
            raise BenchmarkError(f"--img-size must be >= 1, got {self.img_size}")
        if self.settle_ms < 0:
            raise BenchmarkError(f"--settle-ms must be >= 0, got {self.settle_ms:g}")
